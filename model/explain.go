package model

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
)

// BiasName is the name Explain gives the constant feature every example has.
const BiasName = "(constant)"

// Explanation is what a model learned, weight by weight: the weights with
// the largest effect and the readable names behind them.
type Explanation struct {
	Model   string `json:"model,omitempty"`
	Version int    `json:"version,omitempty"`
	Kind    string `json:"kind"`
	Bits    int    `json:"bits"`
	Trained uint64 `json:"trained"`
	Nonzero int    `json:"nonzero_weights"`
	// Dictionary says whether the artifact carries names (format 4); a
	// version trained without them is explained by hashed indices only.
	Dictionary bool `json:"dictionary"`
	// Names is how many names it holds, NameLimit its bound: at the bound,
	// names first seen later were not kept and their weights show as
	// indices.
	Names     int      `json:"names"`
	NameLimit int      `json:"name_limit"`
	Top       []Effect `json:"top"`
}

// Effect is one weight: its index, its value, its effect on a score
// (|weight| × the largest mean |value| of the names on it, so a number is
// scaled by its typical size; |weight| for a weight without names) and the
// names hashed to it, more than one on a collision, most used first.
type Effect struct {
	Index  uint32        `json:"index"`
	Weight float32       `json:"weight"`
	Effect float64       `json:"effect"`
	Names  []FeatureName `json:"names,omitempty"`
}

// FeatureName is a readable name behind a weight: ns^name=value for a
// categorical, ns^name for a number, "a * b" for a cross, with how often
// training saw it and its mean |value| there (1 for a categorical).
type FeatureName struct {
	Name         string  `json:"name"`
	Uses         uint64  `json:"uses"`
	MeanAbsValue float64 `json:"mean_abs_value"`
}

// Explain returns the top weights by effect of the model in artifact, top
// of them (all when top <= 0), ties by index. It returns an error wrapping
// ErrCorrupt for an artifact Decode would refuse. It allocates the model's
// weights once and is safe for concurrent use.
func Explain(artifact []byte, top int) (*Explanation, error) {
	m, h, err := decodeModel(artifact, nil)
	if err != nil {
		return nil, err
	}
	x := &Explanation{Kind: m.cfg.Kind, Bits: m.cfg.Bits, Trained: m.trained}
	byIndex := map[uint32][]FeatureName{}
	if h.hasNames {
		r := &reader{b: h.state}
		r.take(16)
		for _, size := range []int{12, 20} {
			r.take(int(r.u32()) * size)
		}
		limit, entries, err := readNames(r)
		if err != nil {
			return nil, err
		}
		x.Dictionary, x.Names, x.NameLimit = true, len(entries), limit
		for _, e := range entries {
			i := uint32(e.h & m.mask)
			mean := 0.0
			if e.uses > 0 {
				mean = e.sumAbs / float64(e.uses)
			}
			byIndex[i] = append(byIndex[i], FeatureName{Name: e.name, Uses: e.uses, MeanAbsValue: mean})
		}
	}
	bias := uint32(biasHash & m.mask)
	byIndex[bias] = append(byIndex[bias], FeatureName{Name: BiasName, Uses: m.trained, MeanAbsValue: 1})
	for i, w := range m.weights {
		if w == 0 {
			continue
		}
		x.Nonzero++
		e := Effect{Index: uint32(i), Weight: w, Effect: math.Abs(float64(w)), Names: byIndex[uint32(i)]}
		if len(e.Names) > 0 {
			scale := 0.0
			for _, n := range e.Names {
				scale = math.Max(scale, n.MeanAbsValue)
			}
			e.Effect *= scale
			slices.SortStableFunc(e.Names, func(a, b FeatureName) int {
				if c := cmp.Compare(b.Uses, a.Uses); c != 0 {
					return c
				}
				return strings.Compare(a.Name, b.Name)
			})
		}
		x.Top = append(x.Top, e)
	}
	slices.SortStableFunc(x.Top, func(a, b Effect) int { return cmp.Compare(b.Effect, a.Effect) })
	if top > 0 && len(x.Top) > top {
		x.Top = x.Top[:top]
	}
	return x, nil
}

// String renders the explanation for a person: one line per weight, one
// more per extra name on a collision.
func (x *Explanation) String() string {
	var b strings.Builder
	if x.Model != "" {
		fmt.Fprintf(&b, "%s v%d: ", x.Model, x.Version)
	}
	fmt.Fprintf(&b, "%s, 2^%d weights, %d nonzero, trained on %d examples\n", x.Kind, x.Bits, x.Nonzero, x.Trained)
	if x.Dictionary {
		fmt.Fprintf(&b, "names: %d kept of at most %d", x.Names, x.NameLimit)
		if x.Names >= x.NameLimit {
			b.WriteString(" (full: features first seen later show as #index)")
		}
		b.WriteString("\n")
	} else {
		b.WriteString("names: none; this version was trained before names were kept, so weights show as hashed indices (#index)\n")
	}
	fmt.Fprintf(&b, "%4s  %9s  %9s  %8s  %8s  %s\n", "rank", "effect", "weight", "index", "uses", "feature")
	for i, e := range x.Top {
		if len(e.Names) == 0 {
			fmt.Fprintf(&b, "%4d  %9.4f  %+9.4f  %8d  %8s  #%d\n", i+1, e.Effect, e.Weight, e.Index, "", e.Index)
			continue
		}
		for j, n := range e.Names {
			name := n.Name
			if n.MeanAbsValue != 1 && n.Name != BiasName {
				name += fmt.Sprintf("  (mean |x| %.4g)", n.MeanAbsValue)
			}
			if j == 0 {
				fmt.Fprintf(&b, "%4d  %9.4f  %+9.4f  %8d  %8d  %s\n", i+1, e.Effect, e.Weight, e.Index, n.Uses, name)
			} else {
				fmt.Fprintf(&b, "%4s  %9s  %9s  %8s  %8d  %s (same index)\n", "", "", "", "", n.Uses, name)
			}
		}
	}
	return b.String()
}
