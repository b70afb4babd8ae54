package flywheel

import (
	"encoding/json"
	"strings"
	"testing"
)

// nesting returns how deep b's arrays and objects nest, outside strings.
func nesting(b []byte) int {
	depth, most, inString, escaped := 0, 0, false, false
	for _, c := range b {
		switch {
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			depth++
			most = max(most, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return most
}

// Skip takes exactly the valid JSON values (up to its depth), and a value
// read member by member ends where Skip ends.
func TestScannerSkip(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`{"a": [1, -2.5e3, "x\u00e9\n", true, false, null, {}], "b": {"c": []}}`, true},
		{` 0 `, true},
		{`"\ud83d\ude00"`, true},
		{`{"a" 1}`, false},
		{`{"a": 1,}`, false},
		{`[1 2]`, false},
		{`01`, false},
		{`1.`, false},
		{`-`, false},
		{`"\x"`, false},
		{"\"a\tb\"", false},
		{`[1}`, false},
		{`{"a": tru}`, false},
		{`nul`, false},
		{strings.Repeat("[", 64) + strings.Repeat("]", 64), true},
		{strings.Repeat("[", 65) + strings.Repeat("]", 65), false}, // deeper than Skip follows
	} {
		s := NewScanner([]byte(tc.in))
		if got := s.Skip() && s.End(); got != tc.ok {
			t.Errorf("Skip(%q) = %v, want %v", tc.in, got, tc.ok)
		}
	}
	s := NewScanner([]byte(`{"a": 1, "b": [2]} {"c": true}`))
	if !s.Skip() || s.Pos() != len(`{"a": 1, "b": [2]}`) {
		t.Fatalf("Skip stopped at %d", s.Pos())
	}
	if !s.Skip() || !s.End() {
		t.Fatalf("the second value was not skipped to the end: at %d, bad %v", s.Pos(), s.Bad())
	}
}

// Every reader skips the white space before its value; Int takes integers
// only, and Number refuses what is out of float64's range.
func TestScannerValues(t *testing.T) {
	s := NewScanner([]byte(`{ "a" :  true , "b" :	-12 , "c" : 2.5e1, "d" : "x" }`))
	if !s.Open('{') {
		t.Fatal("no object")
	}
	first := true
	read := func(key string) {
		t.Helper()
		if !s.More('}', &first) {
			t.Fatalf("no member %s", key)
		}
		if k, ok := s.Key(); !ok || k != key {
			t.Fatalf("key %q, %v; want %q", k, ok, key)
		}
	}
	read("a")
	if v, ok := s.Bool(); !ok || !v {
		t.Fatalf("a: %v %v", v, ok)
	}
	read("b")
	if v, ok := s.Int(); !ok || v != -12 {
		t.Fatalf("b: %v %v", v, ok)
	}
	read("c")
	if v, ok := s.Number(); !ok || v != 25 {
		t.Fatalf("c: %v %v", v, ok)
	}
	read("d")
	if v, ok := s.Str(); !ok || v != "x" {
		t.Fatalf("d: %q %v", v, ok)
	}
	if s.More('}', &first) || s.Bad() || !s.End() {
		t.Fatalf("the object did not end: bad %v, at %d", s.Bad(), s.Pos())
	}
	for _, in := range []string{`1.5`, `1e3`, `9223372036854775808`, `"1"`} {
		s := NewScanner([]byte(in))
		if v, ok := s.Int(); ok || !s.Bad() {
			t.Errorf("Int(%s) = %v, true; want a refusal", in, v)
		}
	}
	if s := NewScanner([]byte(`1e999`)); func() bool { _, ok := s.Number(); return ok }() {
		t.Error("Number(1e999) was taken")
	}
}

// Whatever the bytes, Skip takes them exactly when encoding/json finds them
// valid (nested no deeper than Skip follows), and stops where the value ends.
func FuzzScannerSkip(f *testing.F) {
	for _, s := range []string{`{"a":[1,"b",{"c":null}]}`, `[true,false,-0.5e-3]`, `"\u00e9"`, `{"a":}`, `[1,]`, " 12 ", `"\ud800"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if nesting(b) > maxSkipDepth {
			return
		}
		s := NewScanner(b)
		got := s.Skip() && s.End()
		if want := json.Valid(b); got != want {
			t.Fatalf("Skip(%q) && End = %v; json.Valid = %v", b, got, want)
		}
	})
}
