package retrain

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
)

// Evaluation per slot and per page. A multi-slot rank request logs each slot
// of its page as a decision of its own, event id PAGE#SLOT (serve/slots.go),
// with the exact probability of its choice given the earlier slots' choices.
// Every estimate above pools them, one slot decision one event. When the
// examples hold slots of pages, the comparer also gives:
//
//   - per slot: the comparison (both policies by IPS, SNIPS and DR, and the
//     paired differences) on that slot's decisions alone, by slot id. The
//     decisions that are no slot of a page form one more slot, SingleSlot;
//   - for the page: the page is the unit. Each policy's page value by an
//     estimator is the sum over slots of the slot's estimate, each weighted
//     by the share of pages that have the slot (1 when every page has every
//     slot, as when a product always ranks the same slots: then it is the
//     plain sum over slots); for IPS and DR that is the mean over pages of
//     the sum of the page's per-event terms. Its interval, and that of the
//     paired difference, come from the per-page sums of the per-event
//     (paired) terms, SNIPS's linearised (delta method) ones: the slots of a
//     page share their user, their context and the earlier slots' choices,
//     so their terms are correlated, and only the page is an independent
//     draw. A decision that is no slot of a page is a page of its own. The
//     page's ESS is the smallest of its slots' (of those with
//     MinSlotExamples decisions, when any has).
//
// Pages are told apart by their event id; the slots of a page share their
// time (serve logs them with one), so the examples must come in time order,
// as the store streams them: a page is complete when a later time comes.
// Memory grows with the slot ids (at most maxSlotIDs of them, beyond which
// the per-slot figures are left out, with the reason) and the pages of one
// millisecond, not with the examples.

// SingleSlot is the slot of the decisions that are no slot of a page, in
// Comparison.Slots: no slot id can be it.
const SingleSlot = "(single)"

// maxSlotIDs bounds the distinct slot ids compared per slot.
const maxSlotIDs = 64

// SlotComparison is the comparison on one slot's decisions.
type SlotComparison struct {
	Slot string `json:"slot"`
	Comparison
}

// The components of a slot's terms on one page: each policy's importance
// weighted reward (A), importance weight (B) and doubly robust term (D); a
// is the candidate, b the champion.
const (
	cAa = iota
	cBa
	cDa
	cAb
	cBb
	cDb
	nComp
)

type vec [nComp]float64

type block [nComp][nComp]float64

// slotSums sums the terms of the slots of pages per slot and the products
// of the terms of two slots of one page.
type slotSums struct {
	names []string
	index map[string]int
	per   []*pairSums // by slot index
	cross map[[2]int]*block
	pages float64
	// the pages of the time openMs not yet summed, by page id
	openMs  uint64
	open    map[string][]slotTerm
	omitted bool
}

type slotTerm struct {
	k int
	x vec
}

func newSlotSums() *slotSums {
	return &slotSums{index: map[string]int{}, cross: map[[2]int]*block{}, open: map[string][]slotTerm{}}
}

func (t *terms) vec() vec { return vec{t.wra, t.wa, t.dra, t.wrb, t.wb, t.drb} }

// add sums slot slot of page, logged at tsMs.
func (s *slotSums) add(tsMs uint64, page, slot string, t *terms) {
	if s.omitted {
		return
	}
	k, ok := s.index[slot]
	if !ok {
		if len(s.names) == maxSlotIDs {
			s.omitted, s.per, s.cross, s.open = true, nil, nil, nil
			return
		}
		k = len(s.names)
		s.index[slot], s.names, s.per = k, append(s.names, slot), append(s.per, &pairSums{})
	}
	s.per[k].add(t)
	if tsMs != s.openMs {
		s.flush()
		s.openMs = tsMs
	}
	s.open[page] = append(s.open[page], slotTerm{k: k, x: t.vec()})
}

// flush sums the open pages, in the order of their ids: floating-point sums
// depend on their order, and a map's is drawn at random, so that the same
// examples gave figures that differed in the last bits from run to run.
func (s *slotSums) flush() {
	for _, page := range slices.Sorted(maps.Keys(s.open)) {
		ts := s.open[page]
		s.pages++
		for i := range ts {
			for j := i + 1; j < len(ts); j++ {
				x, y := &ts[i], &ts[j]
				if x.k == y.k { // one slot twice on a page: event ids are unique, so not from serve
					continue
				}
				if x.k > y.k {
					x, y = y, x
				}
				b := s.cross[[2]int{x.k, y.k}]
				if b == nil {
					b = &block{}
					s.cross[[2]int{x.k, y.k}] = b
				}
				for r := range nComp {
					for c := range nComp {
						b[r][c] += x.x[r] * y.x[c]
					}
				}
			}
		}
	}
	clear(s.open)
}

