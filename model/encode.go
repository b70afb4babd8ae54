package model

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
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
//	format 3 only, the optimizer state: f64 norm_sum, f64 steps
//	  u32 entries, each: u32 index, f32 g2, f32 scale (a ranker's AdaGrad)
//	  u32 entries, each: u32 index, f64 z, f64 n (a classifier's FTRL-Proximal)
//	format 4 only, the name dictionary (TrainConfig.Names): u32 limit
//	  u32 entries by hash, each: u64 hash, u64 uses, f64 sum of |value|,
//	  u16 len, bytes (the readable name)
//	sha256 of everything before it (32 bytes)
//
// Format 5 is the layout of format 2, 3 or 4 with the quantile bins of
// numeric features (bins.go) after the interactions:
//
//	u8 sections (1: the optimizer state follows the weights; 2: and the name
//	dictionary follows it; 4: the bins are linear, BinsLinear, rather than
//	one-hot) | u16 bins | u32 binned features by hash, each:
//	u64 hash, u16 cuts, f64 each (ascending)
//
// Format 2 adds SquareCB's γ schedule. MarshalBinary writes format 1 for a
// model that does not use it, so the artifacts of such models are byte for
// byte what they were. Format 3 (always with the γ fields) adds the
// optimizer state, so that training can go on exactly where it stopped
// (Resume); Trainer.MarshalBinary writes it. Format 4 is format 3 with the
// trainer's dictionary of readable feature names after the optimizer state
// (Explain); Trainer.MarshalBinary writes it when the trainer keeps names.
// Format 5 is written for a model that bins its numeric features, and only
// then. Decode reads all five and ignores the optimizer state and the
// names, which serving does not need.
const (
	magic        = "FWM1"
	formatV1     = 1
	formatV2     = 2
	formatV3     = 3
	formatV4     = 4
	formatV5     = 5
	checksumSize = sha256.Size
	// MaxBits is the largest bits an artifact may have: 2^28 weights, 1 GiB.
	MaxBits = 28
)

// ErrCorrupt is wrapped by every decoding failure.
var ErrCorrupt = errors.New("model artifact is corrupt")

// ErrShape is wrapped by DecodeAs's error for a well-formed artifact whose
// shape (kind, bits, interactions) is not the one expected.
var ErrShape = errors.New("model artifact has another shape")

// ErrNoState is wrapped by Resume's error for an artifact written without
// its optimizer state (formats 1 and 2, or Model.MarshalBinary).
var ErrNoState = errors.New("model artifact carries no optimizer state")

var kinds = []string{flywheel.KindRanker, flywheel.KindClassifier}
var policies = []string{EpsilonGreedy, Softmax, SquareCB}

// MarshalBinary encodes the model, sparse, with a trailing sha256 checksum,
// without optimizer state (format 1 or 2): what serving needs.
func (m *Model) MarshalBinary() ([]byte, error) {
	if m.cfg.Bins > 0 {
		return m.encode(formatV5, nil), nil
	}
	format := uint16(formatV1)
	if e := m.cfg.Exploration; e.GammaScale != 0 || e.GammaExponent != 0 {
		format = formatV2
	}
	return m.encode(format, nil), nil
}

// MarshalBinary encodes the model learned so far with the trainer's
// optimizer state (format 3), so that Resume can go on learning exactly as
// this trainer would have. Decode reads it as a model.
// With TrainConfig.Names set it writes format 4, which adds the names.
func (t *Trainer) MarshalBinary() ([]byte, error) {
	t.fit()
	if t.m.cfg.Bins > 0 {
		return t.m.encode(formatV5, t), nil
	}
	if t.names != nil {
		return t.m.encode(formatV4, t), nil
	}
	return t.m.encode(formatV3, t), nil
}

