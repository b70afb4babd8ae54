package model

import (
	"cmp"
	"math"
	"slices"

	"github.com/flywheel-dev/flywheel"
)

// DefaultNames is the bound of the name dictionary retraining keeps: the
// first 10,000 distinct features and crosses a trainer sees.
const DefaultNames = 10000

// maxNames bounds the limit an artifact may declare, and maxNameLen the
// bytes of one name (longer ones are cut, ending in "…").
const (
	maxNames   = 1 << 20
	maxNameLen = 512
)

// nameEntry is one readable name behind a hash, with how often the trainer
// saw it and the sum of its |value|s (so that the mean |value| of a number
// scales its weight into an effect).
type nameEntry struct {
	h      uint64
	name   string
	uses   uint64
	sumAbs float64
}

// names is a trainer's bounded dictionary of the readable names behind the
// hashes of features and crosses (VW's --invert_hash). It keeps the first
// limit distinct hashes in training order (within one example, by hash), so
// the same data in the same order gives the same dictionary, bit for bit.
type names struct {
	limit   int
	idx     map[uint64]int32 // full 64-bit hash → entries index
	entries []nameEntry
	named   map[uint64]string // scratch: this example's feature names
	missing []nameEntry       // scratch
}

func newNames(limit int) *names {
	if limit <= 0 {
		return nil
	}
	return &names{limit: min(limit, maxNames), idx: map[uint64]int32{}, named: map[uint64]string{}}
}

func (d *names) add(e nameEntry) {
	if _, ok := d.idx[e.h]; ok || len(d.entries) >= d.limit {
		return
	}
	d.idx[e.h] = int32(len(d.entries))
	d.entries = append(d.entries, e)
}

// observe records the features and crosses of one training step: the
// hashed features cf and af of the raw features ctx and act, crossed by m's
// pairs. While the dictionary has room, names of hashes it lacks are built
// from ctx and act; afterwards observing costs a map look-up per feature.
//
// A listed action (actSet not nil) is named from its set instead of act.
func (t *Trainer) observe(ctx, act flywheel.Features, actSet []flywheel.ListedFeature) {
	d := t.names
	if d == nil {
		return
	}
	if len(d.entries) < d.limit {
		missing := false
		t.eachCross(func(h uint64, _ float64, _, _ *feature) {
			if _, ok := d.idx[h]; !ok {
				missing = true
			}
		})
		if missing {
			clear(d.named)
			eachNamed(ctx, t.m.binning(), func(h uint64, name string) { d.named[h] = name })
			if actSet != nil {
				eachNamedListed(actSet, t.m.binning(), func(h uint64, name string) { d.named[h] = name })
			} else {
				eachNamed(act, t.m.binning(), func(h uint64, name string) { d.named[h] = name })
			}
			d.missing = d.missing[:0]
			t.eachCross(func(h uint64, _ float64, a, b *feature) {
				if _, ok := d.idx[h]; ok {
					return
				}
				var name string
				if b == nil {
					name = d.named[a.h]
				} else {
					name = cutName(d.named[a.h] + " * " + d.named[b.h])
				}
				d.missing = append(d.missing, nameEntry{h: h, name: name})
			})
			slices.SortStableFunc(d.missing, func(a, b nameEntry) int { return cmp.Compare(a.h, b.h) })
			for _, e := range d.missing {
				d.add(e)
			}
		}
	}
	t.eachCross(func(h uint64, v float64, _, _ *feature) {
		if i, ok := d.idx[h]; ok {
			e := &d.entries[i]
			e.uses++
			e.sumAbs += math.Abs(v)
		}
	})
}

// eachCross calls fn with the full hash and value of every feature of the
// current example (t.cf, t.af) and of every cross, with the features it is
// made of (b nil for a plain feature). The bias is left out.
func (t *Trainer) eachCross(fn func(h uint64, v float64, a, b *feature)) {
	for i := range t.cf {
		fn(t.cf[i].h, t.cf[i].v, &t.cf[i], nil)
	}
	for i := range t.af {
		fn(t.af[i].h, t.af[i].v, &t.af[i], nil)
	}
	cb := &t.cb
	for _, p := range t.m.pairs {
		cb.l, cb.r = gather(cb.l[:0], p[0], t.cf, t.af), gather(cb.r[:0], p[1], t.cf, t.af)
		for i := range cb.l {
			for j := range cb.r {
				a, b := &cb.l[i], &cb.r[j]
				fn(cross(a.h, b.h), a.v*b.v, a, b)
			}
		}
	}
}

// eachNamed calls fn with the hash and readable name of every feature of f,
// hashed as appendFeatures hashes them: ns^name=value for a categorical (and
// each string of a bag), ns^name for a number or a true bool, and
// "ns^name in [lo, hi)" for a number's bin when cuts bins it.
func eachNamed(f flywheel.Features, bn binning, fn func(h uint64, name string)) {
	for ns, feats := range f {
		nh := nsHash(ns)
		for name, val := range feats {
			base := fnvString(fnvString(nh, "^"), name)
			key := ns + "^" + name
			cat := func(s string) { fn(fnvString(fnvString(base, "="), s), cutName(key+"="+s)) }
			switch v := val.(type) {
			case string:
				cat(v)
			case float64:
				fn(base, cutName(key))
				if c, ok := bn.cuts[base]; ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
					bn.eachBin(c, v, func(k int, _ float64) { fn(binHash(base, k), bn.binName(key, c, k)) })
				}
			case bool:
				fn(base, cutName(key))
			case []any:
				for _, e := range v {
					if s, ok := e.(string); ok {
						cat(s)
					}
				}
			case []string:
				for _, s := range v {
					cat(s)
				}
			}
		}
	}
}

// eachNamedListed is eachNamed for a listed set (flywheel.FeatureList):
// the same hashes and names as eachNamed gives the same features as
// Features.
func eachNamedListed(set []flywheel.ListedFeature, bn binning, fn func(h uint64, name string)) {
	for _, f := range set {
		base := fnvString(fnvString(nsHash(f.NS), "^"), f.Name)
		key := f.NS + "^" + f.Name
		switch f.Kind {
		case flywheel.ListedString, flywheel.ListedMember:
			fn(fnvString(fnvString(base, "="), f.Str), cutName(key+"="+f.Str))
		case flywheel.ListedNumber:
			fn(base, cutName(key))
			if c, ok := bn.cuts[base]; ok {
				bn.eachBin(c, f.Num, func(k int, _ float64) { fn(binHash(base, k), bn.binName(key, c, k)) })
			}
		case flywheel.ListedBool:
			fn(base, cutName(key))
		}
	}
}

func cutName(s string) string {
	if len(s) <= maxNameLen {
		return s
	}
	return s[:maxNameLen-len("…")] + "…"
}

// sortedEntries returns the dictionary's entries by hash: the order they
// are encoded in.
func (d *names) sortedEntries() []nameEntry {
	out := slices.Clone(d.entries)
	slices.SortFunc(out, func(a, b nameEntry) int { return cmp.Compare(a.h, b.h) })
	return out
}
