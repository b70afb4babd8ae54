package retrain

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

func promoteConfig(rule string) flywheel.PromoteConfig {
	return flywheel.ModelConfig{Promote: flywheel.PromoteConfig{Rule: rule}}.WithDefaults().Promote
}

// The promotion rule on hand-made evidence: a champion whose estimate is
// 0.40, so that the default margin (5%) is 0.02.
func TestDecide(t *testing.T) {
	t.Parallel()
	gain := func(v, lo, hi float64) Evidence {
		return Evidence{Against: 3, Metric: "snips estimate", Candidate: 0.40 + v, Reference: 0.40, Gain: Estimate{Value: v, Lower: lo, Upper: hi}}
	}
	anchorAt := func(v, lo, hi float64) *Evidence {
		e := gain(v, lo, hi)
		e.Against = 2
		return &e
	}
	manual := promoteConfig(flywheel.RuleNonInferior)
	manual.Policy = "manual"
	strict := promoteConfig(flywheel.RuleSuperior)
	strict.MinImprovement = 0.01
	for _, tc := range []struct {
		name       string
		p          flywheel.PromoteConfig
		champ      Evidence
		anchor     *Evidence
		want       string
		wantAnchor int
	}{
		{"better", promoteConfig(""), gain(0.05, 0.01, 0.09), nil, Promoted, 0},
		{"equal", promoteConfig(""), gain(0, -0.015, 0.015), nil, Promoted, 3},
		{"slightly worse, within the margin", promoteConfig(""), gain(-0.005, -0.012, 0.002), nil, Promoted, 3},
		{"worse beyond the margin", promoteConfig(""), gain(-0.06, -0.09, -0.03), nil, Rejected, 0},
		{"significantly worse, not shown within the margin", promoteConfig(""), gain(-0.015, -0.025, -0.005), nil, Rejected, 0},
		{"inconclusive: the interval holds -margin and 0", promoteConfig(""), gain(0.02, -0.05, 0.09), nil, Inconclusive, 3},
		{"inconclusive, better than the anchor", promoteConfig(""), gain(0.02, -0.05, 0.09), anchorAt(0.04, 0.01, 0.07), Inconclusive, 0},
		{"within the margin of the champion, not of the anchor", promoteConfig(""), gain(-0.005, -0.012, 0.002), anchorAt(-0.03, -0.04, -0.021), Rejected, 0},
		{"within the margin of both", promoteConfig(""), gain(-0.005, -0.012, 0.002), anchorAt(-0.01, -0.018, -0.002), Promoted, 2},
		{"inconclusive against the anchor", promoteConfig(""), gain(0.01, 0.002, 0.018), anchorAt(-0.01, -0.05, 0.03), Inconclusive, 2},
		{"manual", manual, gain(0.05, 0.01, 0.09), nil, Rejected, 0},
		{"superior: better", promoteConfig(flywheel.RuleSuperior), gain(0.05, 0.01, 0.09), nil, Promoted, 0},
		{"superior: equal", promoteConfig(flywheel.RuleSuperior), gain(0, -0.015, 0.015), nil, Rejected, 0},
		{"superior: inconclusive is rejected", promoteConfig(flywheel.RuleSuperior), gain(0.02, -0.05, 0.09), nil, Rejected, 0},
		{"superior: below min_improvement", strict, gain(0.005, 0.001, 0.009), nil, Rejected, 0},
		{"superior: the anchor is not consulted", promoteConfig(flywheel.RuleSuperior), gain(0.05, 0.01, 0.09), anchorAt(-0.3, -0.4, -0.2), Promoted, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.p, tc.champ, tc.anchor)
			t.Logf("%s: %s", d.Outcome, d.Reason)
			if d.Outcome != tc.want {
				t.Fatalf("outcome %s, want %s", d.Outcome, tc.want)
			}
			if d.Outcome != Rejected && d.Anchor != tc.wantAnchor {
				t.Fatalf("anchor v%d, want v%d", d.Anchor, tc.wantAnchor)
			}
			if d.Rule == flywheel.RuleNonInferior && math.Abs(d.Margin-0.02) > 1e-12 {
				t.Fatalf("margin %v, want 0.02", d.Margin)
			}
		})
	}
}

