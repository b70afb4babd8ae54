package model

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/flywheel-dev/flywheel"
)

// Feature profiles.
//
// A version's feature profile is a bounded summary of the features of the
// examples it learned from: per namespace and feature, how many examples
// carried it, the range of its numbers and the categorical values seen.
// Serving compares live traffic with the champion's profile (TFX's
// ExampleValidator, done live), so that a product release that stops
// sending a feature, or starts sending values training never saw, shows on
// the dashboard and in metrics. Retraining builds it with a Profiler and
// stores it in the version's manifest.

const (
	// ProfileFeatures bounds the features a profile holds: the first ones
	// seen (within one example, by namespace and name).
	ProfileFeatures = 1024
	// ProfileValues bounds the categorical values kept per feature, and
	// ProfileTotalValues those of the whole profile: beyond either, a
	// feature's values are marked truncated.
	ProfileValues      = 1024
	ProfileTotalValues = 1 << 16
	// ProfileValueBytes bounds a value kept: longer ones are counted but
	// neither kept nor checked live.
	ProfileValueBytes = 256
	// profileSample is how many numbers of a feature (the first ones) the
	// quantiles are taken from.
	profileSample = 2048
)

// FeatureProfile is the profile of a training window. Features are sorted
// by namespace and name.
type FeatureProfile struct {
	// Examples is how many examples were profiled (one per decision: its
	// context and all its actions).
	Examples uint64 `json:"examples"`
	// FeaturesTruncated says that more than ProfileFeatures features were
	// seen: those first seen later are not in the profile.
	FeaturesTruncated bool              `json:"features_truncated,omitempty"`
	Features          []ProfiledFeature `json:"features"`
}

// ProfiledFeature is one feature of a profile.
type ProfiledFeature struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Present is how many examples carried the feature, in their context
	// or in any action.
	Present uint64 `json:"present"`
	// Numbers is how many numeric values were seen, Range their range.
	Numbers uint64        `json:"numbers,omitempty"`
	Range   *NumericRange `json:"range,omitempty"`
	// Strings is how many categorical values (strings, and each string of
	// a bag) were seen; Values the distinct ones kept, sorted.
	Strings uint64   `json:"strings,omitempty"`
	Values  []string `json:"values,omitempty"`
	// ValuesTruncated says that some distinct values were not kept (the
	// caps above): a value missing from Values may have been seen.
	ValuesTruncated bool `json:"values_truncated,omitempty"`
}

// NumericRange is the range of a feature's numbers: the smallest and
// largest, and the 1st and 99th percentiles of the first profileSample.
type NumericRange struct {
	Min float64 `json:"min"`
	Max float64 `json:"max"`
	P01 float64 `json:"p01"`
	P99 float64 `json:"p99"`
}

// Key is the feature's readable name, ns^name.
func (f *ProfiledFeature) Key() string { return f.Namespace + "^" + f.Name }

// Presence returns the share of the profile's examples that carried f.
func (p *FeatureProfile) Presence(f *ProfiledFeature) float64 {
	if p.Examples == 0 {
		return 0
	}
	return float64(f.Present) / float64(p.Examples)
}

// Validate reports the first inconsistency of a profile read from a
// manifest: more features or values than the caps, a feature carried by
// more examples than were profiled, an unsorted or repeated feature or
// value, a range that is not finite and ordered.
func (p *FeatureProfile) Validate() error {
	if len(p.Features) > ProfileFeatures {
		return fmt.Errorf("feature profile: %d features; at most %d", len(p.Features), ProfileFeatures)
	}
	total := 0
	for i := range p.Features {
		f := &p.Features[i]
		if i > 0 && compareFeatures(&p.Features[i-1], f) >= 0 {
			return fmt.Errorf("feature profile: features[%d] %s is out of order or repeated", i, f.Key())
		}
		if f.Present > p.Examples || f.Present == 0 {
			return fmt.Errorf("feature profile: features[%d] %s is present in %d of %d examples", i, f.Key(), f.Present, p.Examples)
		}
		if len(f.Values) > ProfileValues || !slices.IsSorted(f.Values) || len(slices.Compact(slices.Clone(f.Values))) != len(f.Values) {
			return fmt.Errorf("feature profile: features[%d] %s: values are more than %d, unsorted or repeated", i, f.Key(), ProfileValues)
		}
		total += len(f.Values)
		if r := f.Range; r != nil && !(r.Min <= r.P01 && r.P01 <= r.P99 && r.P99 <= r.Max && !math.IsInf(r.Min, 0) && !math.IsInf(r.Max, 0)) {
			return fmt.Errorf("feature profile: features[%d] %s: range %+v is not ordered and finite", i, f.Key(), *r)
		}
	}
	// One example may take the values past the total cap (Profiler.Add).
	if total > 2*ProfileTotalValues {
		return fmt.Errorf("feature profile: %d values; at most %d", total, ProfileTotalValues)
	}
	return nil
}

