package model

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/flywheel-dev/flywheel"
)

// The artifact format, little-endian:
//
//	magic "FWM1" | u16 format | u8 kind | u8 bits | u8 policy | f64 epsilon, lambda, gamma
//	format 2 only: f64 gamma_scale, gamma_exponent
//	u64 trained | u16 pairs, each: u16 len, bytes, u16 len, bytes
//	u32 nonzero weights, each: u32 index, f32 value
//	sha256 of everything before it (32 bytes)
//
// Format 2 adds SquareCB's γ schedule. MarshalBinary writes format 1 for a
// model that does not use it, so the artifacts of such models are byte for
// byte what they were; Decode reads both.
const (
	magic        = "FWM1"
	formatV1     = 1
	formatV2     = 2
	checksumSize = sha256.Size
	// MaxBits is the largest bits an artifact may have: 2^28 weights, 1 GiB.
	MaxBits = 28
)

// ErrCorrupt is wrapped by every decoding failure.
var ErrCorrupt = errors.New("model artifact is corrupt")

// ErrShape is wrapped by DecodeAs's error for a well-formed artifact whose
// shape (kind, bits, interactions) is not the one expected.
var ErrShape = errors.New("model artifact has another shape")

var kinds = []string{flywheel.KindRanker, flywheel.KindClassifier}
var policies = []string{EpsilonGreedy, Softmax, SquareCB}

// MarshalBinary encodes the model, sparse, with a trailing sha256 checksum.
func (m *Model) MarshalBinary() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(magic)
	le := binary.LittleEndian
	put := func(v any) { _ = binary.Write(&b, le, v) }
	e := m.cfg.Exploration
	format := uint16(formatV1)
	if e.GammaScale != 0 || e.GammaExponent != 0 {
		format = formatV2
	}
	put(format)
	put(uint8(index(kinds, m.cfg.Kind)))
	put(uint8(m.cfg.Bits))
	put(uint8(index(policies, e.Policy)))
	put(e.Epsilon)
	put(e.Lambda)
	put(e.Gamma)
	if format == formatV2 {
		put(e.GammaScale)
		put(e.GammaExponent)
	}
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

// Decode returns the model encoded in b, of any shape the format allows. It
// refuses, with an error wrapping ErrCorrupt, anything truncated, altered
// (checksum mismatch), of an unknown format, inconsistent (a weight table
// whose length is not what the header says, more weights than 2^bits, bits
// outside [1, MaxBits]) or holding NaN or infinite numbers. The whole header
// is checked against the artifact's length before the weights are allocated.
// It never panics. Where the expected shape is known (serving), use DecodeAs:
// a header is what decides the allocation (4 << bits bytes), and a well-formed
// 79-byte artifact may ask for 1 GiB.
func Decode(b []byte) (*Model, error) { return decode(b, nil) }

// DecodeAs is Decode for an artifact that must have want's shape: the same
// kind, bits and interactions (in any order). The header is compared with want
// before the weights are allocated, so an artifact of another shape costs no
// more than its own length; the error then wraps ErrShape and names the
// difference. Exploration is not part of the shape: the artifact's is used.
func DecodeAs(b []byte, want Config) (*Model, error) {
	return decode(b, func(got Config) error { return sameShape(got, want) })
}

