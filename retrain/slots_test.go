package retrain

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

// A world of pages: three slots in page order, four actions, three user
// segments. The click probability of an action in a slot is 0.1, +0.5 when
// it is the slot's favourite, +0.2 when it is the segment's (so [slot, item]
// and [user, item] interactions can learn it); an engaged user (half of the
// pages) clicks corr more, another corr less, on every slot of the page: the
// slots of a page are correlated.
var (
	pageSlots = []string{"hero", "side", "footer"}
	slotBest  = []int{0, 1, 2}
	segBest   = []int{3, 0, 1}
)

func pageActions() []flywheel.Action {
	as := make([]flywheel.Action, 4)
	for i := range as {
		as[i] = flywheel.Action{ID: fmt.Sprintf("a%d", i), Features: flywheel.Features{"item": {"id": fmt.Sprintf("a%d", i)}}}
	}
	return as
}

func clickProb(slot, seg, action int) float64 {
	p := 0.1
	if action == slotBest[slot] {
		p += 0.5
	}
	if action == segBest[seg] {
		p += 0.2
	}
	return p
}

func pageModelConfig() flywheel.ModelConfig {
	return flywheel.ModelConfig{Kind: flywheel.KindRanker, Bits: 14, Interactions: [][]string{{"user", "item"}, {flywheel.SlotNamespace, "item"}},
		Exploration: flywheel.Exploration{Policy: flywheel.EpsilonGreedy, Epsilon: 0.05}}.WithDefaults()
}

// pageLog is how pages are drawn: inverted says which slots' click
// probabilities are 1 − the world's (a world whose taste moved), corr the
// engagement effect, slots how many of the page's slots are shown (3, or 2
// on every fifth page when short is set).
type pageLog struct {
	inverted map[string]bool
	corr     float64
	short    bool
}

// draw logs n pages by the uniform policy over what the earlier slots left
// (each slot a decision PAGE#SLOT, probabilities exact given the earlier
// slots), page i at t0 + i/2 ms (two pages a millisecond).
func (l pageLog) draw(rng *rand.Rand, n int, t0 time.Time, prefix string) []flywheel.Example {
	all := pageActions()
	var out []flywheel.Example
	for i := 0; i < n; i++ {
		seg := rng.IntN(3)
		lift := -l.corr
		if rng.IntN(2) == 0 {
			lift = l.corr
		}
		ts := t0.Add(time.Duration(i/2) * time.Millisecond)
		left := append([]int(nil), 0, 1, 2, 3)
		slots := len(pageSlots)
		if l.short && i%5 == 4 {
			slots = 2
		}
		for s := 0; s < slots; s++ {
			acts := make([]flywheel.Action, len(left))
			probs := make([]float64, len(left))
			for k, a := range left {
				acts[k], probs[k] = all[a], 1/float64(len(left))
			}
			k := rng.IntN(len(left))
			a := left[k]
			p := clickProb(s, seg, a)
			if l.inverted[pageSlots[s]] {
				p = 1 - p
			}
			p = math.Min(p*(1+lift), 1)
			r := 0.0
			if rng.Float64() < p {
				r = 1
			}
			out = append(out, flywheel.Example{EventID: fmt.Sprintf("%s%d#%s", prefix, i, pageSlots[s]), Time: ts, Version: 1,
				Context: flywheel.Features{"user": {"segment": fmt.Sprintf("s%d", seg)}, flywheel.SlotNamespace: {"id": pageSlots[s]}},
				Actions: acts, Probabilities: probs, ChosenIndex: k, Reward: r})
			left = append(left[:k], left[k+1:]...)
		}
	}
	return out
}

