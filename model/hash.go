package model

import (
	"math"
	"slices"
	"strings"

	"github.com/flywheel-dev/flywheel"
)

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
	// biasHash is the hash of the constant feature every example has.
	biasHash = 0x9e3779b97f4a7c15
)

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// feature is one hashed feature: its hash and value, and the namespace it
// belongs to (as an index into the example's namespace table).
type feature struct {
	h  uint64
	v  float64
	ns uint64
	// raw marks a number's own value, whose scale the trainer learns (the
	// largest magnitude seen); every other feature (a string, a bool, a
	// bin or a knot of linear bins) is on the unit scale, whatever
	// fraction of it one example has.
	raw bool
}

// nsHash hashes a namespace name; features of the namespace hash from it.
func nsHash(ns string) uint64 { return fnvString(fnvOffset, ns) }

// keyBuf holds the sorted namespace names appendFeatures needs; reused so
// that hashing a request allocates nothing in steady state.
type keyBuf struct {
	nss    []string
	groups []nsGroup
}

// nsGroup is one namespace of a listed set: its name and where its features
// are in the set.
type nsGroup struct {
	ns       string
	from, to int
}

// appendFeatures hashes f's features onto dst in a stable order: namespaces
// by name, features within one by hash. A categorical is ns^name=value with value 1; a number
// is ns^name with its value, and, when bn has its cut points, its bin
// features (binning.appendBins); a bool is ns^name with 0 or 1.
func appendFeatures(dst []feature, f flywheel.Features, kb *keyBuf, bn binning) []feature {
	if len(f) == 0 {
		return dst
	}
	kb.nss = kb.nss[:0]
	for ns := range f {
		kb.nss = append(kb.nss, ns)
	}
	slices.Sort(kb.nss)
	for _, ns := range kb.nss {
		nh := nsHash(ns)
		from := len(dst)
		for name, val := range f[ns] {
			base := fnvString(fnvString(nh, "^"), name)
			switch v := val.(type) {
			case string:
				dst = append(dst, feature{h: fnvString(fnvString(base, "="), v), v: 1, ns: nh})
			case float64:
				if math.IsNaN(v) || math.IsInf(v, 0) {
					break
				}
				if v != 0 {
					dst = append(dst, feature{h: base, v: v, ns: nh, raw: true})
				}
				if c, ok := bn.cuts[base]; ok {
					dst = bn.appendBins(dst, base, c, v, nh)
				}
			case bool:
				if v {
					dst = append(dst, feature{h: base, v: 1, ns: nh})
				}
			case []any:
				for _, e := range v {
					if s, ok := e.(string); ok {
						dst = append(dst, feature{h: fnvString(fnvString(base, "="), s), v: 1, ns: nh})
					}
				}
			case []string:
				for _, s := range v {
					dst = append(dst, feature{h: fnvString(fnvString(base, "="), s), v: 1, ns: nh})
				}
			}
		}
		sortFeatures(dst[from:])
	}
	return dst
}

// appendListed hashes a listed set (flywheel.FeatureList) onto dst exactly
// as appendFeatures hashes the same features as Features: the same features
// in the same order, so that a request scores the same either way.
// Namespaces are contiguous in a set and none repeats (Scan refuses that).
func appendListed(dst []feature, set []flywheel.ListedFeature, kb *keyBuf, bn binning) []feature {
	if len(set) == 0 {
		return dst
	}
	kb.groups = kb.groups[:0]
	for i, f := range set {
		if n := len(kb.groups); n == 0 || kb.groups[n-1].ns != f.NS {
			kb.groups = append(kb.groups, nsGroup{ns: f.NS, from: i, to: i + 1})
		} else {
			kb.groups[n-1].to = i + 1
		}
	}
	if len(kb.groups) > 1 {
		slices.SortFunc(kb.groups, func(a, b nsGroup) int { return strings.Compare(a.ns, b.ns) })
	}
	for _, g := range kb.groups {
		nh := nsHash(g.ns)
		from := len(dst)
		for _, f := range set[g.from:g.to] {
			base := fnvString(fnvString(nh, "^"), f.Name)
			switch f.Kind {
			case flywheel.ListedString, flywheel.ListedMember:
				dst = append(dst, feature{h: fnvString(fnvString(base, "="), f.Str), v: 1, ns: nh})
			case flywheel.ListedNumber:
				if f.Num != 0 {
					dst = append(dst, feature{h: base, v: f.Num, ns: nh, raw: true})
				}
				if c, ok := bn.cuts[base]; ok {
					dst = bn.appendBins(dst, base, c, f.Num, nh)
				}
			case flywheel.ListedBool:
				if f.Num == 1 {
					dst = append(dst, feature{h: base, v: 1, ns: nh})
				}
			}
		}
		sortFeatures(dst[from:])
	}
	return dst
}

// sortFeatures orders one namespace's features by hash, then value: map
// order is random, and sorting makes the order, and so every floating-point
// sum over it, the same on every run.
func sortFeatures(fs []feature) {
	slices.SortFunc(fs, func(a, b feature) int {
		switch {
		case a.h < b.h:
			return -1
		case a.h > b.h:
			return 1
		case a.v < b.v:
			return -1
		case a.v > b.v:
			return 1
		}
		return 0
	})
}

// cross combines the hashes of two features of an interaction.
func cross(a, b uint64) uint64 { return (a * fnvPrime) ^ b }

// splitmix64 scrambles x; used to turn an event id into a reproducible draw.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// uniform01 returns a reproducible number in [0, 1) for key and salt.
func uniform01(key string, salt uint64) float64 {
	return float64(splitmix64(fnvString(fnvOffset, key)^salt)>>11) / (1 << 53)
}
