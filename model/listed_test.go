package model

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/flywheel-dev/flywheel"
)

// randomFeatures draws features of every kind a request may send, with
// namespaces and names shared across draws so that interactions and bins
// have something to do.
func randomFeatures(rng *rand.Rand) flywheel.Features {
	f := flywheel.Features{}
	for _, ns := range []string{"user", "item", "ctx", "zeta", "a"} {
		if rng.IntN(3) == 0 {
			continue
		}
		feats := map[string]any{}
		for range rng.IntN(6) {
			name := fmt.Sprintf("f%d", rng.IntN(8))
			switch rng.IntN(5) {
			case 0:
				feats[name] = fmt.Sprintf("v%d", rng.IntN(5))
			case 1:
				feats[name] = math.Round(rng.NormFloat64()*1000) / 100
			case 2:
				feats[name] = float64(rng.IntN(3)) // zeros too
			case 3:
				feats[name] = rng.IntN(2) == 0
			default:
				bag := []any{}
				for range rng.IntN(4) {
					bag = append(bag, fmt.Sprintf("t%d", rng.IntN(6)))
				}
				feats[name] = bag
			}
		}
		f[ns] = feats
	}
	return f
}

// A request ranked from its listed features (read from its JSON) gets
// exactly what it gets from the same features as maps: the same scores to
// the last bit, the same probabilities, the same draw; with interactions,
// with the numeric bins fitted, and with actions excluded.
func TestRankListedMatchesRankFromMaps(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 11))
	cfg := Config{Kind: flywheel.KindRanker, Bits: 18, Bins: 8, Interactions: [][2]string{{"user", "item"}, {"ctx", "item"}, {"a", "a"}},
		Exploration: Exploration{Policy: SquareCB, GammaScale: 10, GammaExponent: 0.5}}
	tr := NewTrainer(mustModel(t, cfg), TrainConfig{})
	for i := range FitExamples + 2000 {
		acts := make([]flywheel.Action, 1+rng.IntN(6))
		probs := make([]float64, len(acts))
		for j := range acts {
			acts[j] = flywheel.Action{ID: fmt.Sprint(j), Features: randomFeatures(rng)}
			probs[j] = 1 / float64(len(acts))
		}
		ex := flywheel.Example{EventID: fmt.Sprint(i), Context: randomFeatures(rng), Actions: acts, Probabilities: probs,
			ChosenIndex: rng.IntN(len(acts)), Reward: float64(rng.IntN(2))}
		if err := tr.LearnRanker(&ex); err != nil {
			t.Fatal(err)
		}
	}
	m := tr.Model()
	if len(m.cuts) == 0 {
		t.Fatal("no bins fitted")
	}
	lim := flywheel.Limits{}.WithDefaults()
	var l flywheel.FeatureList
	var want, got Ranking
	for trial := range 500 {
		l.Reset()
		ctx := randomFeatures(rng)
		acts := make([]flywheel.Action, 1+rng.IntN(20))
		sets := make([]int, len(acts))
		b, _ := json.Marshal(ctx)
		if !l.Scan(b, lim) {
			t.Fatalf("scan %s", b)
		}
		for j := range acts {
			acts[j] = flywheel.Action{ID: fmt.Sprint(j), Features: randomFeatures(rng)}
			b, _ := json.Marshal(acts[j].Features)
			if !l.Scan(b, lim) {
				t.Fatalf("scan %s", b)
			}
			sets[j] = j + 1
		}
		var excluded []bool
		if len(acts) > 1 && trial%3 == 0 {
			excluded = make([]bool, len(acts))
			excluded[rng.IntN(len(acts))] = true
		}
		key := fmt.Sprint("ev", trial)
		if err := m.RankExcluding(key, ctx, acts, excluded, &want); err != nil {
			t.Fatal(err)
		}
		if err := m.RankListed(key, &l, 0, sets, excluded, &got); err != nil {
			t.Fatal(err)
		}
		for j := range acts {
			if math.Float64bits(got.Scores[j]) != math.Float64bits(want.Scores[j]) || got.Probabilities[j] != want.Probabilities[j] {
				t.Fatalf("trial %d action %d: listed score %v p %v, maps %v p %v", trial, j, got.Scores[j], got.Probabilities[j], want.Scores[j], want.Probabilities[j])
			}
		}
		if got.Chosen != want.Chosen || got.Explored != want.Explored || fmt.Sprint(got.Order) != fmt.Sprint(want.Order) {
			t.Fatalf("trial %d: listed chose %d %v, maps %d %v", trial, got.Chosen, got.Order, want.Chosen, want.Order)
		}
	}
}

