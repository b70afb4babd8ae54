package flywheel

import (
	"math"
	"sort"
)

// Features are namespaced: namespace → name → value. A value is a string
// (a categorical feature, ns^name=value), a number (real-valued), a bool
// (0 or 1) or an array of strings (a bag of categoricals). JSON decoding
// yields exactly these Go types: string, float64, bool, []any.
type Features map[string]map[string]any

// Limits bound what one request may carry and how many a server takes.
// Zero means the default, except for RatePerKey (zero: no rate limit; the
// configuration file's default is DefaultRatePerKey).
type Limits struct {
	MaxActions          int   `yaml:"max_actions"`
	MaxFeaturesPerNS    int   `yaml:"max_features_per_namespace"`
	MaxNamespaces       int   `yaml:"max_namespaces"`
	MaxBagSize          int   `yaml:"max_bag_size"`
	MaxStringBytes      int   `yaml:"max_string_bytes"`
	MaxFeedbackPerBatch int   `yaml:"max_feedback_per_batch"`
	MaxBodyBytes        int64 `yaml:"max_body_bytes"`
	// MaxFeaturesPerRequest bounds the hashed features scoring one request
	// touches, interactions included (see Cost); default 100,000.
	MaxFeaturesPerRequest int `yaml:"max_features_per_request"`
	// MaxInFlight bounds the requests one server handles at once; default 256.
	MaxInFlight int `yaml:"max_in_flight"`
	// RatePerKey is the requests per second each API key (each client
	// address when the API is open) may send, sustained; Burst how many it
	// may send at once (default: one second's worth). Zero turns it off.
	RatePerKey float64 `yaml:"rate_per_key"`
	Burst      int     `yaml:"burst"`
	// RecentEventIDs is how many recent decisions each serving replica
	// remembers by model and event id, to answer a reused client event id
	// (the same answer for the same request, else 409) and to find the model
	// of feedback that names none; default 100,000, negative: none.
	RecentEventIDs int `yaml:"recent_event_ids"`
}

// Defaults of the request limits that the configuration file sets (a zero
// RatePerKey in a Limits means no rate limit).
const (
	DefaultRatePerKey = 5000
	DefaultBurst      = 10000
)

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxActions, 256)
	def(&l.MaxFeaturesPerNS, 256)
	def(&l.MaxNamespaces, 32)
	def(&l.MaxBagSize, 256)
	def(&l.MaxStringBytes, 1024)
	def(&l.MaxFeedbackPerBatch, 1000)
	def(&l.MaxFeaturesPerRequest, 100_000)
	def(&l.MaxInFlight, 256)
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = 1 << 20
	}
	if l.RecentEventIDs == 0 {
		l.RecentEventIDs = 100_000
	}
	if l.RatePerKey > 0 && l.Burst <= 0 {
		l.Burst = max(1, int(math.Ceil(l.RatePerKey)))
	}
	return l
}

// Validate reports an EINVALID error naming the first bad field under path
// (for example "limits").
func (l Limits) Validate(path string) error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"max_actions", int64(l.MaxActions)}, {"max_features_per_namespace", int64(l.MaxFeaturesPerNS)},
		{"max_namespaces", int64(l.MaxNamespaces)}, {"max_bag_size", int64(l.MaxBagSize)},
		{"max_string_bytes", int64(l.MaxStringBytes)}, {"max_feedback_per_batch", int64(l.MaxFeedbackPerBatch)},
		{"max_body_bytes", l.MaxBodyBytes}, {"max_features_per_request", int64(l.MaxFeaturesPerRequest)},
		{"max_in_flight", int64(l.MaxInFlight)}, {"burst", int64(l.Burst)},
	} {
		if f.v < 0 {
			return Errorf(EINVALID, "%s.%s must not be negative (0 is the default)", path, f.name)
		}
	}
	if !(l.RatePerKey >= 0) || math.IsInf(l.RatePerKey, 0) {
		return Errorf(EINVALID, "%s.rate_per_key must be a finite number >= 0 (0 turns rate limiting off)", path)
	}
	return nil
}

