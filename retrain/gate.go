package retrain

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/deploy"
	"github.com/flywheel-dev/flywheel/model"
)

// Inconclusive is the gate's outcome when the offline evidence can tell
// neither "worse than the champion beyond the margin" nor "not worse at
// all": with a canary configured the candidate goes to the canary, where live
// traffic decides (the canary judge reads this outcome from the version's
// metrics, under "gate"); without one it is rejected.
const Inconclusive = deploy.Inconclusive

// Evidence is the candidate against one reference version (the champion, or
// the anchor) on the same holdout, oriented so that above 0 is better.
type Evidence struct {
	Against int    `json:"against"` // the reference version
	Metric  string `json:"metric"`  // e.g. "snips estimate", "log loss"
	// LowerIsBetter says Candidate and Reference are losses (classifiers).
	LowerIsBetter bool    `json:"lower_is_better,omitempty"`
	Candidate     float64 `json:"candidate"`
	Reference     float64 `json:"reference"`
	// Gain is the candidate's advantage per event (its estimate minus the
	// reference's, or the reference's loss minus its loss), with the
	// promote.confidence interval of the paired difference.
	Gain Estimate `json:"gain"`
}

// RankerEvidence is cmp's paired difference by mc's estimator, against
// reference version against.
func RankerEvidence(mc flywheel.ModelConfig, cmp Comparison, against int) Evidence {
	est := mc.Promote.Estimator
	return Evidence{Against: against, Metric: est + " estimate", Candidate: cmp.Candidate.Get(est).Value,
		Reference: cmp.Champion.Get(est).Value, Gain: cmp.DiffFor(est)}
}

// ClassifierEvidence is cc's paired log loss difference against reference
// version against, negated so that above 0 is better.
func ClassifierEvidence(cc ClassifierComparison, against int) Evidence {
	d := cc.LogLossDiff
	return Evidence{Against: against, Metric: "log loss", LowerIsBetter: true, Candidate: cc.Candidate.LogLoss.Value,
		Reference: cc.Champion.LogLoss.Value, Gain: Estimate{Value: 0 - d.Value, Lower: 0 - d.Upper, Upper: 0 - d.Lower}}
}

// Decision is the gate's verdict on a candidate, recorded in its version's
// metrics under "gate".
type Decision struct {
	Rule    string `json:"rule"`
	Outcome string `json:"outcome"` // Promoted, Inconclusive or Rejected
	Reason  string `json:"reason"`
	// Margin is promote.margin in the metric's units, against the champion.
	Margin float64 `json:"margin"`
	// Anchor is the version this candidate, once it is the champion, keeps
	// as its anchor: the newest version shown better than the one before it,
	// which no later champion may fall more than the margin below. 0 means
	// the candidate itself.
	Anchor   int       `json:"anchor"`
	Champion Evidence  `json:"champion"`
	Versus   *Evidence `json:"anchor_evidence,omitempty"` // against the anchor, when it is not the champion
	// Slots is the evidence against the champion per slot when the holdout
	// held slots of pages: Champion and Versus are then the page's, and a
	// slot clearly worse rejects the candidate (CheckSlots).
	Slots []SlotEvidence `json:"slots,omitempty"`
}

// MinSlotExamples is how many holdout decisions a slot needs for the gate
// to judge it on its own (CheckSlots).
const MinSlotExamples = 100

// SlotEvidence is the candidate against the champion on one slot's
// decisions.
type SlotEvidence struct {
	Slot     string `json:"slot"`
	Examples int    `json:"examples"`
	Evidence
	// Margin is promote.margin × |the champion's estimate on the slot|.
	Margin float64 `json:"margin"`
	// Judged: the slot has MinSlotExamples decisions or more; Worse: it is
	// judged and clearly worse, its gain's interval wholly below −Margin.
	Judged bool `json:"judged"`
	Worse  bool `json:"worse"`
}

// PageEvidence is the page's paired difference in cmp (which has one) by
// mc's estimator, against reference version against.
func PageEvidence(mc flywheel.ModelConfig, cmp Comparison, against int) Evidence {
	e := RankerEvidence(mc, *cmp.Page, against)
	e.Metric = "page " + e.Metric
	return e
}