// Ranking from listed features allocates nothing per action in steady
// state.
func TestRankListedAllocatesNothing(t *testing.T) {
	m := mustModel(t, Config{Kind: flywheel.KindRanker, Bits: 18, Interactions: [][2]string{{"user", "item"}}, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.05}})
	var l flywheel.FeatureList
	lim := flywheel.Limits{}.WithDefaults()
	l.Scan([]byte(`{"user":{"segment":"b","age":31,"tags":["x","y"]}}`), lim)
	sets := make([]int, 20)
	for i := range sets {
		l.Scan([]byte(fmt.Sprintf(`{"item":{"id":"i%d","category":"c%d","price":%d.5,"new":true}}`, i, i%4, i)), lim)
		sets[i] = i + 1
	}
	var r Ranking
	m.RankListed("k", &l, 0, sets, nil, &r)
	if n := testing.AllocsPerRun(100, func() { m.RankListed("k", &l, 0, sets, nil, &r) }); n > 0 {
		t.Fatalf("%v allocations per ranking", n)
	}
}

// listedCopy returns ex with its actions listed: their JSON read into a
// FeatureList, as retraining reads decisions whose actions vary.
func listedCopy(t *testing.T, ex flywheel.Example) flywheel.Example {
	t.Helper()
	b, err := json.Marshal(ex.Actions)
	if err != nil {
		t.Fatal(err)
	}
	var l flywheel.FeatureList
	sets, ok := l.ScanLoggedActions(b, nil)
	if !ok || len(sets) != len(ex.Actions) {
		t.Fatalf("ScanLoggedActions refused %s (%d sets)", b, len(sets))
	}
	ex.Actions, ex.ActionList, ex.ActionSets = nil, &l, sets
	return ex
}

// A trainer that learns from listed actions learns exactly what it learns
// from the same actions as maps: the same artifact to the last byte (the
// weights, the optimizer state, the fitted bins, the name dictionary), the
// same feature profile, and the same policy on new examples; under every
// objective, with interactions and bins.
func TestLearnListedMatchesMaps(t *testing.T) {
	t.Parallel()
	for _, objective := range []string{MTR, IPS, DR} {
		rng := rand.New(rand.NewPCG(3, 5))
		cfg := Config{Kind: flywheel.KindRanker, Bits: 16, Bins: 8, Interactions: [][2]string{{"user", "item"}, {"ctx", "item"}, {"a", "a"}},
			Exploration: Exploration{Policy: SquareCB, GammaScale: 10, GammaExponent: 0.5}}
		maps := NewTrainer(mustModel(t, cfg), TrainConfig{Objective: objective, Names: DefaultNames})
		listed := NewTrainer(mustModel(t, cfg), TrainConfig{Objective: objective, Names: DefaultNames})
		pm, pl := NewProfiler(), NewProfiler()
		var later []flywheel.Example
		for i := range FitExamples + 1500 {
			acts := make([]flywheel.Action, 1+rng.IntN(6))
			probs := make([]float64, len(acts))
			for j := range acts {
				acts[j] = flywheel.Action{ID: fmt.Sprintf("a%d", j), Features: randomFeatures(rng)}
				if j%4 == 3 {
					acts[j].Features = nil // an action without features
				}
				probs[j] = 1 / float64(len(acts))
			}
			ex := flywheel.Example{EventID: fmt.Sprint(i), Context: randomFeatures(rng), Actions: acts, Probabilities: probs,
				ChosenIndex: rng.IntN(len(acts)), Reward: float64(rng.IntN(2))}
			lx := listedCopy(t, ex)
			if i >= FitExamples+1000 {
				later = append(later, ex)
				continue
			}
			if err := maps.LearnRanker(&ex); err != nil {
				t.Fatal(err)
			}
			if err := listed.LearnRanker(&lx); err != nil {
				t.Fatal(err)
			}
			pm.AddExample(&ex)
			pl.AddExample(&lx)
		}
		bm, err := maps.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		bl, err := listed.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if string(bm) != string(bl) {
			t.Fatalf("%s: the trainer's artifact from listed actions differs from the one from maps (%d and %d bytes)", objective, len(bl), len(bm))
		}
		if listed.Model().BinnedFeatures() == 0 {
			t.Fatalf("%s: no feature binned: the test does not test the bins", objective)
		}
		jm, _ := json.Marshal(pm.Profile())
		jl, _ := json.Marshal(pl.Profile())
		if string(jm) != string(jl) {
			t.Fatalf("%s: profiles differ:\nmaps   %s\nlisted %s", objective, jm, jl)
		}
		m := maps.Model()
		var rm, rl Ranking
		for _, ex := range later {
			lx := listedCopy(t, ex)
			m.PolicyExample(&ex, &rm)
			m.PolicyExample(&lx, &rl)
			for k := range rm.Scores {
				if rm.Scores[k] != rl.Scores[k] || rm.Probabilities[k] != rl.Probabilities[k] {
					t.Fatalf("%s: action %d of %s: score %v p %v from maps, %v %v listed", objective, k, ex.EventID, rm.Scores[k], rm.Probabilities[k], rl.Scores[k], rl.Probabilities[k])
				}
			}
		}
	}
}