// sums returns the sums of the terms of s's examples.
func (s *pairSums) sums() vec {
	return vec{s.a.wr, s.a.w, s.a.dr, s.b.wr, s.b.w, s.b.dr}
}

// products returns the sums of the products of the terms of s's examples
// (those the estimates use: none of a D with an A or a B).
func (s *pairSums) products() block {
	var m block
	set := func(i, j int, v float64) { m[i][j], m[j][i] = v, v }
	set(cAa, cAa, s.a.wr2)
	set(cAa, cBa, s.a.wrw)
	set(cBa, cBa, s.a.w2)
	set(cDa, cDa, s.a.dr2)
	set(cAb, cAb, s.b.wr2)
	set(cAb, cBb, s.b.wrw)
	set(cBb, cBb, s.b.w2)
	set(cDb, cDb, s.b.dr2)
	set(cAa, cAb, s.wrAwrB)
	set(cAa, cBb, s.wrAwB)
	set(cBa, cAb, s.wAwrB)
	set(cBa, cBb, s.wAwB)
	set(cDa, cDb, s.drAdrB)
	return m
}

// compare puts into out the comparison per slot and for the page, single
// being the decisions that are no slot of a page.
func (s *slotSums) compare(out *Comparison, single *pairSums, z float64) {
	if s.omitted {
		out.SlotsOmitted = fmt.Sprintf("more than %d slot ids: not compared per slot and page", maxSlotIDs)
		return
	}
	s.flush()
	groups := s.groups(single)
	for _, g := range groups {
		out.Slots = append(out.Slots, SlotComparison{Slot: g.name, Comparison: g.sums.result(z)})
	}
	p := newPageSums(groups, s.cross, s.pages+single.n, z)
	page := Comparison{Candidate: p.eval(1, 0, out.Slots), Champion: p.eval(0, 1, out.Slots),
		Diff: p.figure("ips", 1, -1), DiffSNIPS: p.figure("snips", 1, -1), DiffDR: p.figure("dr", 1, -1)}
	out.Page = &page
}

// slotGroup is one of the groups the page is summed over: a slot, or the
// decisions that are no slot of a page (pages of one, no cross products).
type slotGroup struct {
	k    int // slot index, -1 for single
	name string
	sums *pairSums
}

// groups returns the slots by id, then single when it has decisions.
func (s *slotSums) groups(single *pairSums) []slotGroup {
	order := make([]int, len(s.names))
	for k := range order {
		order[k] = k
	}
	sort.Slice(order, func(i, j int) bool { return s.names[order[i]] < s.names[order[j]] })
	groups := make([]slotGroup, 0, len(order)+1)
	for _, k := range order {
		groups = append(groups, slotGroup{k, s.names[k], s.per[k]})
	}
	if single.n > 0 {
		groups = append(groups, slotGroup{-1, SingleSlot, single})
	}
	return groups
}

// pageSums are the sums the page's figures are estimated from: per group,
// the sums of its terms and of their products, and the cross products of
// two slots of one page.
type pageSums struct {
	groups []slotGroup
	sums   []vec
	prods  []block
	cross  map[[2]int]*block
	pages  float64
	z      float64
}

func newPageSums(groups []slotGroup, cross map[[2]int]*block, pages, z float64) *pageSums {
	p := &pageSums{groups: groups, sums: make([]vec, len(groups)), prods: make([]block, len(groups)), cross: cross, pages: pages, z: z}
	for g, gr := range groups {
		p.sums[g], p.prods[g] = gr.sums.sums(), gr.sums.products()
	}
	return p
}

// estimate returns the sum over pages of the per-page sums of the terms
// weighted by c (per group), and the sum of their squares.
func (p *pageSums) estimate(c []vec) (lin, quad float64) {
	for g := range p.groups {
		for i := range nComp {
			lin += c[g][i] * p.sums[g][i]
			for j := range nComp {
				quad += c[g][i] * p.prods[g][i][j] * c[g][j]
			}
		}
	}
	for _, key := range slices.SortedFunc(maps.Keys(p.cross), func(a, b [2]int) int { return cmp.Or(a[0]-b[0], a[1]-b[1]) }) { // in order, as flush
		b := p.cross[key]
		gi, gj := -1, -1
		for g, gr := range p.groups {
			if gr.k == key[0] {
				gi = g
			}
			if gr.k == key[1] {
				gj = g
			}
		}
		for i := range nComp {
			for j := range nComp {
				quad += 2 * c[gi][i] * b[i][j] * c[gj][j]
			}
		}
	}
	return lin, quad
}

