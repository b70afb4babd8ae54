package model

import (
	"crypto/sha256"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/flywheel-dev/flywheel"
)

func mustModel(t testing.TB, cfg Config) *Model {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func actions(n int) []flywheel.Action {
	as := make([]flywheel.Action, n)
	for i := range as {
		as[i] = flywheel.Action{ID: fmt.Sprintf("a%d", i), Features: flywheel.Features{"item": {"id": fmt.Sprintf("i%d", i), "price": float64(i)}}}
	}
	return as
}

func TestPoliciesAreDistributionsWithFloor(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, e := range []Exploration{
		{Policy: EpsilonGreedy, Epsilon: 0.1},
		{Policy: EpsilonGreedy, Epsilon: 0},
		{Policy: Softmax, Lambda: 3},
		{Policy: SquareCB, Gamma: 50},
	} {
		t.Run(e.Policy, func(t *testing.T) {
			for trial := 0; trial < 200; trial++ {
				k := 1 + rng.IntN(30)
				scores, probs := make([]float64, k), make([]float64, k)
				for i := range scores {
					scores[i] = rng.NormFloat64()
				}
				explore(e, scores, probs)
				sum := 0.0
				for _, p := range probs {
					if p < 0 || p > 1 || math.IsNaN(p) {
						t.Fatalf("probability %v out of [0,1]", p)
					}
					sum += p
				}
				if math.Abs(sum-1) > 1e-9 {
					t.Fatalf("probabilities sum to %v", sum)
				}
				if e.Policy == EpsilonGreedy {
					for _, p := range probs {
						if p < e.Epsilon/float64(k)-1e-12 {
							t.Fatalf("probability %v below the floor %v", p, e.Epsilon/float64(k))
						}
					}
				}
			}
		})
	}
}

func TestFreshRankerIsUniformAndReproducible(t *testing.T) {
	t.Parallel()
	m := mustModel(t, Config{Kind: flywheel.KindRanker, Bits: 12, Interactions: [][2]string{{"user", "item"}}, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.05}})
	as := actions(7)
	ctx := flywheel.Features{"user": {"segment": "b"}}
	counts := make([]int, len(as))
	for i := 0; i < 7000; i++ {
		var r1, r2 Ranking
		key := fmt.Sprintf("ev-%d", i)
		if err := m.Rank(key, ctx, as, &r1); err != nil {
			t.Fatal(err)
		}
		_ = m.Rank(key, ctx, as, &r2)
		if r1.Chosen != r2.Chosen {
			t.Fatalf("event %s chose %d then %d", key, r1.Chosen, r2.Chosen)
		}
		for _, p := range r1.Probabilities {
			if math.Abs(p-1.0/7) > 1e-12 {
				t.Fatalf("fresh model probability %v, want 1/7", p)
			}
		}
		counts[r1.Chosen]++
	}
	for i, c := range counts {
		if c < 850 || c > 1150 { // 1000 expected, sd ≈ 29
			t.Errorf("action %d chosen %d times of 7000", i, c)
		}
	}
}

// A reward that is a known function of segment × item must be learned well
// enough that the greedy choice is the best action in every segment, by every
// objective; MTR's scores must be within 0.1 of the true rewards.
func TestRankerLearnsInteraction(t *testing.T) {
	t.Parallel()
	for _, obj := range []string{MTR, IPS, DR} {
		t.Run(obj, func(t *testing.T) {
			t.Parallel()
			cfg := Config{Kind: flywheel.KindRanker, Bits: 16, Interactions: [][2]string{{"user", "item"}}, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.1}}
			m := mustModel(t, cfg)
			as := actions(5)
			segments := []string{"a", "b", "c", "d"}
			truth := func(s, a int) float64 {
				if (s+a)%5 == 0 {
					return 0.8
				}
				return 0.1
			}
			rng := rand.New(rand.NewPCG(3, 4))
			tr := NewTrainer(m, TrainConfig{Objective: obj, LearningRate: 0.25})
			for i := 0; i < 20000; i++ {
				s := rng.IntN(len(segments))
				a := rng.IntN(len(as))
				r := 0.0
				if rng.Float64() < truth(s, a) {
					r = 1
				}
				probs := []float64{0.2, 0.2, 0.2, 0.2, 0.2}
				ex := &flywheel.Example{EventID: "x", Context: flywheel.Features{"user": {"segment": segments[s]}}, Actions: as, Probabilities: probs, ChosenIndex: a, Reward: r}
				if err := tr.LearnRanker(ex); err != nil {
					t.Fatal(err)
				}
			}
			learned := tr.Model()
			for s, seg := range segments {
				var r Ranking
				learned.Policy(flywheel.Features{"user": {"segment": seg}}, as, &r)
				best := argmax(r.Scores)
				if truth(s, best) < 0.5 {
					t.Errorf("segment %s: greedy action %d has true reward %.2f", seg, best, truth(s, best))
				}
				for a := range as {
					if d := math.Abs(r.Scores[a] - truth(s, a)); obj == MTR && d > 0.1 {
						t.Errorf("segment %s action %d: score %.3f, truth %.3f", seg, a, r.Scores[a], truth(s, a))
					}
				}
			}
		})
	}
}