// SlotsEvidence is each slot's paired difference in cmp by mc's estimator,
// against champion version against.
func SlotsEvidence(mc flywheel.ModelConfig, cmp Comparison, against int) []SlotEvidence {
	out := make([]SlotEvidence, 0, len(cmp.Slots))
	for _, sl := range cmp.Slots {
		e := RankerEvidence(mc, sl.Comparison, against)
		out = append(out, SlotEvidence{Slot: sl.Slot, Examples: sl.Candidate.N, Evidence: e})
	}
	return out
}

// CheckSlots applies the slot rule to d, the decision on the page: a slot
// with MinSlotExamples holdout decisions or more whose gain's interval lies
// wholly below −m (U < −m, m = p.Margin × |the champion's estimate on the
// slot|: clearly worse beyond the margin) rejects the candidate, whatever
// the page says, under either rule; the reason names the slot. The page
// can hide a slot made worse by gains on the others; a slot with fewer
// decisions is reported and not judged. It returns d with the slots'
// evidence.
func CheckSlots(p flywheel.PromoteConfig, d Decision, slots []SlotEvidence) Decision {
	var worse []string
	for i := range slots {
		sl := &slots[i]
		sl.Margin = p.Margin * math.Abs(sl.Reference)
		sl.Judged = sl.Examples >= MinSlotExamples
		sl.Worse = sl.Judged && sl.Gain.Upper < -sl.Margin
		if sl.Worse {
			worse = append(worse, fmt.Sprintf("slot %s is clearly worse: %s, margin %.4f: the interval lies below −margin",
				sl.Slot, sl.figures(p.Confidence), sl.Margin))
		}
	}
	d.Slots = slots
	if len(worse) > 0 {
		d.Outcome, d.Reason = Rejected, strings.Join(worse, "; ")+"; on the page: "+d.Reason
	}
	return d
}

// Gate decides on a ranker judged by cmp against champion version champV
// alone (no anchor): Promoted, Inconclusive or Rejected, with the reason.
// A comparison with pages is judged on the page and each slot, as a
// retrain's gate does.
func Gate(mc flywheel.ModelConfig, cmp Comparison, champV int) (outcome, reason string) {
	if cmp.Page != nil {
		d := CheckSlots(mc.Promote, Decide(mc.Promote, PageEvidence(mc, cmp, champV), nil), SlotsEvidence(mc, cmp, champV))
		return d.Outcome, d.Reason
	}
	d := Decide(mc.Promote, RankerEvidence(mc, cmp, champV), nil)
	return d.Outcome, d.Reason
}

// GateClassifier decides on a classifier judged by cc against champion
// version champV alone (no anchor), by log loss: Promoted, Inconclusive or
// Rejected, with the reason.
func GateClassifier(mc flywheel.ModelConfig, cc ClassifierComparison, champV int) (outcome, reason string) {
	d := Decide(mc.Promote, ClassifierEvidence(cc, champV), nil)
	return d.Outcome, d.Reason + classifierFigures(cc)
}

// Decide applies p's rule to the evidence against the champion and, under
// the non-inferior rule, against the champion's anchor (nil when the
// champion is its own anchor). With c the confidence, [L, U] the c interval
// of the candidate's gain over a reference and m = p.Margin × |the
// reference's figure|:
//
//   - superior: Promoted when the gain's estimate is at least
//     p.MinImprovement and L > 0; else Rejected.
//   - non-inferior, against each reference: Promoted when L > −m (not worse
//     beyond the margin); Inconclusive when L ≤ −m and U ≥ 0 (the interval
//     holds both −m and 0: the data cannot tell worse-beyond-the-margin from
//     not-worse); Rejected when U < 0 and L ≤ −m (worse, and not shown to
//     be within the margin). The outcome is the worse of the two.
//
// Promoted and Inconclusive become Rejected under policy manual. The
// promoted candidate's anchor is itself when L > 0 against the anchor (it is
// shown better than the reference), else the champion's anchor: every
// champion stays within the margin of the best version shown better, so a
// chain of slightly worse promotions cannot drift.
//
// When the holdout holds slots of pages (multi-slot rank requests), the
// evidence Decide is given is the page's (PageEvidence: the page's value is
// the sum over its slots, its interval from per-page sums), and CheckSlots
// then rejects a candidate clearly worse on any one slot.
func Decide(p flywheel.PromoteConfig, champ Evidence, anchor *Evidence) Decision {
	d := Decision{Rule: p.Rule, Champion: champ, Versus: anchor}
	if p.Rule == flywheel.RuleSuperior {
		d.Outcome, d.Reason = superior(p, champ)
	} else {
		var m float64
		d.Outcome, d.Reason, m = nonInferior(p, champ, "champion")
		d.Margin = m
		ref := champ
		if anchor != nil {
			ref = *anchor
			out, why, _ := nonInferior(p, *anchor, "anchor")
			if rank(out) < rank(d.Outcome) {
				d.Outcome, d.Reason = out, why+"; against the champion: "+d.Reason
			} else {
				d.Reason += "; against the anchor: " + why
			}
		}
		if ref.Gain.Lower <= 0 {
			d.Anchor = ref.Against
		}
	}
	if d.Outcome != Rejected && p.Policy == "manual" {
		d.Outcome, d.Reason = Rejected, d.Reason+"; promotion is manual"
	}
	return d
}