func (m *Model) encode(format uint16, t *Trainer) []byte {
	var b bytes.Buffer
	b.WriteString(magic)
	le := binary.LittleEndian
	put := func(v any) { _ = binary.Write(&b, le, v) }
	e := m.cfg.Exploration
	put(format)
	put(uint8(index(kinds, m.cfg.Kind)))
	put(uint8(m.cfg.Bits))
	put(uint8(index(policies, e.Policy)))
	put(e.Epsilon)
	put(e.Lambda)
	put(e.Gamma)
	if format >= formatV2 {
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
	if format == formatV5 {
		var sections uint8
		if t != nil {
			sections = 1
			if t.names != nil {
				sections = 3
			}
		}
		if m.cfg.BinShape == BinsLinear {
			sections |= 4
		}
		put(sections)
		put(uint16(m.cfg.Bins))
		hashes := slices.Sorted(maps.Keys(m.cuts))
		put(uint32(len(hashes)))
		for _, h := range hashes {
			put(h)
			put(uint16(len(m.cuts[h])))
			put(m.cuts[h])
		}
	}
	// With the optimizer state, a negative zero is kept, so that a resumed
	// trainer holds the very bits the trainer that wrote it held.
	keep := func(w float32) bool { return w != 0 }
	if t != nil {
		keep = func(w float32) bool { return math.Float32bits(w) != 0 }
	}
	var nz uint32
	for _, w := range m.weights {
		if keep(w) {
			nz++
		}
	}
	put(nz)
	for i, w := range m.weights {
		if keep(w) {
			put(uint32(i))
			put(w)
		}
	}
	if t != nil {
		put(t.normSum)
		put(t.steps)
		var n uint32
		for i := range t.g2 {
			if t.g2[i] != 0 || t.sc[i] != 0 {
				n++
			}
		}
		put(n)
		for i := range t.g2 {
			if t.g2[i] != 0 || t.sc[i] != 0 {
				put(uint32(i))
				put(t.g2[i])
				put(t.sc[i])
			}
		}
		n = 0
		for i := range t.z {
			if t.z[i] != 0 || t.n[i] != 0 {
				n++
			}
		}
		put(n)
		for i := range t.z {
			if t.z[i] != 0 || t.n[i] != 0 {
				put(uint32(i))
				put(t.z[i])
				put(t.n[i])
			}
		}
	}
	if t != nil && t.names != nil {
		put(uint32(t.names.limit))
		put(uint32(len(t.names.entries)))
		for _, e := range t.names.sortedEntries() {
			put(e.h)
			put(e.uses)
			put(e.sumAbs)
			put(uint16(len(e.name)))
			b.WriteString(e.name)
		}
	}
	sum := sha256.Sum256(b.Bytes())
	b.Write(sum[:])
	return b.Bytes()
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
	m, _, err := decodeModel(b, check)
	return m, err
}

// decodeModel is decode, also returning the header (and so the optimizer
// state's bytes, not parsed).
func decodeModel(b []byte, check func(Config) error) (*Model, header, error) {
	h, err := parseHeader(b)
	if err != nil {
		return nil, h, err
	}
	if check != nil {
		if err := check(h.cfg); err != nil {
			return nil, h, err
		}
	}
	m, err := decodeWeights(h)
	return m, h, err
}

// Resume returns a trainer that goes on from the model and the optimizer
// state in b, an artifact Trainer.MarshalBinary wrote: it learns as the
// trainer that wrote b would have gone on learning, bit for bit. b must have
// want's shape (kind, bits, interactions, as DecodeAs): otherwise the error
// wraps ErrShape. An artifact written without optimizer state gives an error
// wrapping ErrNoState; a damaged one, ErrCorrupt. The model takes want's
// exploration, which is not part of the shape (an EINVALID error if it is
// invalid); cfg tunes the learning from here on, as in NewTrainer.
func Resume(b []byte, want Config, cfg TrainConfig) (*Trainer, error) {
	m, h, err := decodeModel(b, func(got Config) error { return sameShape(got, want) })
	if err != nil {
		return nil, err
	}
	if !h.hasState {
		return nil, fmt.Errorf("%w (format %d)", ErrNoState, h.format)
	}
	if h.cfg.Bins != want.Bins {
		return nil, fmt.Errorf("%w: numeric_bins %d, expected %d", ErrShape, h.cfg.Bins, want.Bins)
	}
	if g, w := binShape(h.cfg), binShape(want); g != w {
		return nil, fmt.Errorf("%w: numeric_bin_shape %s, expected %s", ErrShape, g, w)
	}
	if m.cfg.Kind == flywheel.KindRanker {
		m.cfg.Exploration = want.Exploration
		if err := m.cfg.Validate(); err != nil {
			return nil, err
		}
	}
	t := &Trainer{cfg: cfg.withDefaults(), m: m, g2: make([]float32, len(m.weights)), sc: make([]float32, len(m.weights))}
	r := &reader{b: h.state}
	t.normSum, t.steps = r.f64(), r.f64()
	bad := func(x float64) bool { return !(x >= 0) || math.IsInf(x, 0) }
	if r.err == nil && (bad(t.normSum) || bad(t.steps)) {
		return nil, fmt.Errorf("%w: optimizer norm or step count is negative", ErrCorrupt)
	}
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		i, g2, sc := r.u32(), math.Float32frombits(r.u32()), math.Float32frombits(r.u32())
		if r.err == nil && (uint64(i) >= uint64(len(t.g2)) || bad(float64(g2)) || bad(float64(sc))) {
			return nil, fmt.Errorf("%w: optimizer state of weight %d is out of range", ErrCorrupt, i)
		}
		t.g2[i], t.sc[i] = g2, sc
	}
	if n := r.u32(); n > 0 && r.err == nil {
		t.z, t.n = make([]float64, len(m.weights)), make([]float64, len(m.weights))
		for ; n > 0 && r.err == nil; n-- {
			i, z, nn := r.u32(), r.f64(), r.f64()
			if r.err == nil && (uint64(i) >= uint64(len(t.z)) || bad(nn)) {
				return nil, fmt.Errorf("%w: optimizer state of weight %d is out of range", ErrCorrupt, i)
			}
			t.z[i], t.n[i] = z, nn
		}
	}
	if h.hasNames {
		_, entries, err := readNames(r)
		if err != nil {
			return nil, err
		}
		if t.names = newNames(cfg.Names); t.names != nil {
			for _, e := range entries {
				t.names.idx[e.h] = int32(len(t.names.entries))
				t.names.entries = append(t.names.entries, e)
			}
		}
	} else {
		t.names = newNames(cfg.Names)
	}
	if r.err != nil {
		return nil, r.err
	}
	return t, nil
}