func TestClassifierLogLossNearTruth(t *testing.T) {
	t.Parallel()
	m := mustModel(t, Config{Kind: flywheel.KindClassifier, Bits: 14})
	rng := rand.New(rand.NewPCG(5, 6))
	coef := map[string]float64{"a": -1.5, "b": 0.3, "c": 1.2}
	keys := []string{"a", "b", "c"}
	sample := func() (flywheel.Features, float64) {
		k := keys[rng.IntN(3)]
		x := rng.NormFloat64()
		return flywheel.Features{"u": {"k": k, "x": x}}, sigmoid(coef[k] + 0.8*x)
	}
	tr := NewTrainer(m, TrainConfig{L1: 0.01, L2: 0.01})
	for i := 0; i < 30000; i++ {
		f, p := sample()
		tr.LearnClassifier(f, rng.Float64() < p)
	}
	var ours, truth float64
	n := 20000
	for i := 0; i < n; i++ {
		f, p := sample()
		y := rng.Float64() < p
		q := tr.Model().Predict(f)
		ours += logLoss(q, y)
		truth += logLoss(p, y)
	}
	ours, truth = ours/float64(n), truth/float64(n)
	t.Logf("FTRL log loss %.4f, true model %.4f", ours, truth)
	if ours > truth+0.02 {
		t.Errorf("log loss %.4f, true model %.4f: more than 0.02 apart", ours, truth)
	}
}

func logLoss(p float64, y bool) float64 {
	if y {
		return -math.Log(p)
	}
	return -math.Log(1 - p)
}

func TestEncodeRoundTripAndCorruption(t *testing.T) {
	t.Parallel()
	cfg := Config{Kind: flywheel.KindRanker, Bits: 10, Interactions: [][2]string{{"user", "item"}}, Exploration: Exploration{Policy: SquareCB, Gamma: 10}}
	tr := NewTrainer(mustModel(t, cfg), TrainConfig{})
	as := actions(3)
	for i := 0; i < 100; i++ {
		_ = tr.LearnRanker(&flywheel.Example{EventID: "e", Context: flywheel.Features{"user": {"s": "x"}}, Actions: as, Probabilities: []float64{0.3, 0.3, 0.4}, ChosenIndex: i % 3, Reward: float64(i % 2)})
	}
	b, err := tr.Model().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range tr.Model().Weights() {
		if got.Weights()[i] != w {
			t.Fatalf("weight %d: %v != %v", i, got.Weights()[i], w)
		}
	}
	if got.Config().Exploration != cfg.Exploration || got.Trained() != 100 {
		t.Fatalf("decoded config %+v trained %d", got.Config(), got.Trained())
	}
	for name, bad := range map[string][]byte{
		"truncated": b[:len(b)-5],
		"flipped":   flip(b, len(b)/2),
		"empty":     nil,
	} {
		if _, err := Decode(bad); err == nil {
			t.Errorf("%s artifact decoded without error", name)
		}
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0x40
	return c
}

func FuzzDecode(f *testing.F) {
	m, _ := New(Config{Kind: flywheel.KindRanker, Bits: 4, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.1}})
	m.weights[3] = 0.5
	b, _ := m.MarshalBinary()
	f.Add(b)
	f.Add([]byte("FWM1"))
	f.Add(b[:len(b)-checksumSize])
	// The 79-byte artifact whose bits=28 allocated 1 GiB, and the same
	// claiming a million weights it does not carry (bodies: the fuzz
	// function appends the checksum).
	for _, h := range [][]byte{hostileArtifact(28, 0), hostileArtifact(28, 1<<20)} {
		f.Add(h)
		f.Add(h[:len(h)-checksumSize])
	}
	v2, _ := mustModel(f, Config{Kind: flywheel.KindRanker, Bits: 4, Interactions: [][2]string{{"u", "i"}},
		Exploration: Exploration{Policy: SquareCB, GammaScale: 10, GammaExponent: 0.5}}).MarshalBinary()
	f.Add(v2[:len(v2)-checksumSize])
	v3, _ := NewTrainer(mustModel(f, Config{Kind: flywheel.KindRanker, Bits: 4, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.1}}), TrainConfig{}).MarshalBinary()
	f.Add(v3[:len(v3)-checksumSize])
	small := Config{Kind: flywheel.KindRanker, Bits: 4}
	f.Fuzz(func(t *testing.T, b []byte) {
		// As given (nearly always a checksum failure) and with a valid
		// checksum appended, so the fuzzer reaches the parser behind it.
		// Headers are held to at most 2^16 weights so that the fuzzer's
		// memory stays bounded; DecodeAs is fuzzed as serving uses it.
		sum := sha256.Sum256(b)
		for _, in := range [][]byte{b, append(append([]byte(nil), b...), sum[:]...)} {
			m, err := decode(in, func(c Config) error {
				if c.Bits > 16 {
					return ErrShape
				}
				return nil
			})
			if err == nil && m == nil {
				t.Fatal("nil model without error")
			}
			if err == nil && uint64(len(in)) < uint64(len(magic)+checksumSize) {
				t.Fatalf("%d bytes decoded", len(in))
			}
			if m, err := DecodeAs(in, small); err == nil && (m == nil || m.Config().Bits != 4) {
				t.Fatal("DecodeAs returned another shape")
			}
		}
	})
}

// An artifact whose checksum is right but which carries a NaN weight is
// refused.
func TestDecodeRefusesNaN(t *testing.T) {
	t.Parallel()
	m := mustModel(t, Config{Kind: flywheel.KindRanker, Bits: 4, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.1}})
	m.weights[2] = float32(math.NaN())
	b, _ := m.MarshalBinary()
	if _, err := Decode(b); err == nil || !strings.Contains(err.Error(), "not finite") {
		t.Fatalf("NaN-bearing artifact: %v", err)
	}
}