// The page's figures are the mean over pages of the page's summed terms,
// and their intervals those of the per-page sums: computed here the long
// way (every page's terms kept, SNIPS linearised with the final values) on
// pages of three slots and of two, two pages a millisecond, with
// single-slot decisions among them, and compared with the comparer's
// streaming sums.
func TestPageFiguresAreThePerPageSums(t *testing.T) {
	t.Parallel()
	mc := pageModelConfig()
	rng := rand.New(rand.NewPCG(1, 7))
	t0 := time.Unix(1_700_000_000, 0)
	cand := trainOn(t, mc, pageLog{corr: 0.05}.draw(rng, 3000, t0, "t"))
	champ, _ := model.FromConfig(mc)
	exs := pageLog{corr: 0.1, short: true}.draw(rng, 600, t0, "p")
	// single-slot decisions (no '#'), one page each, at the pages' times
	singles := logged(rng, 100)
	for i := range singles {
		singles[i].Time = t0.Add(time.Duration(i) * time.Millisecond)
		singles[i].EventID = fmt.Sprintf("s%d", i)
	}
	var all []flywheel.Example
	for i, j := 0, 0; i < len(exs) || j < len(singles); {
		if j < len(singles) && (i == len(exs) || !singles[j].Time.After(exs[i].Time)) {
			all, j = append(all, singles[j]), j+1
		} else {
			all, i = append(all, exs[i]), i+1
		}
	}
	cmp := compare(all, cand, champ, cand, 0.95)
	if cmp.Page == nil || len(cmp.Slots) != 4 || cmp.Slots[3].Slot != SingleSlot {
		t.Fatalf("slots %+v, page %v", cmp.Slots, cmp.Page)
	}
	if cmp.Page.Candidate.N != 700 || cmp.Candidate.N != len(all) {
		t.Fatalf("%d pages, %d examples; want 700 and %d", cmp.Page.Candidate.N, cmp.Candidate.N, len(all))
	}

	// The long way.
	type termsOf struct {
		page, group string
		t           terms
	}
	var ts []termsOf
	var rc, rh model.Ranking
	for i := range all {
		ex := &all[i]
		cand.Policy(ex.Context, ex.Actions, &rc)
		champ.Policy(ex.Context, ex.Actions, &rh)
		p := ex.Probabilities[ex.ChosenIndex]
		term := func(r *model.Ranking) (w, wr, dr float64) {
			w = r.Probabilities[ex.ChosenIndex] / p
			dm := 0.0
			for j, pj := range r.Probabilities {
				dm += pj * rc.Scores[j]
			}
			return w, w * ex.Reward, dm + w*(ex.Reward-rc.Scores[ex.ChosenIndex])
		}
		var tt terms
		tt.wa, tt.wra, tt.dra = term(&rc)
		tt.wb, tt.wrb, tt.drb = term(&rh)
		page, slot, ok := ex.Slot()
		if !ok {
			page, slot = ex.EventID, SingleSlot
		}
		ts = append(ts, termsOf{page, slot, tt})
	}
	// per group: n, SNIPS value and mean weight of each policy
	type snipsOf struct{ n, wra, wa, wrb, wb float64 }
	groups := map[string]*snipsOf{}
	for _, x := range ts {
		g := groups[x.group]
		if g == nil {
			g = &snipsOf{}
			groups[x.group] = g
		}
		g.n++
		g.wra += x.t.wra
		g.wa += x.t.wa
		g.wrb += x.t.wrb
		g.wb += x.t.wb
	}
	pageSum := func(f func(termsOf) float64) Estimate {
		sums := map[string]float64{}
		for _, x := range ts {
			sums[x.page] += f(x)
		}
		var s, s2 float64
		for _, v := range sums {
			s += v
			s2 += v * v
		}
		return fromSums(float64(len(sums)), s, s2, flywheel.TwoSidedZ(0.95))
	}
	snipsLin := func(x termsOf, a bool) float64 {
		g := groups[x.group]
		if a {
			v, mw := g.wra/g.wa, g.wa/g.n
			return (x.t.wra - v*x.t.wa) / mw
		}
		v, mw := g.wrb/g.wb, g.wb/g.n
		return (x.t.wrb - v*x.t.wb) / mw
	}
	pages := 700.0
	snipsValue := func(a bool) float64 {
		v := 0.0
		for _, g := range groups {
			if a {
				v += g.wra / g.wa * g.n / pages
			} else {
				v += g.wrb / g.wb * g.n / pages
			}
		}
		return v
	}
	shift := func(e Estimate, v float64) Estimate {
		return Estimate{Value: v, Lower: v + e.Lower - e.Value, Upper: v + e.Upper - e.Value}
	}
	want := map[string]Estimate{
		"candidate ips":   pageSum(func(x termsOf) float64 { return x.t.wra }),
		"champion ips":    pageSum(func(x termsOf) float64 { return x.t.wrb }),
		"candidate dr":    pageSum(func(x termsOf) float64 { return x.t.dra }),
		"diff ips":        pageSum(func(x termsOf) float64 { return x.t.wra - x.t.wrb }),
		"diff dr":         pageSum(func(x termsOf) float64 { return x.t.dra - x.t.drb }),
		"candidate snips": shift(pageSum(func(x termsOf) float64 { return snipsLin(x, true) }), snipsValue(true)),
		"champion snips":  shift(pageSum(func(x termsOf) float64 { return snipsLin(x, false) }), snipsValue(false)),
		"diff snips": shift(pageSum(func(x termsOf) float64 { return snipsLin(x, true) - snipsLin(x, false) }),
			snipsValue(true)-snipsValue(false)),
	}
	got := map[string]Estimate{
		"candidate ips": cmp.Page.Candidate.IPS, "champion ips": cmp.Page.Champion.IPS, "candidate dr": cmp.Page.Candidate.DR,
		"diff ips": cmp.Page.Diff, "diff dr": cmp.Page.DiffDR,
		"candidate snips": cmp.Page.Candidate.SNIPS, "champion snips": cmp.Page.Champion.SNIPS, "diff snips": cmp.Page.DiffSNIPS,
	}
	for name, w := range want {
		g := got[name]
		t.Logf("page %s: %.4f [%.4f, %.4f]", name, g.Value, g.Lower, g.Upper)
		if math.Abs(g.Value-w.Value) > 1e-9 || math.Abs(g.Lower-w.Lower) > 1e-9 || math.Abs(g.Upper-w.Upper) > 1e-9 {
			t.Errorf("page %s: %+v, the long way %+v", name, g, w)
		}
	}
	// Each slot's figures are those of its decisions alone.
	for _, sl := range cmp.Slots {
		var sub []flywheel.Example
		for i := range all {
			if _, slot, ok := all[i].Slot(); ok && slot == sl.Slot || !ok && sl.Slot == SingleSlot {
				sub = append(sub, all[i])
			}
		}
		alone := compare(sub, cand, champ, cand, 0.95)
		alone.Slots, alone.Page = nil, nil // the pooled figures of the slot's decisions
		if a, b := fmt.Sprintf("%+v", alone), fmt.Sprintf("%+v", sl.Comparison); a != b {
			t.Errorf("slot %s: %s, alone %s", sl.Slot, b, a)
		}
	}
	t.Logf("\n%s", cmp.SlotsTable("snips", 2, 1))
}

