package model

import (
	"fmt"
	"math"
	"testing"

	"github.com/flywheel-dev/flywheel"
)

// Excluded actions are never chosen and have probability exactly 0; the
// others have the policy's probabilities over them alone, summing to 1,
// and are drawn with those frequencies: for every exploration policy.
func TestRankExcludingExactProbabilities(t *testing.T) {
	t.Parallel()
	as := actions(5)
	excluded := []bool{false, true, false, true, false}
	for _, e := range []Exploration{
		{Policy: EpsilonGreedy, Epsilon: 0.3},
		{Policy: Softmax, Lambda: 2},
		{Policy: SquareCB, Gamma: 5},
	} {
		t.Run(e.Policy, func(t *testing.T) {
			t.Parallel()
			m := squareCBAt(t, 400) // learned scores that differ across actions
			m.cfg.Exploration = e
			var pol Ranking
			if err := m.RankExcluding("policy", nil, as, excluded, &pol); err != nil {
				t.Fatal(err)
			}
			sum := 0.0
			for i, p := range pol.Probabilities {
				if excluded[i] && p != 0 {
					t.Fatalf("excluded action %d has probability %v", i, p)
				}
				if !excluded[i] && !(p > 0) {
					t.Fatalf("action %d has probability %v", i, p)
				}
				sum += p
			}
			if math.Abs(sum-1) > 1e-12 {
				t.Fatalf("probabilities sum to %v", sum)
			}
			const n = 30_000
			counts := make([]int, len(as))
			for i := 0; i < n; i++ {
				var r Ranking
				if err := m.RankExcluding(fmt.Sprint("ev-", i), nil, as, excluded, &r); err != nil {
					t.Fatal(err)
				}
				if excluded[r.Chosen] {
					t.Fatalf("draw %d chose excluded action %d", i, r.Chosen)
				}
				if r.Probabilities[r.Chosen] != pol.Probabilities[r.Chosen] {
					t.Fatalf("chosen %d logged with %v, the policy says %v", r.Chosen, r.Probabilities[r.Chosen], pol.Probabilities[r.Chosen])
				}
				if last := r.Order[len(r.Order)-2:]; !excluded[last[0]] || !excluded[last[1]] {
					t.Fatalf("excluded actions are not last in the order %v", r.Order)
				}
				counts[r.Chosen]++
			}
			for a, c := range counts {
				p := pol.Probabilities[a]
				if sd := math.Sqrt(n * p * (1 - p)); math.Abs(float64(c)-n*p) > 5*sd+1 {
					t.Errorf("action %d chosen %d times of %d, expected %.0f ± %.0f", a, c, n, n*p, sd)
				}
			}
		})
	}
}

func TestRankExcludingRefusesAllExcluded(t *testing.T) {
	t.Parallel()
	m := mustModel(t, Config{Kind: flywheel.KindRanker, Bits: 12, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.1}})
	var r Ranking
	if err := m.RankExcluding("k", nil, actions(2), []bool{true, true}, &r); flywheel.ErrorCode(err) != flywheel.EINVALID {
		t.Fatalf("all excluded: %v, want an EINVALID error", err)
	}
	// nil is Rank
	var a, b Ranking
	if err := m.RankExcluding("k", nil, actions(3), nil, &a); err != nil {
		t.Fatal(err)
	}
	if err := m.Rank("k", nil, actions(3), &b); err != nil {
		t.Fatal(err)
	}
	if a.Chosen != b.Chosen || fmt.Sprint(a.Probabilities) != fmt.Sprint(b.Probabilities) {
		t.Fatalf("RankExcluding(nil) %+v differs from Rank %+v", a, b)
	}
}
