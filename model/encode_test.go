package model

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/flywheel-dev/flywheel"
)

// hostileArtifact is a well-formed artifact of a fresh ranker of 2^bits
// weights that claims nonzero weights and carries none of them (with
// nonzero 0 it is a valid, empty model): 79 bytes whatever bits says.
func hostileArtifact(bits uint8, nonzero uint32) []byte {
	b := []byte(magic)
	b = binary.LittleEndian.AppendUint16(b, formatV1)
	b = append(b, 0, bits, 0)          // ranker, bits, epsilon-greedy
	b = append(b, make([]byte, 24)...) // epsilon, lambda, gamma = 0
	b = binary.LittleEndian.AppendUint64(b, 0)
	b = binary.LittleEndian.AppendUint16(b, 0) // no interactions
	b = binary.LittleEndian.AppendUint32(b, nonzero)
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// allocated returns the bytes fn allocates.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// The 79-byte artifact with bits=28 allocated 1 GiB when decoded. Checked
// against the configured shape it is refused for the few bytes of its
// header; an artifact whose weight table is not there in full is refused
// before anything is allocated, whatever the expected shape.
func TestDecodeHostileHeaderAllocatesLittle(t *testing.T) {
	want := Config{Kind: flywheel.KindRanker, Bits: 18, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.05}}
	for _, tc := range []struct {
		name   string
		b      []byte
		decode func([]byte) (*Model, error)
		is     error
		msg    string
	}{
		{"bits 28 against a configured 18", hostileArtifact(28, 0), func(b []byte) (*Model, error) { return DecodeAs(b, want) }, ErrShape, "bits 28, expected 18"},
		{"weights claimed, absent", hostileArtifact(28, 1<<20), Decode, ErrCorrupt, "weight table has 0 bytes for 1048576 weights"},
		{"weights claimed, absent, configured", hostileArtifact(18, 1<<20), func(b []byte) (*Model, error) { return DecodeAs(b, want) }, ErrCorrupt, "weight table"},
		{"bits beyond the format", hostileArtifact(40, 0), Decode, ErrCorrupt, "bits 40 out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.b) != 79 {
				t.Fatalf("hostile artifact is %d bytes, want 79", len(tc.b))
			}
			var err error
			n := allocated(func() { _, err = tc.decode(tc.b) })
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %v, want %v containing %q", err, tc.is, tc.msg)
			}
			allocs := testing.AllocsPerRun(10, func() { _, _ = tc.decode(tc.b) })
			t.Logf("refused with %q: %d bytes, %.0f allocations", err, n, allocs)
			if n > 16<<10 || allocs > 10 {
				t.Errorf("refusing a 79-byte artifact allocated %d bytes in %.0f allocations", n, allocs)
			}
		})
	}
}

// DecodeAs accepts the configured shape (interactions in any order) and
// refuses, naming it, any difference of kind, bits or interactions.
func TestDecodeAsChecksShape(t *testing.T) {
	t.Parallel()
	cfg := Config{Kind: flywheel.KindRanker, Bits: 10, Interactions: [][2]string{{"user", "item"}, {"user", "slot"}}, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.1}}
	b, err := mustModel(t, cfg).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	ok := cfg
	ok.Interactions = [][2]string{{"user", "slot"}, {"user", "item"}}
	ok.Exploration = Exploration{Policy: Softmax, Lambda: 2} // not part of the shape
	if m, err := DecodeAs(b, ok); err != nil || m.Config().Exploration != cfg.Exploration {
		t.Fatalf("same shape refused or exploration replaced: %v", err)
	}
	for name, c := range map[string]func(*Config){
		"kind":                  func(c *Config) { c.Kind = flywheel.KindClassifier },
		"bits":                  func(c *Config) { c.Bits = 12 },
		"default bits":          func(c *Config) { c.Bits = 0 },
		"an interaction less":   func(c *Config) { c.Interactions = c.Interactions[:1] },
		"an interaction turned": func(c *Config) { c.Interactions = [][2]string{{"item", "user"}, {"user", "slot"}} },
		"no interactions":       func(c *Config) { c.Interactions = nil },
	} {
		want := cfg
		c(&want)
		if _, err := DecodeAs(b, want); !errors.Is(err, ErrShape) {
			t.Errorf("%s: error %v, want ErrShape", name, err)
		}
	}
}

// An artifact written before the γ schedule (format 1) still decodes, keeps
// its fixed γ and re-encodes to the same bytes; a model without a schedule is
// still written as format 1, one with a schedule as format 2.
func TestDecodeFormat1(t *testing.T) {
	t.Parallel()
	old, err := os.ReadFile("testdata/v1-squarecb.fwm")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(old)
	if err != nil {
		t.Fatal(err)
	}
	if e := m.Config().Exploration; e.Policy != SquareCB || e.Gamma != 10 || e.GammaScale != 0 || m.Gamma() != 10 || m.Trained() != 50 {
		t.Fatalf("format 1 artifact decoded as %+v, γ %v, trained %d", e, m.Gamma(), m.Trained())
	}
	again, _ := m.MarshalBinary()
	if !bytes.Equal(again, old) {
		t.Fatal("a format 1 artifact re-encodes differently")
	}
	cfg := m.Config()
	cfg.Exploration = Exploration{Policy: SquareCB, GammaScale: 10, GammaExponent: 0.5}
	b, _ := mustModel(t, cfg).MarshalBinary()
	if f := binary.LittleEndian.Uint16(b[len(magic):]); f != formatV2 {
		t.Fatalf("a model with a γ schedule written as format %d", f)
	}
	got, err := Decode(b)
	if err != nil || got.Config().Exploration != cfg.Exploration {
		t.Fatalf("format 2 round trip: %v, %+v", err, got)
	}
}

// The header's numbers are checked whatever the checksum says.
func TestDecodeRefusesBadHeaders(t *testing.T) {
	t.Parallel()
	withSum := func(body []byte) []byte { s := sha256.Sum256(body); return append(body, s[:]...) }
	b := hostileArtifact(8, 0)
	body := b[:len(b)-checksumSize]
	nan := append([]byte(nil), body...)
	binary.LittleEndian.PutUint64(nan[len(magic)+5:], math.Float64bits(math.NaN()))
	pairs := append([]byte(nil), body[:len(body)-6]...)
	pairs = binary.LittleEndian.AppendUint16(pairs, 60000) // 60,000 interactions in 4 bytes
	pairs = binary.LittleEndian.AppendUint32(pairs, 0)
	format := append([]byte(nil), body...)
	format[len(magic)] = 9
	tooMany := append([]byte(nil), body[:len(body)-4]...)
	tooMany = binary.LittleEndian.AppendUint32(tooMany, 257) // 257 weights for 2^8
	tooMany = append(tooMany, make([]byte, 257*8)...)
	for name, in := range map[string][]byte{
		"NaN epsilon":       withSum(nan),
		"interaction count": withSum(pairs),
		"unknown format":    withSum(format),
		"more than 2^bits":  withSum(tooMany),
		"zero bits":         hostileArtifact(0, 0),
		"trailing byte":     withSum(append(append([]byte(nil), body...), 1)),
	} {
		if _, err := Decode(in); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: error %v, want ErrCorrupt", name, err)
		}
	}
}