// readNames reads a name dictionary (format 4) from r: its limit and its
// entries, checked (lengths within r, the limit at most maxNames, no more
// entries than the limit, sorted distinct hashes, finite sums).
func readNames(r *reader) (int, []nameEntry, error) {
	limit, n := r.u32(), r.u32()
	if r.err != nil {
		return 0, nil, r.err
	}
	if limit > maxNames || n > limit || uint64(n)*26 > uint64(len(r.b)) {
		return 0, nil, fmt.Errorf("%w: a name dictionary of %d entries (limit %d) in %d bytes", ErrCorrupt, n, limit, len(r.b))
	}
	entries := make([]nameEntry, 0, n)
	for i := uint32(0); i < n && r.err == nil; i++ {
		e := nameEntry{h: r.u64(), uses: r.u64(), sumAbs: r.f64()}
		e.name = r.str()
		if r.err == nil && (!(e.sumAbs >= 0) || (i > 0 && e.h <= entries[i-1].h)) {
			return 0, nil, fmt.Errorf("%w: name dictionary entry %d is out of order or negative", ErrCorrupt, i)
		}
		entries = append(entries, e)
	}
	if r.err != nil {
		return 0, nil, r.err
	}
	return int(limit), entries, nil
}

// HasOptimizerState reports whether b is a well-formed artifact that carries
// optimizer state (format 3 or 4), as Resume needs.
func HasOptimizerState(b []byte) bool {
	h, err := parseHeader(b)
	return err == nil && h.hasState
}

// NameLimit returns the bound of the name dictionary b carries (the
// TrainConfig.Names it was trained with), or 0 for an artifact without one
// or one that is not well formed: what retraining it again must use to
// rebuild it byte for byte.
func NameLimit(b []byte) int {
	h, err := parseHeader(b)
	if err != nil || !h.hasNames {
		return 0
	}
	r := &reader{b: h.state}
	r.take(16)
	for _, size := range []int{12, 20} {
		r.take(int(r.u32()) * size)
	}
	return int(r.u32())
}

