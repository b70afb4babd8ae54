package model

import (
	"fmt"
	"math"
	"testing"

	"github.com/flywheel-dev/flywheel"
)

// squareCBAt returns a ranker with γ = 10·√t whose scores differ across
// actions, having learned that a1 is best, as if it had learned t examples.
func squareCBAt(t *testing.T, trained uint64) *Model {
	t.Helper()
	m := mustModel(t, Config{Kind: flywheel.KindRanker, Bits: 12, Exploration: Exploration{Policy: SquareCB, GammaScale: 10, GammaExponent: 0.5}})
	tr := NewTrainer(m, TrainConfig{})
	as := actions(4)
	for i := 0; i < 400; i++ {
		r := 0.2
		if i%4 == 1 {
			r = 0.6
		}
		if err := tr.LearnRanker(&flywheel.Example{EventID: "e", Actions: as, Probabilities: []float64{0.25, 0.25, 0.25, 0.25}, ChosenIndex: i % 4, Reward: r}); err != nil {
			t.Fatal(err)
		}
	}
	out := tr.Model().Clone()
	out.trained = trained
	return out
}

// γ_t = 10·√t: 0 at t = 0 (the uniform policy, what a model that has learned
// nothing should play), growing with t, so the greedy action's share grows;
// a fixed gamma stays fixed. Every distribution sums to 1.
func TestSquareCBGammaGrowsWithExamples(t *testing.T) {
	t.Parallel()
	as := actions(4)
	prev := 0.0
	for _, n := range []uint64{0, 1, 100, 10_000, 1_000_000} {
		m := squareCBAt(t, n)
		if want := 10 * math.Sqrt(float64(n)); math.Abs(m.Gamma()-want) > 1e-9 {
			t.Fatalf("t=%d: γ %v, want %v", n, m.Gamma(), want)
		}
		var r Ranking
		m.Policy(nil, as, &r)
		sum := 0.0
		for _, p := range r.Probabilities {
			if !(p > 0 && p <= 1) {
				t.Fatalf("t=%d: probability %v", n, p)
			}
			sum += p
		}
		if math.Abs(sum-1) > 1e-12 {
			t.Fatalf("t=%d: probabilities sum to %v", n, sum)
		}
		best := argmax(r.Scores)
		greedy := r.Probabilities[best]
		t.Logf("t=%-8d γ=%8.1f greedy share %.4f", n, m.Gamma(), greedy)
		switch {
		case best != 1:
			t.Fatalf("t=%d: best action %d, want 1 (scores %v)", n, best, r.Scores)
		case n == 0 && math.Abs(greedy-0.25) > 1e-12:
			t.Fatalf("t=0: greedy share %v, want uniform 0.25", greedy)
		case n > 0 && greedy <= prev:
			t.Fatalf("t=%d: greedy share %v did not grow from %v", n, greedy, prev)
		}
		prev = greedy
	}
	if prev < 0.9 {
		t.Errorf("after 1M examples the greedy share is only %v", prev)
	}

	fixed := squareCBAt(t, 0)
	fixed.cfg.Exploration = Exploration{Policy: SquareCB, Gamma: 50}
	for _, n := range []uint64{0, 1_000_000} {
		fixed.trained = n
		if fixed.Gamma() != 50 {
			t.Fatalf("fixed gamma 50 at t=%d: γ %v", n, fixed.Gamma())
		}
	}
}

// The probability Rank reports for the action it chose is exactly the one
// Policy (what off-policy evaluation recomputes) gives, and the draws follow
// the reported probabilities. γ survives encoding: a swapped-in version
// explores as the trainer's model did.
func TestSquareCBRankLogsExactProbabilities(t *testing.T) {
	t.Parallel()
	m := squareCBAt(t, 400)
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if d.Gamma() != m.Gamma() || d.Gamma() != 200 {
		t.Fatalf("γ %v after decoding, %v before, want 200", d.Gamma(), m.Gamma())
	}
	as := actions(4)
	var pol Ranking
	m.Policy(nil, as, &pol)
	const n = 40_000
	counts := make([]int, len(as))
	for i := 0; i < n; i++ {
		var r Ranking
		if err := d.Rank(fmt.Sprint("ev-", i), nil, as, &r); err != nil {
			t.Fatal(err)
		}
		if r.Probabilities[r.Chosen] != pol.Probabilities[r.Chosen] {
			t.Fatalf("chosen %d logged with %v, the policy says %v", r.Chosen, r.Probabilities[r.Chosen], pol.Probabilities[r.Chosen])
		}
		counts[r.Chosen]++
	}
	for a, c := range counts {
		p := pol.Probabilities[a]
		if sd := math.Sqrt(n * p * (1 - p)); math.Abs(float64(c)-n*p) > 5*sd+1 {
			t.Errorf("action %d chosen %d times of %d, expected %.0f ± %.0f", a, c, n, n*p, sd)
		}
	}
}

// `policy: squarecb` alone gets VW's schedule; gamma set is a fixed γ; both
// at once are refused, naming the fields.
func TestSquareCBConfig(t *testing.T) {
	t.Parallel()
	mc := flywheel.ModelConfig{Exploration: Exploration{Policy: SquareCB}}.WithDefaults()
	if e := mc.Exploration; e.GammaScale != 10 || e.GammaExponent != 0.5 || e.Gamma != 0 {
		t.Fatalf("defaults %+v", e)
	}
	fixed := flywheel.ModelConfig{Exploration: Exploration{Policy: SquareCB, Gamma: 40}}.WithDefaults()
	if e := fixed.Exploration; e.Gamma != 40 || e.GammaScale != 0 || e.GammaExponent != 0 {
		t.Fatalf("fixed γ became %+v", e)
	}
	m, err := FromConfig(fixed)
	if err != nil || m.Gamma() != 40 {
		t.Fatalf("fixed γ model: %v, γ %v", err, m.Gamma())
	}
	for _, e := range []Exploration{
		{Policy: SquareCB, Gamma: 40, GammaScale: 10},
		{Policy: SquareCB, GammaScale: -1},
		{Policy: SquareCB, GammaScale: math.Inf(1)},
		{Policy: SquareCB, GammaExponent: 1.5},
		{Policy: SquareCB, GammaExponent: math.NaN()},
	} {
		if err := e.Validate("exploration"); err == nil || flywheel.ErrorCode(err) != flywheel.EINVALID {
			t.Errorf("%+v: error %v, want EINVALID", e, err)
		}
	}
}
