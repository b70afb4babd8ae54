package retrain

import (
	"math"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

// Estimate is an off-policy estimate of a policy's expected reward.
type Estimate struct {
	Value float64 `json:"value"`
	Lower float64 `json:"lower"`
	Upper float64 `json:"upper"`
}

// Evaluation is a policy's estimated value on the holdout by three
// estimators, with the effective sample size of its importance weights.
type Evaluation struct {
	IPS   Estimate `json:"ips"`
	SNIPS Estimate `json:"snips"`
	DR    Estimate `json:"dr"`
	ESS   float64  `json:"ess"`
	N     int      `json:"n"`
}

// Get returns the estimate by name (ips, snips, dr).
func (e Evaluation) Get(estimator string) Estimate {
	switch estimator {
	case "ips":
		return e.IPS
	case "dr":
		return e.DR
	}
	return e.SNIPS
}

// Comparison is the candidate and the champion on the same events, with the
// paired differences of their estimates.
type Comparison struct {
	Candidate Evaluation `json:"candidate"`
	Champion  Evaluation `json:"champion"`
	// Diff is candidate minus champion by IPS, DiffSNIPS and DiffDR by the
	// other two, each with an interval from the paired per-event terms (so
	// what both policies share cancels out).
	Diff      Estimate `json:"diff"`
	DiffSNIPS Estimate `json:"diff_snips"`
	DiffDR    Estimate `json:"diff_dr"`
	// Slots and Page are set when the examples held slots of pages
	// (multi-slot rank requests): the comparison on each slot's decisions,
	// by slot id, and on whole pages (slots.go). Decisions that are no slot
	// of a page are one slot, SingleSlot, and each is a page of its own.
	Slots []SlotComparison `json:"slots,omitempty"`
	Page  *Comparison      `json:"page,omitempty"`
	// SlotsOmitted says why Slots and Page are not set although the
	// examples held slots of pages.
	SlotsOmitted string `json:"slots_omitted,omitempty"`
}

// DiffFor returns the paired difference by estimator (ips, snips, dr).
func (c Comparison) DiffFor(estimator string) Estimate {
	switch estimator {
	case "ips":
		return c.Diff
	case "dr":
		return c.DiffDR
	}
	return c.DiffSNIPS
}

// comparer accumulates, one logged example at a time, what Comparison needs:
// sums and sums of products of each policy's per-event terms, so memory stays
// flat however many examples are judged. Examples that are slots of a page
// (flywheel.Example.Slot) are also summed per slot and per page (slots.go),
// which needs them in time order, as the store streams them.
type comparer struct {
	cand, champ *policyMemo
	q           *model.Model
	z           float64
	rq          model.Ranking
	pairSums              // every example
	single      pairSums  // the examples that are no slot of a page
	slots       *slotSums // nil until the first slot of a page
}

// terms are one example's per-event terms under both policies: importance
// weight w, w·reward and the doubly robust term; a the candidate's, b the
// champion's.
type terms struct{ wa, wra, dra, wb, wrb, drb float64 }

// pairSums are the sums over examples of two policies' terms and of their
// products: everything a Comparison is computed from.
type pairSums struct {
	n    float64
	a, b policySums
	// cross sums of the two policies' terms, for the paired intervals
	wrAwrB, wrAwB, wAwrB, wAwB, drAdrB float64
	diff, diff2                        float64 // IPS: candidate term minus champion term
	ddr, ddr2                          float64 // DR
}

type policySums struct {
	w, wr, w2, wr2, wrw float64 // importance weight w and w·reward
	dr, dr2             float64 // doubly robust term
}

func (s *policySums) add(w, wr, dr float64) {
	s.w += w
	s.wr += wr
	s.w2 += w * w
	s.wr2 += wr * wr
	s.wrw += wr * w
	s.dr += dr
	s.dr2 += dr * dr
}

func (s *pairSums) add(t *terms) {
	s.n++
	s.a.add(t.wa, t.wra, t.dra)
	s.b.add(t.wb, t.wrb, t.drb)
	s.wrAwrB += t.wra * t.wrb
	s.wrAwB += t.wra * t.wb
	s.wAwrB += t.wa * t.wrb
	s.wAwB += t.wa * t.wb
	s.drAdrB += t.dra * t.drb
	s.diff += t.wra - t.wrb
	s.diff2 += (t.wra - t.wrb) * (t.wra - t.wrb)
	s.ddr += t.dra - t.drb
	s.ddr2 += (t.dra - t.drb) * (t.dra - t.drb)
}

func newComparer(cand, champ, q *model.Model, confidence float64) *comparer {
	return &comparer{cand: &policyMemo{m: cand}, champ: &policyMemo{m: champ}, q: q, z: flywheel.TwoSidedZ(confidence)}
}

// policyMemo is a model's policy on the example last asked about, so that
// judges sharing a model (the candidate, judged against the champion and
// against the anchor) score each example once. With version set, an
// example that version served is not scored at all: serving logged the
// version's exact policy with it, the very probabilities Policy would give
// (the same artifact, γ included), so they are taken from the log.
type policyMemo struct {
	m       *model.Model
	version int // the registered version m is; 0: unknown (a candidate)
	ex      *flywheel.Example
	r       model.Ranking
	logged  bool // r holds ex's logged probabilities and no scores
}

func (p *policyMemo) policy(ex *flywheel.Example) *model.Ranking {
	if p.ex == ex {
		return &p.r
	}
	p.ex = ex
	p.logged = p.version > 0 && ex.Version == p.version && len(ex.Probabilities) == ex.NumActions()
	if p.logged {
		p.r.Probabilities = append(p.r.Probabilities[:0], ex.Probabilities...)
		p.r.Scores = p.r.Scores[:0]
	} else {
		p.m.PolicyExample(ex, &p.r)
	}
	return &p.r
}

// add judges both policies on one logged example.
func (c *comparer) add(ex *flywheel.Example) {
	p := ex.Probabilities[ex.ChosenIndex]
	rc, rh := c.cand.policy(ex), c.champ.policy(ex)
	q := rc // the reward model is usually the candidate: its scores are at hand
	if c.q != c.cand.m || c.cand.logged {
		c.q.PolicyExample(ex, &c.rq)
		q = &c.rq
	}
	term := func(r *model.Ranking) (w, wr, dr float64) {
		w = r.Probabilities[ex.ChosenIndex] / p
		wr = w * ex.Reward
		dm := 0.0
		for j, pj := range r.Probabilities {
			dm += pj * q.Scores[j]
		}
		dr = dm + w*(ex.Reward-q.Scores[ex.ChosenIndex])
		return w, wr, dr
	}
	var t terms
	t.wa, t.wra, t.dra = term(rc)
	t.wb, t.wrb, t.drb = term(rh)
	c.pairSums.add(&t)
	page, slot, ok := ex.Slot()
	if !ok {
		c.single.add(&t)
		return
	}
	if c.slots == nil {
		c.slots = newSlotSums()
	}
	c.slots.add(ex.TimeMs(), page, slot, &t)
}

// fromSums is the mean of n values with the given sum and sum of squares,
// with its interval.
func fromSums(n, sum, sum2, z float64) Estimate {
	if n == 0 {
		return Estimate{}
	}
	m := sum / n
	se := 0.0
	if n > 1 {
		se = math.Sqrt(math.Max(sum2-n*m*m, 0) / (n - 1) / n)
	}
	return Estimate{Value: m, Lower: m - z*se, Upper: m + z*se}
}

// snips returns the SNIPS value of s and the sum of squares of the terms of
// its linearisation (delta method), (w·r - value·w) / mean(w), whose mean is 0.
func (s policySums) snips(n float64) (value, mw, sq float64) {
	if s.w <= 0 {
		return 0, 0, 0
	}
	value, mw = s.wr/s.w, s.w/n
	sq = (s.wr2 - 2*value*s.wrw + value*value*s.w2) / (mw * mw)
	return value, mw, sq
}

// result returns the comparison of everything added: of every example, and,
// when there were slots of pages, of each slot and of the pages.
func (c *comparer) result() Comparison {
	out := c.pairSums.result(c.z)
	if c.slots != nil {
		c.slots.compare(&out, &c.single, c.z)
	}
	return out
}

// result returns the comparison of the examples summed in s.
func (s *pairSums) result(z float64) Comparison {
	n := s.n
	eval := func(s policySums) Evaluation {
		ev := Evaluation{N: int(n), IPS: fromSums(n, s.wr, s.wr2, z), DR: fromSums(n, s.dr, s.dr2, z)}
		if v, _, sq := s.snips(n); s.w > 0 {
			e := fromSums(n, 0, sq, z)
			ev.SNIPS = Estimate{Value: v, Lower: v + e.Lower, Upper: v + e.Upper}
			ev.ESS = s.w * s.w / s.w2
		}
		return ev
	}
	out := Comparison{Candidate: eval(s.a), Champion: eval(s.b), Diff: fromSums(n, s.diff, s.diff2, z), DiffDR: fromSums(n, s.ddr, s.ddr2, z)}
	sa, mwa, sqa := s.a.snips(n)
	sb, mwb, sqb := s.b.snips(n)
	if mwa > 0 && mwb > 0 {
		cross := (s.wrAwrB - sb*s.wrAwB - sa*s.wAwrB + sa*sb*s.wAwB) / (mwa * mwb)
		e := fromSums(n, 0, sqa+sqb-2*cross, z)
		out.DiffSNIPS = Estimate{Value: sa - sb, Lower: sa - sb + e.Lower, Upper: sa - sb + e.Upper}
	}
	return out
}

// compare evaluates both policies on the examples. q is the reward model
// used by the doubly robust estimator (the same for both policies).
func compare(examples []flywheel.Example, cand, champ, q *model.Model, confidence float64) Comparison {
	c := newComparer(cand, champ, q, confidence)
	for i := range examples {
		c.add(&examples[i])
	}
	return c.result()
}
