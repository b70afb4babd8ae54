package flywheel

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// Scanner reads strict JSON (RFC 8259) from the start of a byte slice, one
// token at a time, keeping nothing: the streaming reader that serving's
// request decoding, the feature lists and ingest's record decoding build
// on. The first thing it cannot read sets Bad, and every later call then
// fails; its strings share the slice's memory. Every method that reads a
// value skips the white space before it.
type Scanner struct {
	b   []byte
	i   int
	bad bool
}

// NewScanner returns a Scanner at the start of b.
func NewScanner(b []byte) Scanner { return Scanner{b: b} }

// Pos is where the scanner is: the offset in b of what it reads next (after
// white space once Peek has skipped it).
func (s *Scanner) Pos() int { return s.i }

// Bad reports whether the scanner met something it could not read.
func (s *Scanner) Bad() bool { return s.bad }

// Fail marks the scanner Bad: what it read is not what the caller accepts.
func (s *Scanner) Fail() { s.bad = true }

// Null reads the literal null if it comes next, and reports whether it did.
func (s *Scanner) Null() bool {
	if s.Peek() == 'n' && bytes.HasPrefix(s.b[s.i:], []byte("null")) {
		s.i += 4
		return true
	}
	return false
}

var jsSpace, jsSpecial = func() (sp, spec [256]bool) {
	for _, c := range " \t\n\r" {
		sp[c] = true
	}
	for c := range 256 {
		spec[c] = c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf
	}
	return sp, spec
}()

// Peek skips white space and returns the next byte, or 0 at the end.
func (s *Scanner) Peek() byte {
	for s.i < len(s.b) && jsSpace[s.b[s.i]] {
		s.i++
	}
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// End reports whether only white space is left.
func (s *Scanner) End() bool { return s.Peek() == 0 && s.i == len(s.b) }

// Open consumes c ('{' or '['), which must come next.
func (s *Scanner) Open(c byte) bool {
	if s.Peek() != c {
		s.bad = true
		return false
	}
	s.i++
	return true
}

// More reports whether another member or element follows in an object or
// array closed by c, consuming the comma or the closing c; first is true
// before the first call.
func (s *Scanner) More(c byte, first *bool) bool {
	if s.bad {
		return false
	}
	switch next := s.Peek(); {
	case next == c:
		s.i++
		return false
	case *first:
		*first = false
		return true
	case next == ',':
		s.i++
		return true
	}
	s.bad = true
	return false
}

// Str reads a string. One without escapes is b's bytes; one with escapes
// is decoded (rare). One that is not valid UTF-8 is refused, and so is one
// with an escaped surrogate: decoders replace what is invalid, each in its
// own way, and the caller's general decoder is the one to say.
func (s *Scanner) Str() (string, bool) {
	if s.Peek() != '"' {
		s.bad = true
		return "", false
	}
	start := s.i
	end, plain := stringEnd(s.b, start)
	if end < 0 {
		s.bad = true
		return "", false
	}
	raw := s.b[start+1 : end-1]
	s.i = end
	if plain || bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return unsafe.String(unsafe.SliceData(raw), len(raw)), true
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		s.bad = true // invalid UTF-8
		return "", false
	}
	var v string
	if json.Unmarshal(s.b[start:end], &v) != nil || !utf8.ValidString(v) || bytes.Contains(raw, []byte(`\ud`)) || bytes.Contains(raw, []byte(`\uD`)) {
		s.bad = true // a lone or paired surrogate: left to the general decoder
		return "", false
	}
	return v, true
}

// Key reads an object's key and the colon after it.
func (s *Scanner) Key() (string, bool) {
	k, ok := s.Str()
	if !ok || s.Peek() != ':' {
		s.bad = true
		return "", false
	}
	s.i++
	return k, true
}

// Bool reads true or false.
func (s *Scanner) Bool() (bool, bool) {
	s.Peek()
	switch {
	case bytes.HasPrefix(s.b[s.i:], []byte("true")):
		s.i += 4
		return true, true
	case bytes.HasPrefix(s.b[s.i:], []byte("false")):
		s.i += 5
		return false, true
	}
	s.bad = true
	return false, false
}

// Number reads a JSON number; one out of float64's range is refused.
func (s *Scanner) Number() (float64, bool) {
	text, ok := s.number()
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(text), len(text)), 64)
	if err != nil || math.IsInf(v, 0) {
		s.bad = true
		return 0, false
	}
	return v, true
}