// rank orders outcomes from worst to best.
func rank(outcome string) int {
	switch outcome {
	case Promoted:
		return 2
	case Inconclusive:
		return 1
	}
	return 0
}

func (e Evidence) figures(confidence float64) string {
	return fmt.Sprintf("%s %.4f vs v%d %.4f: gain %.4f, %.0f%% interval [%.4f, %.4f]",
		e.Metric, e.Candidate, e.Against, e.Reference, e.Gain.Value, confidence*100, e.Gain.Lower, e.Gain.Upper)
}

func superior(p flywheel.PromoteConfig, e Evidence) (outcome, reason string) {
	f := e.figures(p.Confidence)
	switch {
	case e.Gain.Value < p.MinImprovement:
		return Rejected, fmt.Sprintf("%s: gain below the required %.4f", f, p.MinImprovement)
	case e.Gain.Lower <= 0:
		return Rejected, f + ": the interval does not lie above 0"
	}
	return Promoted, f + ": better"
}

// nonInferior judges e under the non-inferior rule; role names the
// reference in the reason. It returns the margin in the metric's units.
func nonInferior(p flywheel.PromoteConfig, e Evidence, role string) (outcome, reason string, margin float64) {
	m := p.Margin * math.Abs(e.Reference)
	f := fmt.Sprintf("%s (%s), margin %.4f (%.0f%% of v%d's)", e.figures(p.Confidence), role, m, p.Margin*100, e.Against)
	switch {
	case e.Gain.Lower > 0:
		return Promoted, f + ": better", m
	case e.Gain.Lower > -m:
		return Promoted, f + ": not worse beyond the margin", m
	case e.Gain.Upper >= 0:
		return Inconclusive, f + ": inconclusive, the interval holds both −margin and 0", m
	}
	return Rejected, f + ": worse, and not shown to be within the margin", m
}

// anchorOf returns the anchor that version (with its registered metrics)
// carries: the version its gate recorded, or the version itself.
func anchorOf(version int, metrics json.RawMessage) int {
	var m struct {
		Gate *Decision `json:"gate"`
	}
	if json.Unmarshal(metrics, &m) != nil || m.Gate == nil || m.Gate.Anchor <= 0 || m.Gate.Anchor >= version {
		return version
	}
	return m.Gate.Anchor
}

// trainedBefore returns the first time (Unix ms) a version with this
// manifest did not learn from: every example it (and the chain it was warm
// started from) learned from is older. 0 for a version that learned nothing
// (a bootstrap) or has no manifest.
func trainedBefore(manifest json.RawMessage) uint64 {
	var man Manifest
	if json.Unmarshal(manifest, &man) != nil || man.TrainRows == 0 {
		return 0
	}
	return cutoffOf(man.DataToMs, man.HoldoutFrom)
}

// cutoffOf is the first time a version whose data ended at lastMs, with its
// holdout from holdFrom, did not learn from.
func cutoffOf(lastMs, holdFrom uint64) uint64 {
	if holdFrom > lastMs {
		return lastMs + 1
	}
	return holdFrom
}

// refs are the versions a candidate is judged against.
type refs struct {
	champV  int
	champ   *model.Model
	anchorV int          // the champion's anchor; champV when it is its own
	anchor  *model.Model // nil when the champion is its own anchor
	// cutoff is the first time neither reference learned from: the holdout
	// begins there or later.
	cutoff uint64
}