// The same rule for classifiers, by log loss (lower is better): a champion
// whose log loss is 0.50, so that the margin is 0.025.
func TestGateClassifier(t *testing.T) {
	t.Parallel()
	mc := flywheel.ModelConfig{Kind: flywheel.KindClassifier}.WithDefaults()
	cmp := func(cand, lo, hi float64) ClassifierComparison {
		return ClassifierComparison{Candidate: ClassifierEval{LogLoss: Estimate{Value: cand}}, Champion: ClassifierEval{LogLoss: Estimate{Value: 0.50}},
			LogLossDiff: Estimate{Value: cand - 0.50, Lower: lo, Upper: hi}}
	}
	for _, tc := range []struct {
		name string
		cc   ClassifierComparison
		want string
	}{
		{"better", cmp(0.45, -0.06, -0.04), Promoted},
		{"equal", cmp(0.50, -0.01, 0.01), Promoted},
		{"slightly worse, within the margin", cmp(0.51, 0.0, 0.02), Promoted},
		{"worse beyond the margin", cmp(0.60, 0.08, 0.12), Rejected},
		{"inconclusive", cmp(0.49, -0.05, 0.03), Inconclusive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, why := GateClassifier(mc, tc.cc, 1)
			t.Logf("%s: %s", out, why)
			if out != tc.want {
				t.Fatalf("outcome %s, want %s", out, tc.want)
			}
		})
	}
}

// softmaxAt is m's weights scaled by s: the same ranking, less (s < 1) or
// reversed (s < 0) sure of itself.
func softmaxAt(m *model.Model, s float32) *model.Model {
	c := m.Clone()
	for i, w := range m.Weights() {
		c.Weights()[i] = s * w
	}
	return c
}

// Repeated testing: fifty candidates in a row, each truly worse than the
// champion of its day by a quarter of the margin, judged on fresh logged
// data with known truth by the real evaluation and the real rule. Against
// the champion alone, each of them is (rightly) within the margin, and a
// chain of such promotions drifts without bound; the anchor (the last
// version shown better) bounds the total loss by the margin.
func TestSlightlyWorseCandidates(t *testing.T) {
	t.Parallel()
	const (
		candidates = 50
		step       = 0.25 // of the margin
		holdout    = 5000
	)
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Bits: 12, Interactions: [][]string{{"user", "item"}},
		Exploration: flywheel.Exploration{Policy: flywheel.Softmax, Lambda: 10}}.WithDefaults()
	start, err := model.FromConfig(mc)
	if err != nil {
		t.Fatal(err)
	}
	tr := model.NewTrainer(start, model.TrainConfig{})
	for _, ex := range logged(rand.New(rand.NewPCG(1, 2)), 20000) {
		_ = tr.LearnRanker(&ex)
	}
	best := tr.Model()
	margin := mc.Promote.Margin
	// next returns the scale of a model truly worse than the one at scale s
	// by step × margin × its value (bisection: the value falls with the scale).
	next := func(s float32) float32 {
		target := value(softmaxAt(best, s)) * (1 - step*margin)
		lo, hi := float32(-1), s
		for range 40 {
			mid := (lo + hi) / 2
			if value(softmaxAt(best, mid)) > target {
				hi = mid
			} else {
				lo = mid
			}
		}
		return lo
	}
	type chain struct {
		name            string
		anchored        bool
		champ, anchor   float32 // scales
		passed, inconcl int
	}
	chains := []*chain{{name: "champion only", champ: 1, anchor: 1}, {name: "champion and anchor", anchored: true, champ: 1, anchor: 1}}
	v0 := value(best)
	rng := rand.New(rand.NewPCG(3, 4))
	for k := 0; k < candidates; k++ {
		ex := logged(rng, holdout) // the same evidence for both chains
		for _, c := range chains {
			cs := next(c.champ)
			cand, champ := softmaxAt(best, cs), softmaxAt(best, c.champ)
			vsChamp := RankerEvidence(mc, compare(ex, cand, champ, cand, mc.Promote.Confidence), 2)
			var vsAnchor *Evidence
			if c.anchored && c.anchor != c.champ {
				e := RankerEvidence(mc, compare(ex, cand, softmaxAt(best, c.anchor), cand, mc.Promote.Confidence), 1)
				vsAnchor = &e
			}
			d := Decide(mc.Promote, vsChamp, vsAnchor)
			switch d.Outcome {
			case Promoted:
				c.passed++
				if d.Anchor == 0 {
					c.anchor = cs
				}
				c.champ = cs
			case Inconclusive:
				c.inconcl++ // no canary here: rejected
			}
		}
	}
	for _, c := range chains {
		loss := v0 - value(softmaxAt(best, c.champ))
		t.Logf("%s: %d of %d candidates (each %.0f%% of the margin worse) promoted, %d inconclusive; true value %.4f → %.4f: lost %.4f (%.1f margins of %.4f)",
			c.name, c.passed, candidates, step*100, c.inconcl, v0, v0-loss, loss, loss/(margin*v0), margin*v0)
		if c.anchored {
			// Every promotion was within the margin of the anchor, v0, at 95%:
			// the loss stays within one margin, plus the one step a type I
			// error (at most 2.5% a test) would add.
			if bound := margin * v0 * (1 + step); loss > bound {
				t.Errorf("%s: lost %.4f, more than the margin and one step (%.4f)", c.name, loss, bound)
			}
		} else if c.passed < candidates/2 {
			t.Errorf("%s: only %d of the candidates within the margin passed", c.name, c.passed)
		}
	}
}