// coefs returns the weights of an estimator's terms for the candidate
// (sign 1, 0), the champion (0, 1) or the difference (1, -1), and for SNIPS
// its value (the linearised terms have mean 0).
func (p *pageSums) coefs(est string, ca, cb float64) ([]vec, float64) {
	c := make([]vec, len(p.groups))
	value := 0.0
	for g, gr := range p.groups {
		for _, pol := range []struct {
			sign     float64
			a, b, d  int
			policy   policySums
			hasTerms bool
		}{{ca, cAa, cBa, cDa, gr.sums.a, ca != 0}, {cb, cAb, cBb, cDb, gr.sums.b, cb != 0}} {
			if !pol.hasTerms {
				continue
			}
			switch est {
			case "ips":
				c[g][pol.a] = pol.sign
			case "dr":
				c[g][pol.d] = pol.sign
			default:
				v, mw, _ := pol.policy.snips(gr.sums.n)
				if mw > 0 {
					c[g][pol.a], c[g][pol.b] = pol.sign/mw, -pol.sign*v/mw
					value += pol.sign * v * gr.sums.n / p.pages
				}
			}
		}
	}
	return c, value
}

// figure returns the page's estimate by est (ips, snips or dr) of the
// candidate (ca, cb = 1, 0), the champion (0, 1) or the difference (1, -1).
func (p *pageSums) figure(est string, ca, cb float64) Estimate {
	c, v := p.coefs(est, ca, cb)
	lin, quad := p.estimate(c)
	if est != "snips" {
		return fromSums(p.pages, lin, quad, p.z)
	}
	e := fromSums(p.pages, 0, quad, p.z) // the linearised terms' mean is 0
	return Estimate{Value: v, Lower: v + e.Lower, Upper: v + e.Upper}
}

// eval returns the page's evaluation of the candidate (ca, cb = 1, 0) or
// the champion (0, 1), its ESS the smallest of the slots' with
// MinSlotExamples decisions (of all slots' when none has).
func (p *pageSums) eval(ca, cb float64, slots []SlotComparison) Evaluation {
	ev := Evaluation{N: int(p.pages), IPS: p.figure("ips", ca, cb), SNIPS: p.figure("snips", ca, cb), DR: p.figure("dr", ca, cb)}
	least, leastJudged := math.Inf(1), math.Inf(1)
	for _, sl := range slots {
		e := sl.Candidate.ESS
		if cb != 0 {
			e = sl.Champion.ESS
		}
		least = math.Min(least, e)
		if sl.Candidate.N >= MinSlotExamples {
			leastJudged = math.Min(leastJudged, e)
		}
	}
	ev.ESS = least
	if !math.IsInf(leastJudged, 1) {
		ev.ESS = leastJudged
	}
	return ev
}

// SlotsTable renders, for a person, the comparison per slot and for the
// page by estimator (ips, snips, dr), candidate version candV against
// champion champV: "" when c has no slots.
func (c Comparison) SlotsTable(estimator string, candV, champV int) string {
	if c.SlotsOmitted != "" {
		return "  per slot: " + c.SlotsOmitted + "\n"
	}
	if c.Page == nil {
		return ""
	}
	if estimator == "" {
		estimator = "snips"
	}
	est := func(e Estimate) string { return fmt.Sprintf("%.4f [%.4f, %.4f]", e.Value, e.Lower, e.Upper) }
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  per slot and for the page, by %s:\n", estimator)
	fmt.Fprintf(tw, "  slot\tdecisions\tv%d\tv%d\tpaired difference\tESS v%d / v%d\n", candV, champV, candV, champV)
	row := func(name, n string, cmp Comparison) {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%.0f / %.0f\n", name, n, est(cmp.Candidate.Get(estimator)), est(cmp.Champion.Get(estimator)),
			est(cmp.DiffFor(estimator)), cmp.Candidate.ESS, cmp.Champion.ESS)
	}
	for _, sl := range c.Slots {
		row(sl.Slot, fmt.Sprint(sl.Candidate.N), sl.Comparison)
	}
	row("page", fmt.Sprintf("%d pages", c.Page.Candidate.N), *c.Page)
	tw.Flush()
	return b.String()
}