// references returns what a candidate of name is judged against: champion
// champV (decoded: champ) and, under the non-inferior rule, the anchor its
// metrics name, with the time after which neither learned anything.
func (r *Retrainer) references(ctx context.Context, name string, mc flywheel.ModelConfig, champV int, champ *model.Model) (refs, error) {
	out := refs{champV: champV, champ: champ, anchorV: champV}
	v, err := r.registry.Get(ctx, name, champV)
	if err != nil || v == nil {
		return out, err
	}
	out.cutoff = trainedBefore(v.Manifest)
	if mc.Promote.Rule == flywheel.RuleSuperior {
		return out, nil
	}
	a := anchorOf(champV, v.Metrics)
	if a == champV {
		return out, nil
	}
	av, err := r.registry.Get(ctx, name, a)
	if err != nil {
		return out, fmt.Errorf("anchor v%d of %s v%d: %w", a, name, champV, err)
	}
	if av == nil || av.Kind != mc.Kind {
		return out, nil // a version of another kind is no reference
	}
	if out.anchor, err = model.Decode(av.Artifact); err != nil {
		return out, fmt.Errorf("decode anchor %s v%d: %w", name, a, err)
	}
	out.anchorV, out.cutoff = a, max(out.cutoff, trainedBefore(av.Manifest))
	return out, nil
}

// judges fans one holdout example out to several judges.
type judges []judge

func (js judges) add(ex *flywheel.Example) {
	for _, j := range js {
		j.add(ex)
	}
}

// evaluation judges a candidate against the champion and the anchor on the
// same holdout examples.
type evaluation struct {
	champ, anchor judge // *comparer or *classJudge; anchor may be nil
}

// judges returns the judge of candidate m against refs.
func (ev *evaluation) judges(mc flywheel.ModelConfig, m *model.Model, refs refs) judge {
	cand := &policyMemo{m: m} // scored once per example for both comparisons
	against := func(ref *model.Model, version int) judge {
		if mc.Kind == flywheel.KindClassifier {
			return newClassJudge(m, ref, mc.Promote.Confidence)
		}
		// The doubly robust estimator's reward model is the candidate
		// itself: every policy is judged with the same one.
		return &comparer{cand: cand, champ: &policyMemo{m: ref, version: version}, q: m, z: flywheel.TwoSidedZ(mc.Promote.Confidence)}
	}
	ev.champ = against(refs.champ, refs.champV)
	if refs.anchor == nil {
		return ev.champ
	}
	ev.anchor = against(refs.anchor, refs.anchorV)
	return judges{ev.champ, ev.anchor}
}

// decide applies the rule to what the judges saw, and puts the comparisons
// in res and metrics.
func (ev *evaluation) decide(mc flywheel.ModelConfig, refs refs, res *Result, metrics map[string]any) Decision {
	var champ Evidence
	var anchor *Evidence
	var slots []SlotEvidence
	extra := ""
	switch j := ev.champ.(type) {
	case *comparer:
		cmp := j.result()
		res.Comparison, res.Estimator = &cmp, mc.Promote.Estimator
		metrics["evaluation"], metrics["estimator"] = cmp, mc.Promote.Estimator
		if cmp.Page != nil { // slots of pages: the rule applies to the page, and to each slot
			champ, slots = PageEvidence(mc, cmp, refs.champV), SlotsEvidence(mc, cmp, refs.champV)
			if a, ok := ev.anchor.(*comparer); ok {
				if acmp := a.result(); acmp.Page != nil {
					e := PageEvidence(mc, acmp, refs.anchorV)
					anchor = &e
				}
			}
			break
		}
		champ = RankerEvidence(mc, cmp, refs.champV)
		if a, ok := ev.anchor.(*comparer); ok {
			e := RankerEvidence(mc, a.result(), refs.anchorV)
			anchor = &e
		}
	case *classJudge:
		cc := j.result()
		res.Classification = &cc
		metrics["classification"] = cc
		champ = ClassifierEvidence(cc, refs.champV)
		if a, ok := ev.anchor.(*classJudge); ok {
			e := ClassifierEvidence(a.result(), refs.anchorV)
			anchor = &e
		}
		extra = classifierFigures(cc)
	}
	d := Decide(mc.Promote, champ, anchor)
	if slots != nil {
		d = CheckSlots(mc.Promote, d, slots)
	}
	d.Reason += extra
	return d
}

// classifierFigures are the AUC and calibration of cc, for a reason.
func classifierFigures(cc ClassifierComparison) string {
	return fmt.Sprintf(" (AUC %.3f vs %.3f, ECE %.3f vs %.3f)", cc.Candidate.AUC, cc.Champion.AUC, cc.Candidate.ECE, cc.Champion.ECE)
}
