package model

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/flywheel-dev/flywheel"
)

// The artifact format, version 1, little-endian:
//
//	magic "FWM1" | u16 format | u8 kind | u8 bits | u8 policy | f64 epsilon, lambda, gamma
//	u64 trained | u16 pairs, each: u16 len, bytes, u16 len, bytes
//	u32 nonzero weights, each: u32 index, f32 value
//	sha256 of everything before it (32 bytes)
const (
	magic        = "FWM1"
	formatV1     = 1
	checksumSize = sha256.Size
)

// ErrCorrupt is wrapped by every decoding failure.
var ErrCorrupt = errors.New("model artifact is corrupt")

var kinds = []string{flywheel.KindRanker, flywheel.KindClassifier}
var policies = []string{EpsilonGreedy, Softmax, SquareCB}

// MarshalBinary encodes the model, sparse, with a trailing sha256 checksum.
func (m *Model) MarshalBinary() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(magic)
	le := binary.LittleEndian
	put := func(v any) { _ = binary.Write(&b, le, v) }
	put(uint16(formatV1))
	put(uint8(index(kinds, m.cfg.Kind)))
	put(uint8(m.cfg.Bits))
	put(uint8(index(policies, m.cfg.Exploration.Policy)))
	put(m.cfg.Exploration.Epsilon)
	put(m.cfg.Exploration.Lambda)
	put(m.cfg.Exploration.Gamma)
	put(m.trained)
	put(uint16(len(m.cfg.Interactions)))
	for _, p := range m.cfg.Interactions {
		for _, s := range p {
			put(uint16(len(s)))
			b.WriteString(s)
		}
	}
	var nz uint32
	for _, w := range m.weights {
		if w != 0 {
			nz++
		}
	}
	put(nz)
	for i, w := range m.weights {
		if w != 0 {
			put(uint32(i))
			put(w)
		}
	}
	sum := sha256.Sum256(b.Bytes())
	b.Write(sum[:])
	return b.Bytes(), nil
}

// Decode returns the model encoded in b. It refuses, with an error wrapping
// ErrCorrupt, anything truncated, altered (checksum mismatch), of an unknown
// format, or holding NaN or infinite numbers. It never panics.
func Decode(b []byte) (*Model, error) {
	if len(b) < len(magic)+checksumSize {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrCorrupt, len(b))
	}
	body, sum := b[:len(b)-checksumSize], b[len(b)-checksumSize:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	if string(body[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: not a Flywheel model (bad magic)", ErrCorrupt)
	}
	r := &reader{b: body[len(magic):]}
	if f := r.u16(); f != formatV1 {
		return nil, fmt.Errorf("%w: format %d is not supported", ErrCorrupt, f)
	}
	kind, bits, policy := int(r.u8()), int(r.u8()), int(r.u8())
	if kind >= len(kinds) || policy >= len(policies) {
		return nil, fmt.Errorf("%w: unknown kind or policy", ErrCorrupt)
	}
	cfg := Config{Kind: kinds[kind], Bits: bits, Exploration: Exploration{Policy: policies[policy]}}
	cfg.Exploration.Epsilon, cfg.Exploration.Lambda, cfg.Exploration.Gamma = r.f64(), r.f64(), r.f64()
	trained := r.u64()
	n := int(r.u16())
	for i := 0; i < n && r.err == nil; i++ {
		cfg.Interactions = append(cfg.Interactions, [2]string{r.str(), r.str()})
	}
	if r.err != nil {
		return nil, r.err
	}
	if bits < 1 || bits > 28 {
		return nil, fmt.Errorf("%w: bits %d out of range", ErrCorrupt, bits)
	}
	m, err := New(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	m.trained = trained
	nz := r.u32()
	if r.err == nil && uint64(nz)*8 != uint64(len(r.b)) {
		return nil, fmt.Errorf("%w: weight table has %d bytes for %d weights", ErrCorrupt, len(r.b), nz)
	}
	for i := uint32(0); i < nz && r.err == nil; i++ {
		idx, w := r.u32(), math.Float32frombits(r.u32())
		if uint64(idx) >= uint64(len(m.weights)) {
			return nil, fmt.Errorf("%w: weight index %d out of range", ErrCorrupt, idx)
		}
		if math.IsNaN(float64(w)) || math.IsInf(float64(w), 0) {
			return nil, fmt.Errorf("%w: weight %d is not finite", ErrCorrupt, idx)
		}
		m.weights[idx] = w
	}
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.err = fmt.Errorf("%w: truncated", ErrCorrupt)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8 {
	if v := r.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if v := r.take(2); v != nil {
		return binary.LittleEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if v := r.take(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if v := r.take(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

func (r *reader) f64() float64 {
	v := math.Float64frombits(r.u64())
	if r.err == nil && (math.IsNaN(v) || math.IsInf(v, 0)) {
		r.err = fmt.Errorf("%w: a parameter is not finite", ErrCorrupt)
	}
	return v
}

func (r *reader) str() string { return string(r.take(int(r.u16()))) }

func index(xs []string, x string) int {
	for i, v := range xs {
		if v == x {
			return i
		}
	}
	return 0
}