func compareFeatures(a, b *ProfiledFeature) int {
	if c := cmp.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return cmp.Compare(a.Name, b.Name)
}

// Profiler builds a FeatureProfile from examples, in bounded memory. The
// same examples in the same order give the same profile, whatever the
// order of the maps they hold. It is not safe for concurrent use.
type Profiler struct {
	examples  uint64
	index     map[string]map[string]*profiling
	count     int
	truncated bool
	values    int // distinct values kept, all features
	full      bool
	fresh     []ProfiledFeature // scratch: this example's new features
	room      bool              // at the example's start, the profile had room for more features
}

type profiling struct {
	ProfiledFeature
	admitted bool   // admitted by the example being profiled, not recorded yet
	stamp    uint64 // the example that last counted it present
	values   map[string]struct{}
	sample   []float64
}

// NewProfiler returns an empty profiler.
func NewProfiler() *Profiler { return &Profiler{index: map[string]map[string]*profiling{}} }

// Add profiles one example: its context and every action's features (a
// classifier's example has a context only).
func (p *Profiler) Add(ctx flywheel.Features, actions []flywheel.Action) { p.add(ctx, actions, nil) }

// AddExample profiles a logged ranker example as Add profiles its context
// and actions, whether they are maps or listed (flywheel.Example.ActionList):
// the same profile either way.
func (p *Profiler) AddExample(ex *flywheel.Example) {
	if ex.Listed() {
		p.add(ex.Context, nil, ex)
		return
	}
	p.add(ex.Context, ex.Actions, nil)
}

// add profiles a context with actions, or with the listed actions of
// listed when it is not nil. The features the profile lacks are noted as
// the example is recorded, admitted (sorted, while there is room) and then
// recorded: as if admitted first, at the cost of one walk over an example
// that brings nothing new.
func (p *Profiler) add(ctx flywheel.Features, actions []flywheel.Action, listed *flywheel.Example) {
	p.examples++
	p.full = p.values >= ProfileTotalValues // at the example's start: deterministic
	p.room = p.count < ProfileFeatures
	p.fresh = p.fresh[:0]
	p.walk(ctx, actions, listed, false)
	if len(p.fresh) == 0 {
		return
	}
	slices.SortFunc(p.fresh, func(a, b ProfiledFeature) int { return compareFeatures(&a, &b) })
	admitted := 0
	for _, f := range p.fresh {
		if p.count >= ProfileFeatures {
			p.truncated = true
			break
		}
		byName := p.index[f.Namespace]
		if byName == nil {
			byName = map[string]*profiling{}
			p.index[f.Namespace] = byName
		}
		byName[f.Name] = &profiling{ProfiledFeature: f, admitted: true}
		p.count++
		admitted++
	}
	if admitted > 0 {
		p.walk(ctx, actions, listed, true)
	}
}

// walk records the example's features; admitted: only those just
// admitted, which it marks recorded.
func (p *Profiler) walk(ctx flywheel.Features, actions []flywheel.Action, listed *flywheel.Example, admitted bool) {
	p.record(ctx, admitted)
	for i := range actions {
		p.record(actions[i].Features, admitted)
	}
	if listed != nil {
		for i := range listed.ActionSets {
			p.recordListed(listed.ActionSet(i), admitted)
		}
	}
	if admitted {
		for _, f := range p.fresh {
			if pf := p.index[f.Namespace][f.Name]; pf != nil {
				pf.admitted = false
			}
		}
	}
}

func (p *Profiler) record(f flywheel.Features, admitted bool) {
	for ns, feats := range f {
		byName := p.index[ns]
		for name, v := range feats {
			pf := p.present(byName, ns, name, admitted)
			if pf == nil {
				continue
			}
			switch v := v.(type) {
			case string:
				p.addValue(pf, v)
			case float64:
				pf.addNumber(v)
			case []any:
				for _, e := range v {
					if s, ok := e.(string); ok {
						p.addValue(pf, s)
					}
				}
			case []string:
				for _, s := range v {
					p.addValue(pf, s)
				}
			}
		}
	}
}

// recordListed is record for a listed set: a bag's strings are one
// feature, present once.
func (p *Profiler) recordListed(set []flywheel.ListedFeature, admitted bool) {
	var byName map[string]*profiling
	ns := ""
	for i, f := range set {
		if i == 0 || f.NS != ns {
			ns, byName = f.NS, p.index[f.NS]
		}
		pf := p.present(byName, f.NS, f.Name, admitted)
		if pf == nil {
			continue
		}
		switch f.Kind {
		case flywheel.ListedString, flywheel.ListedMember:
			p.addValue(pf, f.Str)
		case flywheel.ListedNumber:
			pf.addNumber(f.Num)
		}
	}
}