// decode parses b; check, if not nil, vets the header's shape before
// anything the size of the model is allocated.
func decode(b []byte, check func(Config) error) (*Model, error) {
	h, err := parseHeader(b)
	if err != nil {
		return nil, err
	}
	if check != nil {
		if err := check(h.cfg); err != nil {
			return nil, err
		}
	}
	m, err := New(h.cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	m.trained = h.trained
	r := &reader{b: h.weights}
	for r.err == nil && len(r.b) > 0 {
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

// header is an artifact's header, checked: everything but the weights,
// which it only delimits.
type header struct {
	cfg     Config
	trained uint64
	weights []byte // nonzero × (u32 index, f32 value)
}

// parseHeader checks b's checksum and header and that the weight table is
// there in full, allocating nothing the header's numbers could make large.
func parseHeader(b []byte) (header, error) {
	if len(b) < len(magic)+checksumSize {
		return header{}, fmt.Errorf("%w: %d bytes is too short", ErrCorrupt, len(b))
	}
	body, sum := b[:len(b)-checksumSize], b[len(b)-checksumSize:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return header{}, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	if string(body[:len(magic)]) != magic {
		return header{}, fmt.Errorf("%w: not a Flywheel model (bad magic)", ErrCorrupt)
	}
	r := &reader{b: body[len(magic):]}
	format := r.u16()
	if r.err == nil && format != formatV1 && format != formatV2 {
		return header{}, fmt.Errorf("%w: format %d is not supported", ErrCorrupt, format)
	}
	kind, bits, policy := int(r.u8()), int(r.u8()), int(r.u8())
	if r.err == nil && (kind >= len(kinds) || policy >= len(policies)) {
		return header{}, fmt.Errorf("%w: unknown kind or policy", ErrCorrupt)
	}
	if r.err == nil && (bits < 1 || bits > MaxBits) {
		return header{}, fmt.Errorf("%w: bits %d out of range [1, %d]", ErrCorrupt, bits, MaxBits)
	}
	var h header
	if r.err == nil {
		h.cfg = Config{Kind: kinds[kind], Bits: bits, Exploration: Exploration{Policy: policies[policy]}}
	}
	e := &h.cfg.Exploration
	e.Epsilon, e.Lambda, e.Gamma = r.f64(), r.f64(), r.f64()
	if format == formatV2 {
		e.GammaScale, e.GammaExponent = r.f64(), r.f64()
	}
	h.trained = r.u64()
	n := int(r.u16())
	if r.err == nil && n*4 > len(r.b) { // each pair takes at least its two lengths
		return header{}, fmt.Errorf("%w: %d interactions do not fit in %d bytes", ErrCorrupt, n, len(r.b))
	}
	for i := 0; i < n && r.err == nil; i++ {
		h.cfg.Interactions = append(h.cfg.Interactions, [2]string{r.str(), r.str()})
	}
	nz := r.u32()
	if r.err != nil {
		return header{}, r.err
	}
	if uint64(nz)*8 != uint64(len(r.b)) {
		return header{}, fmt.Errorf("%w: weight table has %d bytes for %d weights", ErrCorrupt, len(r.b), nz)
	}
	if uint64(nz) > 1<<bits {
		return header{}, fmt.Errorf("%w: %d weights for a model of 2^%d", ErrCorrupt, nz, bits)
	}
	if err := h.cfg.Validate(); err != nil {
		return header{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	h.weights = r.b
	return h, nil
}

// sameShape returns an error wrapping ErrShape naming the first difference
// between got's and want's kind, bits and interactions (a multiset of ordered
// pairs: their order does not change a score, a pair's direction does).
func sameShape(got, want Config) error {
	if want.Bits == 0 {
		want.Bits = 18 // New's default
	}
	switch {
	case got.Kind != want.Kind:
		return fmt.Errorf("%w: a %s, expected a %s", ErrShape, got.Kind, want.Kind)
	case got.Bits != want.Bits:
		return fmt.Errorf("%w: bits %d, expected %d", ErrShape, got.Bits, want.Bits)
	}
	g, w := sortedPairs(got.Interactions), sortedPairs(want.Interactions)
	if !slices.Equal(g, w) {
		return fmt.Errorf("%w: interactions %v, expected %v", ErrShape, got.Interactions, want.Interactions)
	}
	return nil
}

func sortedPairs(ps [][2]string) [][2]string {
	out := slices.Clone(ps)
	slices.SortFunc(out, func(a, b [2]string) int {
		if c := strings.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return strings.Compare(a[1], b[1])
	})
	return out
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
