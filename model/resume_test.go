package model

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/flywheel-dev/flywheel"
)

// rankerExamples are n logged decisions over three actions where the
// chosen action pays when it matches the user's segment.
func rankerExamples(n int, seed uint64) []flywheel.Example {
	rng := rand.New(rand.NewPCG(seed, 1))
	acts := actions(3)
	out := make([]flywheel.Example, n)
	for i := range out {
		seg := rng.IntN(3)
		c := rng.IntN(3)
		r := 0.0
		if c == seg {
			r = 1
		}
		out[i] = flywheel.Example{EventID: fmt.Sprint(i), Context: flywheel.Features{"user": {"segment": fmt.Sprint(seg), "age": float64(20 + rng.IntN(40))}},
			Actions: acts, ChosenIndex: c, Probabilities: []float64{1.0 / 3, 1.0 / 3, 1.0 / 3}, Reward: r}
	}
	return out
}

// A trainer resumed from the artifact another wrote (weights, AdaGrad or
// FTRL state, examples learned) goes on exactly as the other would have: the
// artifacts after the second half are the same bytes.
func TestResumeContinuesBitForBit(t *testing.T) {
	t.Parallel()
	ranker := Config{Kind: flywheel.KindRanker, Bits: 12, Interactions: [][2]string{{"user", "item"}},
		Exploration: Exploration{Policy: SquareCB, GammaScale: 10, GammaExponent: 0.5}}
	classifier := Config{Kind: flywheel.KindClassifier, Bits: 12}
	exs := rankerExamples(4000, 7)
	for _, tc := range []struct {
		name string
		cfg  Config
		tc   TrainConfig
	}{
		{"ranker mtr", ranker, TrainConfig{LearningRate: 0.25}},
		{"ranker dr", ranker, TrainConfig{LearningRate: 0.25, Objective: DR}},
		{"classifier", classifier, TrainConfig{}},
		// With a name dictionary (format 4): one that fills up, one that does not.
		{"ranker dr names", ranker, TrainConfig{LearningRate: 0.25, Objective: DR, Names: 12}},
		{"classifier names", classifier, TrainConfig{Names: DefaultNames}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			learn := func(tr *Trainer, exs []flywheel.Example) {
				for i := range exs {
					if tc.cfg.Kind == flywheel.KindClassifier {
						tr.LearnClassifier(exs[i].Context, exs[i].Reward > 0)
					} else if err := tr.LearnRanker(&exs[i]); err != nil {
						t.Fatal(err)
					}
				}
			}
			whole := NewTrainer(mustModel(t, tc.cfg), tc.tc)
			learn(whole, exs)
			want, _ := whole.MarshalBinary()

			first := NewTrainer(mustModel(t, tc.cfg), tc.tc)
			learn(first, exs[:1500])
			half, _ := first.MarshalBinary()
			resumed, err := Resume(half, tc.cfg, tc.tc)
			if err != nil {
				t.Fatal(err)
			}
			learn(resumed, exs[1500:])
			got, _ := resumed.MarshalBinary()
			if !bytes.Equal(got, want) {
				t.Fatalf("resumed after 1,500 of 4,000 examples: artifact differs from learning all 4,000 at once")
			}
			if resumed.Model().Trained() != 4000 {
				t.Fatalf("trained %d, want 4000", resumed.Model().Trained())
			}
			// Serving reads the same artifact as a model.
			m, err := DecodeAs(got, tc.cfg)
			if err != nil || !equalWeights(m.Weights(), whole.Model().Weights()) {
				t.Fatalf("format 3 decoded as a model: %v", err)
			}
			t.Logf("%d bytes with optimizer state, %d without", len(got), len(mustMarshal(t, whole.Model())))
		})
	}
}

func mustMarshal(t *testing.T, m *Model) []byte {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func equalWeights(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Resume refuses another shape (ErrShape) and an artifact without optimizer
// state (ErrNoState), and takes the configured exploration.
func TestResumeRefusesShapeAndStateless(t *testing.T) {
	t.Parallel()
	cfg := Config{Kind: flywheel.KindRanker, Bits: 10, Interactions: [][2]string{{"user", "item"}}, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.05}}
	tr := NewTrainer(mustModel(t, cfg), TrainConfig{})
	exs := rankerExamples(10, 1)
	for i := range exs {
		_ = tr.LearnRanker(&exs[i])
	}
	b, _ := tr.MarshalBinary()
	other := cfg
	other.Bits = 12
	if _, err := Resume(b, other, TrainConfig{}); !errors.Is(err, ErrShape) {
		t.Fatalf("another bits: %v, want ErrShape", err)
	}
	other = cfg
	other.Interactions = nil
	if _, err := Resume(b, other, TrainConfig{}); !errors.Is(err, ErrShape) {
		t.Fatalf("other interactions: %v, want ErrShape", err)
	}
	if _, err := Resume(mustMarshal(t, tr.Model()), cfg, TrainConfig{}); !errors.Is(err, ErrNoState) {
		t.Fatalf("an artifact without state: %v, want ErrNoState", err)
	}
	old, err := os.ReadFile("testdata/v1-squarecb.fwm")
	if err != nil {
		t.Fatal(err)
	}
	if HasOptimizerState(old) || !HasOptimizerState(b) {
		t.Fatal("HasOptimizerState is wrong about format 1 or 3")
	}
	explore := cfg
	explore.Exploration = Exploration{Policy: Softmax, Lambda: 3}
	r, err := Resume(b, explore, TrainConfig{})
	if err != nil || r.Model().Config().Exploration != explore.Exploration || r.Model().Trained() != 10 {
		t.Fatalf("resumed with another exploration: %v, %+v", err, r.Model().Config())
	}
}

// The optimizer state's tables are checked like the weights'.
func TestDecodeRefusesBadState(t *testing.T) {
	t.Parallel()
	cfg := Config{Kind: flywheel.KindRanker, Bits: 4, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.05}}
	tr := NewTrainer(mustModel(t, cfg), TrainConfig{})
	exs := rankerExamples(5, 2)
	for i := range exs {
		_ = tr.LearnRanker(&exs[i])
	}
	b, _ := tr.MarshalBinary()
	body := b[:len(b)-checksumSize]
	withSum := func(body []byte) []byte {
		s := sha256.Sum256(body)
		return append(append([]byte(nil), body...), s[:]...)
	}
	for name, in := range map[string][]byte{
		"trailing byte":   withSum(append(append([]byte(nil), body...), 0)),
		"truncated state": withSum(body[:len(body)-3]),
		"no state":        withSum(body[:len(body)-4-4-16-12*countState(tr)]),
	} {
		if _, err := Decode(in); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}

func countState(t *Trainer) int {
	n := 0
	for i := range t.g2 {
		if t.g2[i] != 0 || t.sc[i] != 0 {
			n++
		}
	}
	return n
}
