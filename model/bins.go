package model

import (
	"cmp"
	"math"
	"slices"
	"strconv"

	"github.com/flywheel-dev/flywheel"
)

// Quantile bins of numeric features.
//
// A linear model learns a number's effect as one slope, and an interaction
// as the product of two values: it cannot learn that a price suits a
// middling income best, or that an hour of the day matters cyclically. With
// Config.Bins = B, every numeric feature also contributes a one-hot feature
// naming which of B quantile bins its value falls in (ns^name#k), beside its
// value, so that a feature's effect, and through the interactions its effect
// together with another's, can take any shape. This is the quantile
// bucketing that tabular AutoML systems apply to every numeric column.
//
// The cut points are fitted by the trainer on the first FitExamples
// examples of a full retrain (every action's features and the context, as
// logged) and stored in the artifact, so that serving bins exactly as
// training did and an incremental retrain goes on with the same bins.
// Features the fit did not see are learned from their value only.

const (
	// FitExamples is how many examples a trainer holds back to fit the
	// bins of a model that has none yet, before it learns them.
	FitExamples = 4096
	// MinFitExamples is the fewest examples Trainer.Fit fits the bins on.
	MinFitExamples = 1024
	// MaxBins bounds Config.Bins.
	MaxBins = 64
	// maxBinned bounds how many numeric features get bins: those with the
	// most values in the fit (ties by hash), so that a feature space of many
	// distinct numeric names costs bounded memory.
	maxBinned = 4096
	// maxFitValues bounds the values of one feature a fit keeps.
	maxFitValues = 1 << 16
)

// binHash is the hash of bin k of the numeric feature whose hash is base.
func binHash(base uint64, k int) uint64 { return cross(fnvString(base, "#"), uint64(k)+1) }