// The page's interval covers what the page estimate estimates in about 95%
// of holdouts, on pages whose slots are strongly correlated (an engaged
// user clicks 90% more on every slot, another 90% less): the per-page
// sums carry the correlation. Adding the slots' variances as if they were
// independent covers less: 0.913 to 0.933 where the page's interval covers
// 0.950 to 0.957 (300 holdouts of 300 pages).
func TestPageIntervalCoverage(t *testing.T) {
	t.Parallel()
	mc := pageModelConfig()
	t0 := time.Unix(1_700_000_000, 0)
	cand := trainOn(t, mc, pageLog{corr: 0.05}.draw(rand.New(rand.NewPCG(2, 2)), 4000, t0, "t"))
	champ, _ := model.FromConfig(mc)
	const seeds, pages = 300, 300
	world := pageLog{corr: 0.9}
	// What the page estimate estimates: its mean over a large log.
	c, rng := newComparer(cand, champ, cand, 0.95), rand.New(rand.NewPCG(9, 9))
	for b := range 100 { // 100,000 pages, drawn a thousand at a time
		exs := world.draw(rng, 1000, t0.Add(time.Duration(b)*time.Second), fmt.Sprintf("b%d-", b))
		for i := range exs {
			c.add(&exs[i])
		}
	}
	big := c.result()
	target := map[string]float64{}
	for _, est := range []string{"ips", "snips", "dr"} {
		target[est] = big.Page.DiffFor(est).Value
	}
	covered, naive := map[string]int{}, map[string]int{}
	for seed := uint64(0); seed < seeds; seed++ {
		cmp := compare(world.draw(rand.New(rand.NewPCG(seed, 3)), pages, t0, "p"), cand, champ, cand, 0.95)
		for est, v := range target {
			if d := cmp.Page.DiffFor(est); d.Lower <= v && v <= d.Upper {
				covered[est]++
			}
			// the slots as if independent: the sum of their variances
			sum, v2 := 0.0, 0.0
			for _, sl := range cmp.Slots {
				d := sl.DiffFor(est)
				sum += d.Value
				half := (d.Upper - d.Lower) / 2
				v2 += half * half
			}
			if math.Abs(sum-v) <= math.Sqrt(v2) {
				naive[est]++
			}
		}
	}
	for _, est := range []string{"ips", "snips", "dr"} {
		cov, nc := float64(covered[est])/seeds, float64(naive[est])/seeds
		t.Logf("page difference by %s (target %.4f): 95%% interval coverage %.3f; slots taken as independent %.3f", est, target[est], cov, nc)
		if cov < 0.91 || cov > 0.99 {
			t.Errorf("page difference by %s: coverage %.3f outside [0.91, 0.99]", est, cov)
		}
	}
}
