package retrain

import (
	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

// What a candidate is judged on (retrain.evidence).
//
// Under progressive validation, the default, the evidence is every example
// since the references' cutoff (the first time neither the champion nor its
// anchor learned from), and the candidate learns all of them: each is
// scored by the candidate as learned so far, and by the references, just
// before the candidate learns it, in time order. So every new decision is
// both evidence and training data, none is set aside, and the evidence
// grows with the time since the champion's cutoff: while candidates are
// rejected, each next one is judged on more. What is judged is the learner
// the candidate is the end of, served from the cutoff on: the candidate
// itself has learned at least as much as any of those predictions did, so
// the estimate leans against it, never towards it.
//
// Under a holdout the candidate does not learn the newest retrain.holdout
// share of the examples since the cutoff, and is judged on them once
// trained: a fifth of the evidence by default, and a fifth less to learn.
// A trainer from zero cannot score before it has fitted its numeric bins:
// under progressive validation it fits them when it reaches the cutoff, on
// the examples it has learned by then (it otherwise waits for
// model.FitExamples), and a run whose window holds fewer than
// model.MinFitExamples examples before the cutoff is judged on a holdout
// instead: the first run after a bootstrap version, usually. So is every
// run with retrain.passes above 1: progressive validation judges the first
// pass, and later passes could make the served model worse than that. The manifest
// records where the evidence began, so that a reproduction fits the bins
// where the run did.

// planEvidence plans the window of a run whose trainer is ready (it can
// score before learning its first example) or not, and what it is judged
// on: progressive validation (rc.Evidence) from cutoff when the trainer can
// score by then, else the holdout (planWindow). It returns the window and
// how many of its training examples are at or after cutoff.
func planEvidence(sz sizer, fromMs, cutoff uint64, rc flywheel.RetrainConfig, ready bool) (window, int, error) {
	if rc.Evidence == flywheel.EvidenceProgressive && rc.Passes <= 1 {
		w, fresh, err := planWindow(sz, fromMs, cutoff, 0)
		if err != nil {
			return w, 0, err
		}
		if ready || w.rows-fresh >= model.MinFitExamples {
			w.progressive, w.evidenceFrom = true, cutoff
			return w, fresh, nil
		}
	}
	return planWindow(sz, fromMs, cutoff, rc.Holdout)
}

// progressive judges a candidate while it learns: every valid example at
// or after from, before the trainer learns it. With no newJudge (a
// reproduction) it only fits the trainer's bins where the run did.
type progressive struct {
	from       uint64 // Unix ms
	classifier bool
	tr         *model.Trainer
	newJudge   func(*model.Model) judge // nil: judge nothing
	reached    bool                     // an example at or after from was seen
	judge      judge                    // made on the first example judged
	judged     int
}

// before judges ex, one of the first pass's, if it is evidence; the
// trainer learns it next.
func (p *progressive) before(ex *flywheel.Example) {
	if p == nil || uint64(ex.Time.UnixMilli()) < p.from {
		return
	}
	if !p.reached {
		p.reached = true
		p.tr.Fit() // the bins, on what it learned before the cutoff
	}
	if p.newJudge == nil || !p.classifier && model.CheckRanker(ex) != nil {
		return // an unusable example is not learned either
	}
	if p.judge == nil {
		m := p.tr.Learning()
		if m == nil {
			return // fewer than model.MinFitExamples usable examples before the cutoff
		}
		p.judge = p.newJudge(m)
	}
	p.judge.add(ex)
	p.judged++
}

// noEvidence is the decision on a candidate that no usable example since
// the references' cutoff judged.
func noEvidence(rule string) Decision {
	return Decision{Rule: rule, Outcome: Rejected, Reason: "no usable example since the references' cutoff to judge the candidate on"}
}
