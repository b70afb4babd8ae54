package model

import (
	"cmp"
	"math"
	"slices"

	"github.com/flywheel-dev/flywheel"
)

// Contribution is one term of a score: a feature or a cross, its value in
// the decision, the weight it reads and their product.
type Contribution struct {
	Name   string  `json:"name"`
	Index  uint32  `json:"index"`
	Value  float64 `json:"value"`
	Weight float32 `json:"weight"`
	Term   float64 `json:"term"`
}

// ActionScore is one action's score broken into its terms, largest |term|
// first, with the probability the model's policy gives it.
type ActionScore struct {
	Index       int            `json:"index"`
	Score       float64        `json:"score"`
	Probability float64        `json:"probability"`
	Terms       []Contribution `json:"terms"`
}

// ExplainScores scores actions in context ctx as m.Policy does and breaks
// each score into its terms: the bias, every feature and every cross, named
// from the features themselves (ns^name=value, ns^name, a * b), so any
// version can be explained this way, with or without a name dictionary.
// It is safe for concurrent use.
func (m *Model) ExplainScores(ctx flywheel.Features, actions []flywheel.Action) []ActionScore {
	var r Ranking
	m.Policy(ctx, actions, &r)
	named := map[uint64]string{}
	eachNamed(ctx, m.binning(), func(h uint64, name string) { named[h] = name })
	var kb keyBuf
	var cb crossBuf
	cf := appendFeatures(nil, ctx, &kb, m.binning())
	out := make([]ActionScore, len(actions))
	for i, a := range actions {
		eachNamed(a.Features, m.binning(), func(h uint64, name string) { named[h] = name })
		af := appendFeatures(nil, a.Features, &kb, m.binning())
		as := ActionScore{Index: i, Score: r.Scores[i], Probability: r.Probabilities[i]}
		term := func(h uint64, name string, v float64) {
			idx := h & m.mask
			w := m.weights[idx]
			as.Terms = append(as.Terms, Contribution{Name: name, Index: uint32(idx), Value: v, Weight: w, Term: float64(w) * v})
		}
		term(biasHash, BiasName, 1)
		for _, f := range cf {
			term(f.h, named[f.h], f.v)
		}
		for _, f := range af {
			term(f.h, named[f.h], f.v)
		}
		for _, p := range m.pairs {
			cb.l, cb.r = gather(cb.l[:0], p[0], cf, af), gather(cb.r[:0], p[1], cf, af)
			for _, x := range cb.l {
				for _, y := range cb.r {
					term(cross(x.h, y.h), cutName(named[x.h]+" * "+named[y.h]), x.v*y.v)
				}
			}
		}
		slices.SortStableFunc(as.Terms, func(a, b Contribution) int { return cmp.Compare(math.Abs(b.Term), math.Abs(a.Term)) })
		out[i] = as
	}
	return out
}
