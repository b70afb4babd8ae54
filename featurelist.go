package flywheel

import (
	"math"
	"slices"
	"strings"
)

// FeatureList holds the features of one request, the context's and each
// action's, as one list read straight from the request's JSON: no maps, and
// strings that share the JSON's memory. It is what serving hashes from; a
// consumer that wants Features asks for them (Features). Set 0 is usually
// the context, set 1+i action i. The zero value is empty and ready; Reset
// empties it keeping its memory.
type FeatureList struct {
	Feats []ListedFeature
	Sets  []FeatureSet
}

// FeatureSet is one features object of a FeatureList: Feats[From:To],
// namespace by namespace in the order sent, each namespace's features in
// the order sent.
type FeatureSet struct{ From, To int }

// ListedKind is what a ListedFeature is.
type ListedKind uint8

// The kinds of a ListedFeature.
const (
	ListedString   ListedKind = iota // a categorical: Str
	ListedNumber                     // a number: Num
	ListedBool                       // a bool: Num is 1 or 0
	ListedMember                     // one string of a bag (an array of strings): Str
	ListedEmptyBag                   // an empty bag: named, holding nothing
)

// ListedFeature is one feature of a FeatureList; a bag is one
// ListedMember per string, in order.
type ListedFeature struct {
	NS, Name string
	Str      string
	Num      float64
	Kind     ListedKind
}

// Reset empties l, keeping its memory.
func (l *FeatureList) Reset() {
	clear(l.Feats) // drop the references into the last request's bytes
	l.Feats, l.Sets = l.Feats[:0], l.Sets[:0]
}

// Set returns the features of set i.
func (l *FeatureList) Set(i int) []ListedFeature {
	s := l.Sets[i]
	return l.Feats[s.From:s.To]
}

// AddEmpty appends a set with no features (an action sent without any).
func (l *FeatureList) AddEmpty() {
	l.Sets = append(l.Sets, FeatureSet{From: len(l.Feats), To: len(l.Feats)})
}

// Scan appends the features object b (namespace → name → value, as JSON)
// to l as its next set, checking it as Features.Validate checks Features.
// Its strings share b's memory: b must not change while l is in use. It
// reports false, leaving l as it was, for anything Validate would refuse,
// for JSON that is not strictly valid, and for what decoding into Features
// would resolve in its own way (a namespace or a name given twice: the map
// keeps the last; a string that is not valid UTF-8): the caller then decodes
// the general way, which names what is wrong. The cost is linear in b.
func (l *FeatureList) Scan(b []byte, lim Limits) bool {
	s := NewScanner(b)
	feats, sets := len(l.Feats), len(l.Sets)
	if !l.ScanFrom(&s, lim) {
		return false
	}
	if !s.End() { // trailing data
		clear(l.Feats[feats:])
		l.Feats, l.Sets = l.Feats[:feats], l.Sets[:sets]
		return false
	}
	return true
}

// ScanFrom is Scan reading the features object at s's position, leaving s
// after it: for a features object inside a request. On false, s is Bad.
func (l *FeatureList) ScanFrom(s *Scanner, lim Limits) bool {
	feats, sets := len(l.Feats), len(l.Sets)
	if !l.scan(s, lim, true) {
		clear(l.Feats[feats:])
		l.Feats, l.Sets = l.Feats[:feats], l.Sets[:sets]
		s.bad = true
		return false
	}
	l.Sets = append(l.Sets, FeatureSet{From: feats, To: len(l.Feats)})
	return true
}

// scan reads a features object; check applies Validate's checks of
// names (not empty, not too long) and of the limits.
func (l *FeatureList) scan(s *Scanner, lim Limits, check bool) bool {
	from := len(l.Feats)
	if !s.Open('{') {
		return false
	}
	nss := 0
	for first := true; s.More('}', &first); {
		ns, ok := s.Key()
		if !ok || check && (ns == "" || len(ns) > lim.MaxStringBytes) || !s.Open('{') {
			return false
		}
		if nss++; nss > lim.MaxNamespaces {
			return false
		}
		nsFrom := len(l.Feats)
		for _, f := range l.Feats[from:nsFrom] {
			if f.NS == ns {
				return false // a repeated namespace
			}
		}
		names := 0
		for first := true; s.More('}', &first); {
			name, ok := s.Key()
			if !ok || check && (name == "" || len(name) > lim.MaxStringBytes) {
				return false
			}
			if names++; names > lim.MaxFeaturesPerNS {
				return false
			}
			for _, f := range l.Feats[nsFrom:] {
				if f.Name == name {
					return false // a repeated name
				}
			}
			switch s.Peek() {
			case '"':
				v, ok := s.Str()
				if !ok || len(v) > lim.MaxStringBytes {
					return false
				}
				l.Feats = append(l.Feats, ListedFeature{NS: ns, Name: name, Str: v, Num: 1, Kind: ListedString})
			case 't', 'f':
				v, ok := s.Bool()
				if !ok {
					return false
				}
				n := 0.0
				if v {
					n = 1
				}
				l.Feats = append(l.Feats, ListedFeature{NS: ns, Name: name, Num: n, Kind: ListedBool})
			case '[':
				s.i++
				m := 0
				for first := true; s.More(']', &first); m++ {
					if m == lim.MaxBagSize || s.Peek() != '"' {
						return false
					}
					v, ok := s.Str()
					if !ok || len(v) > lim.MaxStringBytes {
						return false
					}
					l.Feats = append(l.Feats, ListedFeature{NS: ns, Name: name, Str: v, Num: 1, Kind: ListedMember})
				}
				if s.bad {
					return false
				}
				if m == 0 {
					l.Feats = append(l.Feats, ListedFeature{NS: ns, Name: name, Kind: ListedEmptyBag})
				}
			default:
				v, ok := s.Number()
				if !ok {
					return false
				}
				l.Feats = append(l.Feats, ListedFeature{NS: ns, Name: name, Num: v, Kind: ListedNumber})
			}
		}
		if s.bad {
			return false
		}
	}
	return !s.bad
}