// binOf returns the bin of v among the ascending cuts: the number of cuts
// at or below v, from 0 to len(cuts).
func binOf(cuts []float64, v float64) int {
	lo, hi := 0, len(cuts)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if cuts[mid] <= v {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// Bin shapes (Config.BinShape): how a binned number's bins are features.
const (
	// BinsOneHot makes a number one feature, value 1, for the bin it falls
	// in: a step function of the value. It is the shape of artifacts
	// written before BinsLinear, and what an empty BinShape means.
	BinsOneHot = flywheel.BinShapeOneHot
	// BinsLinear makes the cut points knots of a piecewise-linear function:
	// a value between two cuts is both knots' feature, each weighted by how
	// near the value is to it (the weights sum to 1), and a value beyond the
	// first or the last cut is that knot's alone. A number's effect is then
	// continuous in its value, an example teaches the two knots around it,
	// and a cross of two binned numbers interpolates bilinearly between the
	// cells around the pair: a smooth surface learned from fewer examples
	// than a grid of independent cells (piecewise-linear encoding, as in
	// Gorishniy et al. 2022, "On Embeddings for Numerical Features in
	// Tabular Deep Learning").
	BinsLinear = flywheel.BinShapeLinear
)

// binning is how a model turns numbers into bin features: its fitted cut
// points by feature hash (nil when it bins none) and its bin shape.
type binning struct {
	cuts   map[uint64][]float64
	linear bool
}

func (m *Model) binning() binning {
	return binning{cuts: m.cuts, linear: m.cfg.BinShape == BinsLinear}
}

// knot returns the knots of v among the ascending cuts c under BinsLinear:
// knot k with weight 1-t and, when t > 0, knot k+1 with weight t.
func knot(c []float64, v float64) (k int, t float64) {
	switch j := binOf(c, v); {
	case j == 0:
		return 0, 0
	case j == len(c):
		return j - 1, 0
	default: // c[j-1] <= v < c[j]
		return j - 1, (v - c[j-1]) / (c[j] - c[j-1])
	}
}

// eachBin calls fn with the index and value of every bin feature of v
// among the ascending cuts c: the bin it falls in, with 1 (one-hot); or
// the one or two knots around it, with weights summing to 1 (linear).
func (bn binning) eachBin(c []float64, v float64, fn func(k int, w float64)) {
	if !bn.linear {
		fn(binOf(c, v), 1)
		return
	}
	k, t := knot(c, v)
	fn(k, 1-t)
	if t > 0 {
		fn(k+1, t)
	}
}

// appendBins appends the bin features (eachBin) of value v of the numeric
// feature base in namespace nh, whose cuts are c.
func (bn binning) appendBins(dst []feature, base uint64, c []float64, v float64, nh uint64) []feature {
	if !bn.linear {
		return append(dst, feature{h: binHash(base, binOf(c, v)), v: 1, ns: nh})
	}
	k, t := knot(c, v)
	dst = append(dst, feature{h: binHash(base, k), v: 1 - t, ns: nh})
	if t > 0 {
		dst = append(dst, feature{h: binHash(base, k+1), v: t, ns: nh})
	}
	return dst
}

// binName is the readable name of bin k of feature key: the range of a
// one-hot bin, or the knot's value.
func (bn binning) binName(key string, cuts []float64, k int) string {
	if bn.linear {
		return cutName(key + " ~ " + strconv.FormatFloat(cuts[k], 'g', 6, 64))
	}
	lo, hi := "-inf", "+inf"
	if k > 0 {
		lo = strconv.FormatFloat(cuts[k-1], 'g', 6, 64)
	}
	if k < len(cuts) {
		hi = strconv.FormatFloat(cuts[k], 'g', 6, 64)
	}
	return cutName(key + " in [" + lo + ", " + hi + ")")
}

// eachNumber calls fn with the hash and value of every finite numeric
// feature of f, zeros included.
func eachNumber(f flywheel.Features, fn func(base uint64, v float64)) {
	for ns, feats := range f {
		nh := fnvString(nsHash(ns), "^")
		for name, val := range feats {
			if v, ok := val.(float64); ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
				fn(fnvString(nh, name), v)
			}
		}
	}
}

// eachListedNumber is eachNumber for a listed set.
func eachListedNumber(set []flywheel.ListedFeature, fn func(base uint64, v float64)) {
	for _, f := range set {
		if f.Kind == flywheel.ListedNumber && !math.IsNaN(f.Num) && !math.IsInf(f.Num, 0) {
			fn(fnvString(fnvString(nsHash(f.NS), "^"), f.Name), f.Num)
		}
	}
}

// fitBins returns the cut points of at most bins bins of about equal
// frequency for every numeric feature of the examples (contexts and every
// action), at most maxBinned features. Walking a feature's sorted values,
// a bin closes at the first new value once it holds its share of the
// values still to place, so a value that repeats (many zeros) fills one bin
// and the rest are split among the others. A feature with one value gets
// no cuts and is left out. It is deterministic: the same examples give the
// same cuts, whatever the order of the maps they hold.
func fitBins(bins int, exs []pending) map[uint64][]float64 {
	vals := map[uint64][]float64{}
	add := func(base uint64, v float64) {
		if s := vals[base]; len(s) < maxFitValues {
			vals[base] = append(s, v)
		}
	}
	for i := range exs {
		eachNumber(exs[i].ex.Context, add)
		for _, a := range exs[i].ex.Actions {
			eachNumber(a.Features, add)
		}
		if exs[i].ex.Listed() {
			for a := range exs[i].ex.ActionSets {
				eachListedNumber(exs[i].ex.ActionSet(a), add)
			}
		}
	}
	keys := make([]uint64, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b uint64) int {
		if c := cmp.Compare(len(vals[b]), len(vals[a])); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	out := make(map[uint64][]float64, min(len(keys), maxBinned))
	for _, k := range keys[:min(len(keys), maxBinned)] {
		s := vals[k]
		slices.Sort(s)
		var cuts []float64
		start := 0 // the first value of the bin being filled
		for i := 1; i < len(s) && len(cuts) < bins-1; i++ {
			if s[i] == s[i-1] {
				continue
			}
			if left := bins - len(cuts); (i-start)*left >= len(s)-start {
				cuts, start = append(cuts, s[i]), i
			}
		}
		if len(cuts) > 0 {
			out[k] = cuts
		}
	}
	return out
}

// pending is an example a trainer holds until it has fitted its bins.
type pending struct {
	ex         flywheel.Example
	label      bool // a classifier's
	classifier bool
}

// needsFit reports whether the trainer must hold examples back: its model
// bins numeric features and has no cut points yet.
func (t *Trainer) needsFit() bool { return t.m.cfg.Bins > 0 && t.m.cuts == nil }

// hold keeps a copy of an example until FitExamples are held, then fits the
// bins and learns them all, in order.
func (t *Trainer) hold(p pending) {
	t.pending = append(t.pending, p)
	if len(t.pending) >= FitExamples {
		t.fit()
	}
}

// fit fits the bins on the examples held (none: no feature is binned) and
// learns them in order.
func (t *Trainer) fit() {
	if !t.needsFit() {
		return
	}
	t.m.cuts = fitBins(t.m.cfg.Bins, t.pending)
	held := t.pending
	t.pending = nil
	for i := range held {
		if held[i].classifier {
			t.learnClassifier(held[i].ex.Context, held[i].label)
		} else {
			t.learnRanker(&held[i].ex)
		}
	}
}

// BinnedFeatures returns how many numeric features the model bins.
func (m *Model) BinnedFeatures() int { return len(m.cuts) }
