package flywheel

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// checkScan compares Scan with the general way, decoding into Features and
// validating: Scan may refuse what the general way takes (the caller then
// takes that way), never the other way round without a reason, and what it
// takes it reads exactly as the maps hold it.
func checkScan(t *testing.T, b []byte, lim Limits) (scanned bool) {
	t.Helper()
	var l FeatureList
	l.Scan([]byte(`{"pre":{"x":1}}`), lim) // a set before: Scan appends
	ok := l.Scan(b, lim)
	var f Features
	err := json.Unmarshal(b, &f)
	if err == nil {
		err = f.Validate("features", lim)
	}
	if !ok {
		if len(l.Sets) != 1 || len(l.Feats) != 1 {
			t.Fatalf("%s: a refused scan left %d sets and %d features, want 1 and 1", b, len(l.Sets), len(l.Feats))
		}
		return false
	}
	if err != nil {
		t.Fatalf("%s: scanned, but the general way says %v", b, err)
	}
	if f == nil {
		f = Features{}
	}
	got := l.Features(1)
	if got == nil {
		got = Features{}
	}
	for ns, feats := range f { // an empty namespace holds nothing to list
		if len(feats) == 0 {
			delete(f, ns)
		}
	}
	if !reflect.DeepEqual(got, f) {
		t.Fatalf("%s: listed %v, decoded %v", b, got, f)
	}
	names, values, numbers := l.Flatten(1)
	var fl []Flat
	for i := range names {
		fl = append(fl, Flat{Name: names[i], Value: values[i], Number: numbers[i]})
	}
	if want := f.Flatten(); !reflect.DeepEqual(fl, want) && len(fl)+len(want) > 0 {
		t.Fatalf("%s: flattened %v, Features.Flatten %v", b, fl, want)
	}
	return true
}

func TestFeatureListScan(t *testing.T) {
	lim := Limits{MaxNamespaces: 3, MaxFeaturesPerNS: 3, MaxBagSize: 2, MaxStringBytes: 8}.WithDefaults()
	for _, tc := range []struct {
		json string
		ok   bool
	}{
		{`{}`, true},
		{` { "user" : { "segment" : "b" , "age" : 31.5e1, "new": true, "old": false, "tags": ["x", "y"], "none": []} } `, false}, // 6 features > 3
		{`{"user":{"segment":"b","age":-0.5,"tags":["x","y"]},"item":{"e":[]}}`, true},
		{`{"user":{"s":"caf\u00e9","t":"café","u":"a\"b"}}`, true},
		{`{"u":{"a":1},"u":{"b":2}}`, false},          // a repeated namespace: the map keeps the last
		{`{"u":{"a":1,"a":2}}`, false},                // a repeated name
		{`{"u":null}`, false},                         // not an object of features
		{`{"u":{"a":null}}`, false},                   // no such value
		{`{"u":{"a":{"b":1}}}`, false},                // nor an object
		{`{"u":{"a":[1]}}`, false},                    // a bag holds strings
		{`{"u":{"a":["x","y","z"]}}`, false},          // a bag over max_bag_size
		{`{"u":{"a":"123456789"}}`, false},            // a string over max_string_bytes
		{`{"":{"a":1}}`, false},                       // an empty namespace name
		{`{"u":{"":1}}`, false},                       // an empty feature name
		{`{"u":{"a":1e400}}`, false},                  // out of range
		{`{"u":{"a":01}}`, false},                     // not JSON
		{`{"u":{"a":1},}`, false},                     // not JSON
		{`{"u":{"a":1}} x`, false},                    // trailing data
		{`{"a":{},"b":{},"c":{},"d":{}}`, false},      // 4 namespaces > 3
		{"{\"u\":{\"a\":\"\xff\"}}", false},           // invalid UTF-8
		{`{"u":{"a":"\ud83d\ude00"}}`, false},         // surrogates: left to the general decoder
		{`{"u":{"a":true,"b":-12.25,"c":"x"}}`, true}, // every scalar kind
	} {
		if got := checkScan(t, []byte(tc.json), lim); got != tc.ok {
			t.Errorf("%s: scanned %v, want %v", tc.json, got, tc.ok)
		}
	}
}

// CostListed counts what Cost counts.
func TestCostListedMatchesCost(t *testing.T) {
	lim := Limits{}.WithDefaults()
	ctx := `{"user":{"a":"x","b":0,"c":2,"t":["p","q"],"f":false}}`
	acts := []string{`{"item":{"id":"1","p":3}}`, `{}`, `{"item":{"id":"2"},"user":{"z":true}}`}
	var l FeatureList
	var f Features
	json.Unmarshal([]byte(ctx), &f)
	l.Scan([]byte(ctx), lim)
	var as []Action
	var sets []int
	for i, a := range acts {
		var af Features
		json.Unmarshal([]byte(a), &af)
		as = append(as, Action{Features: af})
		l.Scan([]byte(a), lim)
		sets = append(sets, i+1)
	}
	pairs := [][2]string{{"user", "item"}, {"user", "user"}}
	if got, want := CostListed(&l, 0, sets, pairs, 1000), Cost(f, as, pairs, 1000); got != want || got == 0 {
		t.Fatalf("CostListed %d, Cost %d", got, want)
	}
	if got, want := CostListed(&l, 0, nil, pairs, 1000), Cost(f, nil, pairs, 1000); got != want {
		t.Fatalf("without actions: CostListed %d, Cost %d", got, want)
	}
	many := slices.Repeat(pairs, 5) // more pairs than one pass tallies
	if got, want := CostListed(&l, 0, sets, many, 1000), Cost(f, as, many, 1000); got != want || got == 0 {
		t.Fatalf("%d pairs: CostListed %d, Cost %d", len(many), got, want)
	}
	if got, want := CostListed(&l, 0, sets, pairs, 3), Cost(f, as, pairs, 3); got != want {
		t.Fatalf("past the limit: CostListed %d, Cost %d", got, want)
	}
}