// Features returns set i as Features, as decoding its JSON gives them: a
// bag is a []any of strings.
func (l *FeatureList) Features(i int) Features {
	set := l.Set(i)
	if len(set) == 0 {
		return nil
	}
	f := Features{}
	for j := 0; j < len(set); j++ {
		lf := set[j]
		feats := f[lf.NS]
		if feats == nil {
			feats = map[string]any{}
			f[lf.NS] = feats
		}
		switch lf.Kind {
		case ListedString:
			feats[lf.Name] = lf.Str
		case ListedNumber:
			feats[lf.Name] = lf.Num
		case ListedBool:
			feats[lf.Name] = lf.Num == 1
		case ListedEmptyBag:
			feats[lf.Name] = []any{}
		case ListedMember:
			bag := []any{}
			for ; j < len(set) && set[j].Kind == ListedMember && set[j].NS == lf.NS && set[j].Name == lf.Name; j++ {
				bag = append(bag, set[j].Str)
			}
			j--
			feats[lf.Name] = bag
		}
	}
	return f
}

// Flatten lists set i as Features.Flatten lists the same features:
// namespaces, then names, then bag members in their order, each name as
// "ns^name".
func (l *FeatureList) Flatten(i int) (names, values []string, numbers []float64) {
	set := l.Set(i)
	order := make([]int, 0, len(set))
	for j, f := range set {
		if f.Kind != ListedEmptyBag {
			order = append(order, j)
		}
	}
	slices.SortStableFunc(order, func(a, b int) int {
		if c := strings.Compare(set[a].NS, set[b].NS); c != 0 {
			return c
		}
		return strings.Compare(set[a].Name, set[b].Name)
	})
	names, values, numbers = make([]string, len(order)), make([]string, len(order)), make([]float64, len(order))
	for k, j := range order {
		f := set[j]
		names[k], values[k], numbers[k] = f.NS+"^"+f.Name, f.Str, f.Num
	}
	return names, values, numbers
}

// ScanLogged is Scan for features read back from the log, which serving
// checked when it took them: nothing is bounded and empty names are taken
// (a record imported from elsewhere may have them), as decoding into
// Features takes them; what is not valid JSON, a repeated key and a string
// that is not valid UTF-8 are still refused.
func (l *FeatureList) ScanLogged(b []byte) bool {
	feats, sets := len(l.Feats), len(l.Sets)
	end, ok := l.ScanLoggedPrefix(b)
	if !ok {
		return false
	}
	if s := NewScanner(b[end:]); !s.End() { // trailing data
		clear(l.Feats[feats:])
		l.Feats, l.Sets = l.Feats[:feats], l.Sets[:sets]
		return false
	}
	return true
}

// ScanLoggedPrefix is ScanLogged for the features object at the start of b,
// which may go on after it: it returns where the object ended.
func (l *FeatureList) ScanLoggedPrefix(b []byte) (end int, ok bool) {
	s := NewScanner(b)
	if !l.ScanLoggedFrom(&s) {
		return 0, false
	}
	return s.Pos(), true
}

// ScanLoggedFrom is ScanLogged reading the features object at s's
// position, leaving s after it: for features inside a logged record. On
// false, l is as it was and s is Bad.
func (l *FeatureList) ScanLoggedFrom(s *Scanner) bool {
	feats, sets := len(l.Feats), len(l.Sets)
	if !l.scan(s, unbounded, false) {
		clear(l.Feats[feats:])
		l.Feats, l.Sets = l.Feats[:feats], l.Sets[:sets]
		s.bad = true
		return false
	}
	l.Sets = append(l.Sets, FeatureSet{From: feats, To: len(l.Feats)})
	return true
}