// Int reads a JSON number written as an integer (no fraction, no
// exponent) in int64's range.
func (s *Scanner) Int() (int64, bool) {
	text, ok := s.number()
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(unsafe.String(unsafe.SliceData(text), len(text)), 10, 64)
	if err != nil {
		s.bad = true
		return 0, false
	}
	return v, true
}

// number reads the text of a JSON number.
func (s *Scanner) number() ([]byte, bool) {
	s.Peek()
	start := s.i
	end := numberEnd(s.b, start)
	if end < 0 {
		s.bad = true
		return nil, false
	}
	s.i = end
	return s.b[start:end], true
}

// maxSkipDepth is how deep Skip follows nested objects and arrays.
const maxSkipDepth = 64

// Skip reads any value, nested at most maxSkipDepth deep, checking it as
// strictly as the rest and keeping nothing: most of a logged record's
// bytes are skipped so (the features of every action but the chosen one).
// It is one loop with a stack of a bit per level (1 for an object, 0 for
// an array).
func (s *Scanner) Skip() bool {
	if s.bad {
		return false
	}
	b, i := s.b, s.i
	var stack uint64
	depth := 0
value:
	for i < len(b) && jsSpace[b[i]] {
		i++
	}
	if i >= len(b) {
		goto bad
	}
	switch b[i] {
	case '{', '[':
		if depth == maxSkipDepth {
			goto bad
		}
		obj := b[i] == '{'
		stack <<= 1
		if obj {
			stack |= 1
		}
		depth++
		i++
		for i < len(b) && jsSpace[b[i]] {
			i++
		}
		if i < len(b) && (obj && b[i] == '}' || !obj && b[i] == ']') {
			i++
			depth--
			stack >>= 1
			goto after
		}
		if obj {
			goto key
		}
		goto value
	case '"':
		if i, _ = stringEnd(b, i); i < 0 {
			goto bad
		}
	case 't':
		if !bytes.HasPrefix(b[i:], []byte("true")) {
			goto bad
		}
		i += 4
	case 'f':
		if !bytes.HasPrefix(b[i:], []byte("false")) {
			goto bad
		}
		i += 5
	case 'n':
		if !bytes.HasPrefix(b[i:], []byte("null")) {
			goto bad
		}
		i += 4
	default:
		if i = numberEnd(b, i); i < 0 {
			goto bad
		}
	}
after:
	if depth == 0 {
		s.i = i
		return true
	}
	for i < len(b) && jsSpace[b[i]] {
		i++
	}
	if i >= len(b) {
		goto bad
	}
	switch c := b[i]; {
	case c == ',':
		i++
		if stack&1 == 1 {
			goto key
		}
		goto value
	case c == '}' && stack&1 == 1, c == ']' && stack&1 == 0:
		i++
		depth--
		stack >>= 1
		goto after
	}
	goto bad
key:
	for i < len(b) && jsSpace[b[i]] {
		i++
	}
	if i >= len(b) || b[i] != '"' {
		goto bad
	}
	if i, _ = stringEnd(b, i); i < 0 {
		goto bad
	}
	for i < len(b) && jsSpace[b[i]] {
		i++
	}
	if i >= len(b) || b[i] != ':' {
		goto bad
	}
	i++
	goto value
bad:
	s.bad = true
	return false
}

// stringEnd returns where the string at b[i] ends (after its closing
// quote), or -1 if it is not a valid JSON string; plain says it has no
// escapes and only ASCII.
func stringEnd(b []byte, i int) (end int, plain bool) {
	i++
	plain = true
	for {
		for i < len(b) && !jsSpecial[b[i]] {
			i++
		}
		if i >= len(b) {
			return -1, false
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, plain
		case c < 0x20:
			return -1, false
		case c == '\\':
			plain = false
			if i+1 >= len(b) {
				return -1, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+5 >= len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return -1, false
				}
				i += 6
			default:
				return -1, false
			}
		default: // a byte of a multi-byte character
			plain = false
			i++
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// numberEnd returns where the number at b[i] ends, or -1 if it is not a
// valid JSON number.
func numberEnd(b []byte, i int) int {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = digits(b, i)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		if j := digits(b, i+1); j > i+1 {
			i = j
		} else {
			return -1
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if j := digits(b, i); j > i {
			i = j
		} else {
			return -1
		}
	}
	return i
}

// digits returns where the run of decimal digits at b[i] ends.
func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}
