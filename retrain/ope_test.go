package retrain

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

// synthetic world: 3 segments, 4 actions, known click probabilities.
var truth = [3][4]float64{{0.1, 0.6, 0.2, 0.1}, {0.5, 0.1, 0.1, 0.3}, {0.2, 0.2, 0.7, 0.1}}

var segs = []string{"a", "b", "c"}

func actionsK() []flywheel.Action {
	as := make([]flywheel.Action, 4)
	for i := range as {
		as[i] = flywheel.Action{ID: fmt.Sprint(i), Features: flywheel.Features{"item": {"id": fmt.Sprint(i)}}}
	}
	return as
}

// logged draws n uniformly logged examples.
func logged(rng *rand.Rand, n int) []flywheel.Example {
	as := actionsK()
	out := make([]flywheel.Example, n)
	for i := range out {
		s, a := rng.IntN(3), rng.IntN(4)
		r := 0.0
		if rng.Float64() < truth[s][a] {
			r = 1
		}
		out[i] = flywheel.Example{EventID: fmt.Sprint(i), Context: flywheel.Features{"user": {"segment": segs[s]}},
			Actions: as, Probabilities: []float64{0.25, 0.25, 0.25, 0.25}, ChosenIndex: a, Reward: r}
	}
	return out
}

// value is a policy's true expected reward under uniform segments.
func value(m *model.Model) float64 {
	var r model.Ranking
	v := 0.0
	for s, seg := range segs {
		m.Policy(flywheel.Features{"user": {"segment": seg}}, actionsK(), &r)
		for a, p := range r.Probabilities {
			v += p * truth[s][a] / 3
		}
	}
	return v
}

// Each estimator's 95% interval covers the true value in about 95% of
// seeds, for a uniform policy and for a learned, nearly greedy one.
func TestEstimatorCoverage(t *testing.T) {
	t.Parallel()
	cfg := flywheel.ModelConfig{Kind: flywheel.KindRanker, Bits: 12, Interactions: [][]string{{"user", "item"}},
		Exploration: flywheel.Exploration{Policy: flywheel.EpsilonGreedy, Epsilon: 0.1}}.WithDefaults()
	uniform, _ := model.FromConfig(cfg)
	tr := model.NewTrainer(uniform, model.TrainConfig{})
	for _, ex := range logged(rand.New(rand.NewPCG(99, 1)), 5000) {
		_ = tr.LearnRanker(&ex)
	}
	learned := tr.Model()
	const seeds = 300
	for _, pol := range []struct {
		name string
		m    *model.Model
	}{{"uniform", uniform}, {"learned", learned}} {
		truthV := value(pol.m)
		truthD := truthV - value(uniform) // the champion in compare is the uniform policy
		covered := map[string]int{}
		for seed := uint64(0); seed < seeds; seed++ {
			ex := logged(rand.New(rand.NewPCG(seed, 7)), 800)
			c := compare(ex, pol.m, uniform, learned, 0.95)
			for _, est := range []string{"ips", "snips", "dr"} {
				e := c.Candidate.Get(est)
				if e.Lower <= truthV && truthV <= e.Upper {
					covered[est]++
				}
				if d := c.DiffFor(est); d.Lower <= truthD && truthD <= d.Upper {
					covered["difference by "+est]++
				}
			}
		}
		for _, est := range []string{"ips", "snips", "dr", "difference by ips", "difference by snips", "difference by dr"} {
			if pol.name == "uniform" && strings.HasPrefix(est, "difference") {
				continue // candidate = champion: every difference is exactly 0
			}
			cov := float64(covered[est]) / seeds
			t.Logf("%s policy (true value %.4f): %s interval coverage %.3f", pol.name, truthV, est, cov)
			if cov < 0.90 || cov > 0.99 {
				t.Errorf("%s policy: %s coverage %.3f outside [0.90, 0.99]", pol.name, est, cov)
			}
		}
	}
}

// A champion's policy is read from the log for the decisions it served,
// and the comparison is the one that scores it: the same sums, bit for bit.
func TestComparerReadsTheServingVersionsPolicyFromTheLog(t *testing.T) {
	t.Parallel()
	cfg := flywheel.ModelConfig{Kind: flywheel.KindRanker, Bits: 12, Interactions: [][]string{{"user", "item"}},
		Exploration: flywheel.Exploration{Policy: flywheel.SquareCB}}.WithDefaults()
	rng := rand.New(rand.NewPCG(5, 5))
	champ, cand := trainOn(t, cfg, logged(rng, 3000)), trainOn(t, cfg, logged(rng, 6000))
	// Decisions the champion (v3) served, with its exact probabilities, and
	// some served by another version.
	exs := logged(rng, 2000)
	var r model.Ranking
	for i := range exs {
		if i%4 == 0 {
			exs[i].Version = 2
			continue
		}
		if err := champ.Rank(exs[i].EventID, exs[i].Context, exs[i].Actions, &r); err != nil {
			t.Fatal(err)
		}
		exs[i].Version, exs[i].ChosenIndex, exs[i].Probabilities = 3, r.Chosen, append([]float64(nil), r.Probabilities...)
	}
	scored := newComparer(cand, champ, cand, 0.95)
	fromLog := &comparer{cand: &policyMemo{m: cand}, champ: &policyMemo{m: champ, version: 3}, q: cand, z: flywheel.TwoSidedZ(0.95)}
	for i := range exs {
		scored.add(&exs[i])
		fromLog.add(&exs[i])
	}
	if a, b := fmt.Sprintf("%+v", scored.result()), fmt.Sprintf("%+v", fromLog.result()); a != b {
		t.Fatalf("scored %s\nfrom the log %s", a, b)
	}
}

// trainOn learns a model of cfg from exs.
func trainOn(t *testing.T, cfg flywheel.ModelConfig, exs []flywheel.Example) *model.Model {
	t.Helper()
	m, err := model.FromConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr := model.NewTrainer(m, model.TrainConfig{})
	for i := range exs {
		if err := tr.LearnRanker(&exs[i]); err != nil {
			t.Fatal(err)
		}
	}
	return tr.Model()
}
