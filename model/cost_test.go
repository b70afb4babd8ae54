package model

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/flywheel-dev/flywheel"
)

// flywheel.Cost, which serving checks against
// limits.max_features_per_request, counts exactly the weights scoring
// touches, interactions included.
func TestCostCountsWhatScoringTouches(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	features := func(nss ...string) flywheel.Features {
		f := flywheel.Features{}
		for _, ns := range nss {
			if rng.IntN(3) == 0 {
				continue
			}
			f[ns] = map[string]any{}
			for i := 0; i < rng.IntN(6); i++ {
				switch rng.IntN(5) {
				case 0:
					f[ns][fmt.Sprint("s", i)] = fmt.Sprint(rng.IntN(3))
				case 1:
					f[ns][fmt.Sprint("n", i)] = float64(rng.IntN(3)) // zero sometimes
				case 2:
					f[ns][fmt.Sprint("b", i)] = rng.IntN(2) == 0
				default:
					bag := make([]any, rng.IntN(4))
					for j := range bag {
						bag[j] = fmt.Sprint(rng.IntN(2)) // repeated members count each
					}
					f[ns][fmt.Sprint("t", i)] = bag
				}
			}
		}
		return f
	}
	pairs := [][2]string{{"user", "item"}, {"item", "item"}, {"user", "ctx"}}
	m, err := New(Config{Kind: flywheel.KindRanker, Bits: 10, Interactions: pairs, Exploration: flywheel.Exploration{Policy: flywheel.EpsilonGreedy}})
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 200; round++ {
		ctx := features("user", "ctx", "item")
		actions := make([]flywheel.Action, 1+rng.IntN(4))
		for i := range actions {
			actions[i] = flywheel.Action{ID: fmt.Sprint(i), Features: features("item", "user")}
		}
		var kb keyBuf
		var cb crossBuf
		cf := appendFeatures(nil, ctx, &kb, binning{})
		touched := 0
		for _, a := range actions {
			af := appendFeatures(nil, a.Features, &kb, binning{})
			m.visit(cf, af, &cb, func(uint64, float64, bool) { touched++ })
			touched-- // the bias, which Cost leaves out
		}
		if got := flywheel.Cost(ctx, actions, pairs, 1<<30); got != touched {
			t.Fatalf("round %d: Cost %d, scoring touched %d weights\nctx %v\nactions %v", round, got, touched, ctx, actions)
		}
	}
}

// Rank orders the actions after the chosen one by score, ties in the order
// given, as the selection it replaced did.
func TestRankOrderAfterChosen(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	m, err := New(Config{Kind: flywheel.KindRanker, Bits: 8, Exploration: flywheel.Exploration{Policy: flywheel.EpsilonGreedy, Epsilon: 0.5}})
	if err != nil {
		t.Fatal(err)
	}
	tr := NewTrainer(m, TrainConfig{})
	for i := 0; i < 50; i++ {
		_ = tr.LearnRanker(&flywheel.Example{Actions: []flywheel.Action{{ID: "a", Features: flywheel.Features{"item": {"c": fmt.Sprint(i % 3)}}}},
			Probabilities: []float64{1}, Reward: float64(i % 2)})
	}
	m = tr.Model()
	for round := 0; round < 100; round++ {
		actions := make([]flywheel.Action, 1+rng.IntN(40))
		for i := range actions {
			actions[i] = flywheel.Action{ID: fmt.Sprint(i), Features: flywheel.Features{"item": {"c": fmt.Sprint(rng.IntN(4))}}}
		}
		var r Ranking
		if err := m.Rank(fmt.Sprint(round), nil, actions, &r); err != nil {
			t.Fatal(err)
		}
		// the selection Rank used to make
		want := []int{r.Chosen}
		for len(want) < len(actions) {
			next := -1
			for i := range actions {
				if slicesContains(want, i) {
					continue
				}
				if next < 0 || r.Scores[i] > r.Scores[next] {
					next = i
				}
			}
			want = append(want, next)
		}
		if fmt.Sprint(want) != fmt.Sprint(r.Order) {
			t.Fatalf("order %v, want %v (scores %v)", r.Order, want, r.Scores)
		}
	}
}

func slicesContains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