// ScanLoggedActions appends the features of every action of b, an actions
// array as logged ([{"id": …, "features": {…}}, …]), to l as one set per
// action, and returns sets with the actions' set indexes appended. Each
// action is an object of "id" (a string) and "features" (ScanLogged's
// object, or null, or absent: no features), each at most once; anything
// else, decoding into []Action takes its own way (keys matched without
// case, a null id), so it reports false, l and sets as they were, and the
// caller decodes the general way. Strings share b's memory.
func (l *FeatureList) ScanLoggedActions(b []byte, sets []int) ([]int, bool) {
	s := NewScanner(b)
	feats, nsets, n0 := len(l.Feats), len(l.Sets), len(sets)
	fail := func() ([]int, bool) {
		clear(l.Feats[feats:])
		l.Feats, l.Sets = l.Feats[:feats], l.Sets[:nsets]
		return sets[:n0], false
	}
	if !s.Open('[') {
		return fail()
	}
	for first := true; s.More(']', &first); {
		if !s.Open('{') {
			return fail()
		}
		id, features, withFeatures := false, false, false
		for firstKey := true; s.More('}', &firstKey); {
			k, ok := s.Key()
			switch {
			case !ok:
				return fail()
			case k == "id" && !id:
				id = true
				if _, ok := s.Str(); !ok {
					return fail()
				}
			case k == "features" && !features:
				features = true
				if s.Null() {
					continue
				}
				withFeatures = true
				from := len(l.Feats)
				if !l.scan(&s, unbounded, false) {
					return fail()
				}
				l.Sets = append(l.Sets, FeatureSet{From: from, To: len(l.Feats)})
			default:
				return fail()
			}
		}
		if s.Bad() {
			return fail()
		}
		if !withFeatures {
			l.AddEmpty()
		}
		sets = append(sets, len(l.Sets)-1)
	}
	if s.Bad() || !s.End() {
		return fail()
	}
	return sets, true
}

var unbounded = Limits{MaxActions: math.MaxInt, MaxFeaturesPerNS: math.MaxInt, MaxNamespaces: math.MaxInt, MaxBagSize: math.MaxInt,
	MaxStringBytes: math.MaxInt, MaxFeedbackPerBatch: math.MaxInt, MaxBodyBytes: math.MaxInt64, MaxFeaturesPerRequest: math.MaxInt}

// Lookup returns the value of the categorical feature ns^name of set i.
func (l *FeatureList) Lookup(i int, ns, name string) (string, bool) {
	for _, f := range l.Set(i) {
		if f.NS == ns && f.Name == name {
			return f.Str, f.Kind == ListedString
		}
	}
	return "", false
}

// count returns how many hashed features namespace ns of set holds, as
// Features.count counts them.
func countListed(set []ListedFeature, ns string) int {
	n := 0
	for _, f := range set {
		if f.NS != ns {
			continue
		}
		switch f.Kind {
		case ListedString, ListedMember:
			n++
		case ListedNumber, ListedBool:
			if f.Num != 0 {
				n++
			}
		}
	}
	return n
}

// sizeListed returns how many hashed features set holds.
func sizeListed(set []ListedFeature) int {
	n := 0
	for _, f := range set {
		if f.Kind != ListedEmptyBag && (f.Num != 0 || f.Kind == ListedString || f.Kind == ListedMember) {
			n++
		}
	}
	return n
}

// maxTallyPairs is the most interaction pairs tallyListed counts for.
const maxTallyPairs = 8

// tallyListed returns how many hashed features set holds (sizeListed) and
// adds to c[i] how many of them are in each namespace of pairs[i]
// (countListed), in one pass.
func tallyListed(set []ListedFeature, pairs [][2]string, c *[maxTallyPairs][2]int) int {
	n := 0
	for _, f := range set {
		switch f.Kind {
		case ListedString, ListedMember:
		case ListedNumber, ListedBool:
			if f.Num == 0 {
				continue
			}
		default:
			continue
		}
		n++
		for i, p := range pairs {
			if f.NS == p[0] {
				c[i][0]++
			}
			if f.NS == p[1] {
				c[i][1]++
			}
		}
	}
	return n
}

// CostListed is Cost for a request whose context is set ctx of l and whose
// actions are the sets listed in actions.
func CostListed(l *FeatureList, ctx int, actions []int, pairs [][2]string, limit int) int {
	cs := l.Set(ctx)
	if len(pairs) <= maxTallyPairs {
		// One pass over each set, counting its features and each pair's
		// namespaces at once.
		var side [maxTallyPairs][2]int
		ctxSize := tallyListed(cs, pairs, &side)
		if len(actions) == 0 {
			total := ctxSize
			for i := range pairs {
				total += side[i][0] * side[i][1]
			}
			return total
		}
		total := 0
		for _, a := range actions {
			var own [maxTallyPairs][2]int
			total += ctxSize + tallyListed(l.Set(a), pairs, &own)
			for i := range pairs {
				total += (side[i][0] + own[i][0]) * (side[i][1] + own[i][1])
			}
			if total > limit {
				return total
			}
		}
		return total
	}
	return cost(sizeListed(cs), func(ns string) int { return countListed(cs, ns) }, len(actions),
		func(a int) int { return sizeListed(l.Set(actions[a])) },
		func(a int, ns string) int { return countListed(l.Set(actions[a]), ns) }, pairs, limit)
}