func FuzzScanFeatures(f *testing.F) {
	for _, s := range []string{`{}`, `{"user":{"segment":"b","age":31,"tags":["x","y"],"new":true}}`, `{"u":{"a":"caf\u00e9"},"v":{"b":[]}}`, `{"u":{"a":1,"a":2}}`} {
		f.Add([]byte(s))
	}
	lim := Limits{MaxNamespaces: 4, MaxFeaturesPerNS: 8, MaxBagSize: 4, MaxStringBytes: 16}.WithDefaults()
	f.Fuzz(func(t *testing.T, b []byte) { checkScan(t, b, lim) })
}

// ScanLogged takes what the log may hold (empty names, no bounds) and
// refuses trailing data and repeated keys, leaving the list as it was.
func TestFeatureListScanLogged(t *testing.T) {
	var l FeatureList
	for _, tc := range []struct {
		json string
		ok   bool
	}{
		{`{"":{"":"x"}}`, true},
		{`{"u":{"a":1}} x`, false},
		{`{"u":{"a":1,"a":2}}`, false},
		{`{"u":{"a":"` + strings.Repeat("x", 5000) + `"}}`, true},
	} {
		before := len(l.Sets)
		if got := l.ScanLogged([]byte(tc.json)); got != tc.ok {
			t.Errorf("%.40s: %v, want %v", tc.json, got, tc.ok)
		}
		if !tc.ok && len(l.Sets) != before {
			t.Errorf("%.40s: a refused scan left a set", tc.json)
		}
	}
}

// checkScanActions compares ScanLoggedActions with decoding into []Action:
// what it takes, the decoder takes too, and it reads every action's
// features exactly as the maps hold them; what it refuses leaves the list
// and the sets as they were.
func checkScanActions(t *testing.T, b []byte) (scanned bool) {
	t.Helper()
	var l FeatureList
	l.ScanLogged([]byte(`{"pre":{"x":1}}`)) // a set before: the scan appends
	sets, ok := l.ScanLoggedActions(b, []int{0})
	if !ok {
		if len(l.Sets) != 1 || len(l.Feats) != 1 || len(sets) != 1 {
			t.Fatalf("%q: a refused scan left %d sets, %d features, %d indexes", b, len(l.Sets), len(l.Feats), len(sets))
		}
		return false
	}
	var acts []Action
	if err := json.Unmarshal(b, &acts); err != nil {
		t.Fatalf("%q: listed, but decoding refuses it: %v", b, err)
	}
	if len(sets) != 1+len(acts) {
		t.Fatalf("%q: %d sets for %d actions", b, len(sets)-1, len(acts))
	}
	for i, a := range acts {
		got := l.Features(sets[1+i])
		for ns, feats := range a.Features { // an empty namespace holds nothing to list
			if len(feats) == 0 {
				delete(a.Features, ns)
			}
		}
		if len(got) == 0 && len(a.Features) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, a.Features) {
			t.Fatalf("%q: action %d listed as %v, decoded as %v", b, i, got, a.Features)
		}
	}
	return true
}

func TestScanLoggedActions(t *testing.T) {
	for _, tc := range []struct {
		json string
		ok   bool
	}{
		{`[]`, true},
		{`[{"id":"a","features":{"item":{"price":12.5,"cat":"x","tags":["p","q"],"new":true,"none":[]}}},{"id":"b"},{"id":"c","features":null},{"features":{}}]`, true},
		{` [ {"features":{"i":{"p":1}}, "id":"a"} ] `, true},
		{`[{"id":"a","ID":"b"}]`, false},                                 // a key the decoder matches without case
		{`[{"id":"a","id":"b"}]`, false},                                 // repeated
		{`[{"id":"a","features":null,"features":{"i":{"p":1}}}]`, false}, // repeated
		{`[{"id":null}]`, false},
		{`[{"id":"a","extra":1}]`, false},
		{`[{"id":"a","features":{"i":{"p":1,"p":2}}}]`, false},
		{`[{"id":"a"}] x`, false},
		{`[{"id":"a"},]`, false},
		{`{"id":"a"}`, false},
	} {
		if got := checkScanActions(t, []byte(tc.json)); got != tc.ok {
			t.Errorf("%s: listed %v, want %v", tc.json, got, tc.ok)
		}
	}
}

// FuzzScanLoggedActions checks ScanLoggedActions against decoding into
// []Action (checkScanActions).
func FuzzScanLoggedActions(f *testing.F) {
	for _, s := range []string{`[]`, `[{"id":"a","features":{"u":{"s":"b","n":31,"t":["x"],"b":true}}},{"id":"b"}]`, `[{"id":"a","features":null}]`, `[{"features":{"u":{"a":"caf\u00e9"}},"id":"x"}]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkScanActions(t, b) })
}