// The slot rule on hand-made evidence: a page shown better, and slots
// whose champion's estimate is 0.40 (so that the margin is 0.02).
func TestCheckSlots(t *testing.T) {
	t.Parallel()
	page := Evidence{Against: 3, Metric: "page snips estimate", Candidate: 1.3, Reference: 1.2, Gain: Estimate{Value: 0.1, Lower: 0.05, Upper: 0.15}}
	slot := func(name string, n int, lo, hi float64) SlotEvidence {
		return SlotEvidence{Slot: name, Examples: n, Evidence: Evidence{Against: 3, Metric: "snips estimate", Candidate: 0.4 + (lo+hi)/2, Reference: 0.4,
			Gain: Estimate{Value: (lo + hi) / 2, Lower: lo, Upper: hi}}}
	}
	for _, tc := range []struct {
		name   string
		rule   string
		slots  []SlotEvidence
		want   string
		reason string // the reason begins so
	}{
		{"every slot better", "", []SlotEvidence{slot("hero", 500, 0.01, 0.09), slot("side", 500, 0.0, 0.1)}, Promoted, "page snips"},
		{"a slot slightly worse, within the margin", "", []SlotEvidence{slot("hero", 500, 0.1, 0.2), slot("side", 500, -0.03, -0.01)}, Promoted, "page snips"},
		{"a slot inconclusive", "", []SlotEvidence{slot("hero", 500, 0.1, 0.2), slot("side", 500, -0.2, 0.1)}, Promoted, "page snips"},
		{"a slot clearly worse", "", []SlotEvidence{slot("hero", 500, 0.1, 0.2), slot("side", 500, 0.1, 0.2), slot("footer", 500, -0.2, -0.03)}, Rejected, "slot footer is clearly worse"},
		{"a slot clearly worse, under superior", flywheel.RuleSuperior, []SlotEvidence{slot("hero", 500, 0.1, 0.2), slot("footer", 500, -0.2, -0.03)}, Rejected, "slot footer is clearly worse"},
		{"a slot clearly worse on too few decisions", "", []SlotEvidence{slot("hero", 500, 0.1, 0.2), slot("footer", MinSlotExamples-1, -0.2, -0.03)}, Promoted, "page snips"},
		{"two slots clearly worse", "", []SlotEvidence{slot("hero", 500, -0.3, -0.1), slot("footer", 500, -0.2, -0.03)}, Rejected, "slot hero is clearly worse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := promoteConfig(tc.rule)
			d := CheckSlots(p, Decide(p, page, nil), tc.slots)
			t.Logf("%s: %s", d.Outcome, d.Reason)
			if d.Outcome != tc.want || !strings.HasPrefix(d.Reason, tc.reason) {
				t.Fatalf("%s (%s); want %s, the reason beginning %q", d.Outcome, d.Reason, tc.want, tc.reason)
			}
			for _, sl := range d.Slots {
				if math.Abs(sl.Margin-0.02) > 1e-12 || sl.Judged != (sl.Examples >= MinSlotExamples) {
					t.Fatalf("slot %s: margin %v, judged %v", sl.Slot, sl.Margin, sl.Judged)
				}
			}
		})
	}
}
