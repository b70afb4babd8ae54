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

// Limits bound what one request may carry. Zero means the default.
type Limits struct {
	MaxActions          int   `yaml:"max_actions"`
	MaxFeaturesPerNS    int   `yaml:"max_features_per_namespace"`
	MaxNamespaces       int   `yaml:"max_namespaces"`
	MaxBagSize          int   `yaml:"max_bag_size"`
	MaxStringBytes      int   `yaml:"max_string_bytes"`
	MaxFeedbackPerBatch int   `yaml:"max_feedback_per_batch"`
	MaxBodyBytes        int64 `yaml:"max_body_bytes"`
}

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
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = 1 << 20
	}
	return l
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