// Validate checks f against l and normalises nothing: it reports the first
// problem as an EINVALID error naming the field by its path (for example
// "actions[3].features.item.price"). Namespaces are visited in sorted order
// so that the error for a given input is always the same. A valid f is
// checked without allocating; only a bad one pays for the sorted pass that
// names the field.
func (f Features) Validate(path string, l Limits) error {
	if f.valid(l) {
		return nil
	}
	return f.explain(path, l)
}

// valid is Validate's fast path: the same checks, no messages.
func (f Features) valid(l Limits) bool {
	if len(f) > l.MaxNamespaces {
		return false
	}
	for ns, feats := range f {
		if ns == "" || len(ns) > l.MaxStringBytes || feats == nil || len(feats) > l.MaxFeaturesPerNS {
			return false
		}
		for name, v := range feats {
			if name == "" || len(name) > l.MaxStringBytes {
				return false
			}
			switch v := v.(type) {
			case string:
				if len(v) > l.MaxStringBytes {
					return false
				}
			case float64:
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return false
				}
			case bool:
			case []any:
				if len(v) > l.MaxBagSize {
					return false
				}
				for _, e := range v {
					if s, ok := e.(string); !ok || len(s) > l.MaxStringBytes {
						return false
					}
				}
			case []string:
				if len(v) > l.MaxBagSize {
					return false
				}
				for _, s := range v {
					if len(s) > l.MaxStringBytes {
						return false
					}
				}
			default:
				return false
			}
		}
	}
	return true
}

// explain finds the first problem in sorted order and names it.
func (f Features) explain(path string, l Limits) error {
	if len(f) > l.MaxNamespaces {
		return Errorf(EINVALID, "%s has %d namespaces; the limit is %d", path, len(f), l.MaxNamespaces)
	}
	for _, ns := range sortedKeys(f) {
		feats := f[ns]
		p := path + "." + ns
		if ns == "" {
			return Errorf(EINVALID, "%s has an empty namespace name", path)
		}
		if len(ns) > l.MaxStringBytes {
			return Errorf(EINVALID, "%s: namespace name is longer than %d bytes", path, l.MaxStringBytes)
		}
		if feats == nil {
			return Errorf(EINVALID, "%s is not an object of features", p)
		}
		if len(feats) > l.MaxFeaturesPerNS {
			return Errorf(EINVALID, "%s has %d features; the limit is %d", p, len(feats), l.MaxFeaturesPerNS)
		}
		for _, name := range sortedKeys(feats) {
			if name == "" {
				return Errorf(EINVALID, "%s has a feature with an empty name", p)
			}
			if len(name) > l.MaxStringBytes {
				return Errorf(EINVALID, "%s: feature name is longer than %d bytes", p, l.MaxStringBytes)
			}
			if err := validateValue(p+"."+name, feats[name], l); err != nil {
				return err
			}
		}
	}
	return Errorf(EINVALID, "%s is not valid", path) // unreachable while valid and explain agree
}

func validateValue(p string, v any, l Limits) error {
	switch v := v.(type) {
	case string:
		if len(v) > l.MaxStringBytes {
			return Errorf(EINVALID, "%s is longer than %d bytes", p, l.MaxStringBytes)
		}
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return Errorf(EINVALID, "%s is not a finite number", p)
		}
	case bool:
	case []any:
		if len(v) > l.MaxBagSize {
			return Errorf(EINVALID, "%s has %d values; the limit is %d", p, len(v), l.MaxBagSize)
		}
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return Errorf(EINVALID, "%s[%d] is not a string (arrays hold strings only)", p, i)
			}
			if len(s) > l.MaxStringBytes {
				return Errorf(EINVALID, "%s[%d] is longer than %d bytes", p, i, l.MaxStringBytes)
			}
		}
	case []string:
		if len(v) > l.MaxBagSize {
			return Errorf(EINVALID, "%s has %d values; the limit is %d", p, len(v), l.MaxBagSize)
		}
		for i, s := range v {
			if len(s) > l.MaxStringBytes {
				return Errorf(EINVALID, "%s[%d] is longer than %d bytes", p, i, l.MaxStringBytes)
			}
		}
	case nil:
		return Errorf(EINVALID, "%s is null", p)
	default:
		return Errorf(EINVALID, "%s must be a string, a number, a bool or an array of strings", p)
	}
	return nil
}