// present returns the profile's feature ns^name (byName is ns's), counted
// present in this example, or nil: on the first walk for a feature the
// profile lacks (noted in fresh while there is room, else marking the
// profile truncated); on the second (admitted) for all but those just
// admitted.
func (p *Profiler) present(byName map[string]*profiling, ns, name string, admitted bool) *profiling {
	pf := byName[name]
	switch {
	case admitted:
		if pf == nil || !pf.admitted {
			return nil
		}
	case pf == nil:
		if !p.room {
			p.truncated = true
		} else if !slices.ContainsFunc(p.fresh, func(x ProfiledFeature) bool { return x.Namespace == ns && x.Name == name }) {
			p.fresh = append(p.fresh, ProfiledFeature{Namespace: ns, Name: name})
		}
		return nil
	}
	if pf.stamp != p.examples {
		pf.stamp = p.examples
		pf.Present++
	}
	return pf
}

func (p *Profiler) addValue(pf *profiling, s string) {
	pf.Strings++
	if len(s) > ProfileValueBytes {
		return
	}
	if _, ok := pf.values[s]; ok {
		return
	}
	if len(pf.values) >= ProfileValues || p.full {
		pf.ValuesTruncated = true
		return
	}
	if pf.values == nil {
		pf.values = map[string]struct{}{}
	}
	pf.values[s] = struct{}{}
	p.values++
}

func (pf *profiling) addNumber(v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	if pf.Numbers == 0 {
		pf.Range = &NumericRange{Min: v, Max: v}
	}
	pf.Numbers++
	pf.Range.Min, pf.Range.Max = min(pf.Range.Min, v), max(pf.Range.Max, v)
	if len(pf.sample) < profileSample {
		pf.sample = append(pf.sample, v)
	}
}

// Profile returns the profile of the examples added so far, nil if none
// were.
func (p *Profiler) Profile() *FeatureProfile {
	if p.examples == 0 {
		return nil
	}
	out := &FeatureProfile{Examples: p.examples, FeaturesTruncated: p.truncated, Features: make([]ProfiledFeature, 0, p.count)}
	for _, byName := range p.index {
		for _, pf := range byName {
			f := pf.ProfiledFeature
			if f.Range != nil {
				r := *f.Range
				s := slices.Sorted(slices.Values(pf.sample))
				r.P01, r.P99 = s[int(0.01*float64(len(s)-1))], s[int(0.99*float64(len(s)-1))]
				f.Range = &r
			}
			for v := range pf.values {
				f.Values = append(f.Values, v)
			}
			slices.Sort(f.Values)
			out.Features = append(out.Features, f)
		}
	}
	slices.SortFunc(out.Features, func(a, b ProfiledFeature) int { return compareFeatures(&a, &b) })
	return out
}

// Merge returns the profile of p's examples followed by q's: what an
// incremental version, which goes on from its parent, learned from. Counts
// add up; p's features and values come first within the caps, then q's
// (by namespace and name, and in order); ranges widen (min and max, and
// each percentile the wider of the two: an approximation, not the
// percentile of the union). Either may be nil.
func (p *FeatureProfile) Merge(q *FeatureProfile) *FeatureProfile {
	switch {
	case p == nil:
		return q
	case q == nil:
		return p
	}
	out := &FeatureProfile{Examples: p.Examples + q.Examples, FeaturesTruncated: p.FeaturesTruncated || q.FeaturesTruncated}
	idx := map[[2]string]int{}
	total := 0
	for _, src := range []*FeatureProfile{p, q} {
		for i := range src.Features {
			f := &src.Features[i]
			j, ok := idx[[2]string{f.Namespace, f.Name}]
			if !ok {
				if len(out.Features) >= ProfileFeatures {
					out.FeaturesTruncated = true
					continue
				}
				j = len(out.Features)
				idx[[2]string{f.Namespace, f.Name}] = j
				out.Features = append(out.Features, ProfiledFeature{Namespace: f.Namespace, Name: f.Name})
			}
			total += mergeFeature(&out.Features[j], f, total)
		}
	}
	slices.SortFunc(out.Features, func(a, b ProfiledFeature) int { return compareFeatures(&a, &b) })
	return out
}

// mergeFeature adds g to f, the profile holding total values before, and
// returns how many values it added.
func mergeFeature(f, g *ProfiledFeature, total int) int {
	f.Present += g.Present
	f.Strings += g.Strings
	f.ValuesTruncated = f.ValuesTruncated || g.ValuesTruncated
	if g.Range != nil {
		if f.Range == nil {
			r := *g.Range
			f.Range = &r
		} else {
			r := f.Range
			r.Min, r.Max, r.P01, r.P99 = min(r.Min, g.Range.Min), max(r.Max, g.Range.Max), min(r.P01, g.Range.P01), max(r.P99, g.Range.P99)
		}
	}
	f.Numbers += g.Numbers
	n := len(f.Values)
	for _, v := range g.Values {
		if _, found := slices.BinarySearch(f.Values[:n], v); found {
			continue
		}
		if len(f.Values) >= ProfileValues || total+len(f.Values)-n >= ProfileTotalValues {
			f.ValuesTruncated = true
			break
		}
		f.Values = append(f.Values, v)
	}
	added := len(f.Values) - n
	slices.Sort(f.Values)
	return added
}