// decodeWeights allocates the model h describes and reads its weights.
func decodeWeights(h header) (*Model, error) {
	m, err := New(h.cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	m.trained, m.cuts = h.trained, h.cuts
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
	format  uint16
	trained uint64
	weights []byte // nonzero × (u32 index, f32 value)
	state   []byte // format 3: the optimizer state, its lengths checked
	// hasState and hasNames say whether the optimizer state and the name
	// dictionary follow the weights (formats 3 and 4, or 5's sections).
	hasState, hasNames bool
	cuts               map[uint64][]float64 // format 5: the fitted bins (not nil)
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
	if r.err == nil && (format < formatV1 || format > formatV5) {
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
	if format >= formatV2 {
		e.GammaScale, e.GammaExponent = r.f64(), r.f64()
	}
	h.format = format
	h.trained = r.u64()
	n := int(r.u16())
	if r.err == nil && n*4 > len(r.b) { // each pair takes at least its two lengths
		return header{}, fmt.Errorf("%w: %d interactions do not fit in %d bytes", ErrCorrupt, n, len(r.b))
	}
	for i := 0; i < n && r.err == nil; i++ {
		h.cfg.Interactions = append(h.cfg.Interactions, [2]string{r.str(), r.str()})
	}
	h.hasState, h.hasNames = format == formatV3 || format == formatV4, format == formatV4
	if format == formatV5 {
		if err := h.parseBins(r); err != nil {
			return header{}, err
		}
	}
	nz := r.u32()
	if r.err != nil {
		return header{}, r.err
	}
	rest := uint64(len(r.b)) // with state: the weights, then the optimizer state
	if h.hasState {
		if uint64(nz)*8 > rest {
			return header{}, fmt.Errorf("%w: weight table has %d bytes for %d weights", ErrCorrupt, len(r.b), nz)
		}
		rest = uint64(nz) * 8
	}
	if uint64(nz)*8 != rest {
		return header{}, fmt.Errorf("%w: weight table has %d bytes for %d weights", ErrCorrupt, len(r.b), nz)
	}
	if uint64(nz) > 1<<bits {
		return header{}, fmt.Errorf("%w: %d weights for a model of 2^%d", ErrCorrupt, nz, bits)
	}
	if err := h.cfg.Validate(); err != nil {
		return header{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	h.weights = r.take(int(rest))
	if h.hasState {
		h.state = r.b
		if err := checkState(r.b, bits, h.hasNames); err != nil {
			return header{}, err
		}
	}
	return h, nil
}

// checkState checks that b is an optimizer state section for a model of
// 2^bits weights: two numbers, then two tables of the lengths they say, each
// of at most 2^bits entries, then (format 4) a well-formed name dictionary,
// and nothing after them.
func checkState(b []byte, bits int, names bool) error {
	r := &reader{b: b}
	r.take(16)
	for _, size := range []uint64{12, 20} {
		n := uint64(r.u32())
		if r.err != nil {
			return r.err
		}
		if n > 1<<bits || n*size > uint64(len(r.b)) {
			return fmt.Errorf("%w: optimizer table of %d entries in %d bytes for a model of 2^%d", ErrCorrupt, n, len(r.b), bits)
		}
		r.take(int(n * size))
	}
	if names {
		if _, _, err := readNames(r); err != nil {
			return err
		}
	}
	if r.err == nil && len(r.b) != 0 {
		return fmt.Errorf("%w: %d bytes after the optimizer state", ErrCorrupt, len(r.b))
	}
	return r.err
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

// parseBins reads format 5's sections and bins from r: known sections,
// bins within MaxBins, at most as many binned features as the bytes left
// can hold, each with 1 to bins-1 finite, ascending cuts, by ascending hash.
func (h *header) parseBins(r *reader) error {
	sections, bins, n := r.u8(), int(r.u16()), r.u32()
	if r.err != nil {
		return r.err
	}
	if st := sections &^ 4; st != 0 && st != 1 && st != 3 {
		return fmt.Errorf("%w: unknown sections %#x", ErrCorrupt, sections)
	}
	if sections&4 != 0 {
		h.cfg.BinShape = BinsLinear
	}
	h.hasState, h.hasNames = sections&1 != 0, sections&2 != 0
	if bins < 2 || bins > MaxBins || uint64(n)*18 > uint64(len(r.b)) {
		return fmt.Errorf("%w: %d binned features of %d bins in %d bytes", ErrCorrupt, n, bins, len(r.b))
	}
	h.cfg.Bins = bins
	h.cuts = make(map[uint64][]float64, n)
	var prev uint64
	for i := uint32(0); i < n && r.err == nil; i++ {
		hash, k := r.u64(), int(r.u16())
		if r.err != nil {
			break
		}
		if k < 1 || k >= bins || k*8 > len(r.b) || (i > 0 && hash <= prev) {
			return fmt.Errorf("%w: binned feature %d has %d cuts (of %d bins) or is out of order", ErrCorrupt, i, k, bins)
		}
		cuts := make([]float64, k)
		for j := range cuts {
			cuts[j] = r.f64()
			if math.IsNaN(cuts[j]) || math.IsInf(cuts[j], 0) || (j > 0 && cuts[j] <= cuts[j-1]) {
				return fmt.Errorf("%w: the cuts of binned feature %d are not finite and ascending", ErrCorrupt, i)
			}
		}
		h.cuts[hash], prev = cuts, hash
	}
	return r.err
}

// binShape is c's bin shape as it scores: BinsOneHot for an empty one, and
// "" for a model that bins nothing.
func binShape(c Config) string {
	switch {
	case c.Bins == 0:
		return ""
	case c.BinShape == "":
		return BinsOneHot
	}
	return c.BinShape
}