// Cost returns how many hashed features scoring ctx against each of
// actions touches, which is also what the logged decision costs every
// retrain pass and evaluation: for each action, the features of the context
// and of the action, plus, for each interaction pair (a, b), the features of
// namespace a times those of namespace b, context and action together. A
// bag counts each of its strings; a number 0 and false count nothing (they
// are not hashed). With no actions, ctx is scored alone (a classifier's
// features). Counting stops at the first action that takes the total past
// limit (the result is then above limit), and each feature is visited at most
// once per interaction pair, so the cost of Cost is linear in the size of
// the request whatever it holds. f must be valid (Validate).
func Cost(ctx Features, actions []Action, pairs [][2]string, limit int) int {
	return cost(ctx.size(), ctx.count, len(actions), func(a int) int { return actions[a].Features.size() },
		func(a int, ns string) int { return actions[a].Features.count(ns) }, pairs, limit)
}

// cost is Cost for features of any form: the context's size and count per
// namespace, and n actions' (size(a), count(a, ns)).
func cost(ctxSize int, ctxCount func(ns string) int, n int, size func(a int) int, count func(a int, ns string) int, pairs [][2]string, limit int) int {
	var small [8][2]int
	side := small[:0]
	for _, p := range pairs {
		side = append(side, [2]int{ctxCount(p[0]), ctxCount(p[1])})
	}
	if n == 0 {
		total := ctxSize
		for _, c := range side {
			total += c[0] * c[1]
		}
		return total
	}
	total := 0
	for a := range n {
		total += ctxSize + size(a)
		for i, p := range pairs {
			total += (side[i][0] + count(a, p[0])) * (side[i][1] + count(a, p[1]))
		}
		if total > limit {
			return total
		}
	}
	return total
}

// size returns how many hashed features f holds.
func (f Features) size() int {
	n := 0
	for ns := range f {
		n += f.count(ns)
	}
	return n
}

// count returns how many hashed features namespace ns of f holds.
func (f Features) count(ns string) int {
	n := 0
	for _, v := range f[ns] {
		switch v := v.(type) {
		case string:
			n++
		case float64:
			if v != 0 {
				n++
			}
		case bool:
			if v {
				n++
			}
		case []any:
			n += len(v)
		case []string:
			n += len(v)
		}
	}
	return n
}

// Flat is one feature in a form an analyst can filter on without JSON
// functions: Name is "ns^name", Value the categorical value ("" for a real
// feature) and Number the real value (1 for a categorical one).
type Flat struct {
	Name   string
	Value  string
	Number float64
}

// Flatten lists f's features in a stable order (namespaces, then names, then
// bag members in their order). A bag yields one Flat per member.
func (f Features) Flatten() []Flat {
	var out []Flat
	for _, ns := range sortedKeys(f) {
		for _, name := range sortedKeys(f[ns]) {
			key := ns + "^" + name
			switch v := f[ns][name].(type) {
			case string:
				out = append(out, Flat{Name: key, Value: v, Number: 1})
			case float64:
				out = append(out, Flat{Name: key, Number: v})
			case bool:
				n := 0.0
				if v {
					n = 1
				}
				out = append(out, Flat{Name: key, Number: n})
			case []any:
				for _, e := range v {
					if s, ok := e.(string); ok {
						out = append(out, Flat{Name: key, Value: s, Number: 1})
					}
				}
			case []string:
				for _, s := range v {
					out = append(out, Flat{Name: key, Value: s, Number: 1})
				}
			}
			// Any other type is not a feature; Validate refuses it.
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
