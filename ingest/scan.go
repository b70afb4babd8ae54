package ingest

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
	"unsafe"

	"github.com/bytedance/sonic"

	"github.com/flywheel-dev/flywheel"
)

// scanDecision is the fast path of decodeDecision: one strict pass over the
// record that keeps the context and actions JSON as the bytes they were
// logged as, flattens the context and the chosen action's features straight
// from the text, and builds no maps. Its strings share b's memory (a Kafka
// message's value, never written to). It handles the records serving
// writes; for anything else (a null, a key that differs from a field's name
// only in case, a repeated key, a feature value that is not a string,
// number, bool or list of strings, a malformed record) it says no, and
// decodeDecision decodes the record the general way, which also names what
// is wrong. FuzzScanDecision checks that the two agree.
func scanDecision(b []byte) (*row, bool) {
	// The actions are read into scratch space: the row keeps their ids and
	// their JSON, not the list.
	sc := actionScratchPool.Get().(*actionScratch)
	defer sc.release()
	s := scanner{b: b, scratch: sc}
	r := &row{}
	d := &r.d
	var ctxSpan, actSpan []byte
	var seen uint32
	if !s.open('{') {
		return nil, false
	}
	for first := true; s.more('}', &first); {
		key := s.key()
		bit, known := topFields[unsafeString(key)]
		switch {
		case s.bad:
		case !known:
			if foldsToField(key) {
				return nil, false
			}
			s.skip()
		case seen&bit != 0:
			return nil, false
		default:
			seen |= bit
			switch unsafeString(key) {
			case "schema":
				d.Schema = s.int()
			case "event_id":
				d.EventID = s.str()
			case "ts":
				if q := s.quoted(); !s.bad && d.Time.UnmarshalJSON(q) != nil {
					s.bad = true
				}
			case "model":
				d.Model = s.str()
			case "kind":
				d.Kind = s.str()
			case "model_version":
				d.Version = s.int()
			case "variant":
				d.Variant = s.str()
			case "context":
				start := s.at()
				r.ctxNames, r.ctxValues, r.ctxNumbers = s.features()
				ctxSpan = b[start:s.i]
			case "actions":
				start := s.at()
				d.Actions, r.actionJSON = s.actions()
				actSpan = b[start:s.i]
			case "probabilities":
				d.Probabilities = s.numbers()
			case "ranking":
				s.strings()
			case "chosen_index":
				d.ChosenIndex = s.int()
			case "chosen":
				d.Chosen = s.str()
			case "explored":
				d.Explored = s.bool()
			case "deferred":
				d.Deferred = s.bool()
			case "server_id":
				d.ServerID = s.bool()
			case "score":
				d.Score = s.float()
			case "reward":
				d.Reward = s.reward()
			}
		}
		if s.bad {
			return nil, false
		}
	}
	if s.bad || !s.end() {
		return nil, false
	}
	if ctxSpan == nil {
		d.Context = emptyObject
		r.ctxNames, r.ctxValues, r.ctxNumbers = []string{}, []string{}, []float64{}
	} else {
		d.Context = ctxSpan
	}
	if d.Validate() != nil {
		return nil, false
	}
	r.actionIDs = make([]string, len(d.Actions))
	for i, a := range d.Actions {
		r.actionIDs[i] = a.ID
	}
	r.chNames, r.chValues, r.chNumbers = []string{}, []string{}, []float64{}
	if d.Kind == flywheel.KindRanker {
		if f := d.Actions[d.ChosenIndex].Features; len(f) > 0 {
			c := scanner{b: f}
			r.chNames, r.chValues, r.chNumbers = c.features()
			if c.bad || !c.end() {
				return nil, false
			}
		}
		r.chosenProbability = d.Probabilities[d.ChosenIndex]
	}
	if d.Probabilities == nil {
		d.Probabilities = []float64{}
	}
	r.ctxJSON = unsafeString(d.Context)
	r.actJSON = "[]"
	if len(d.Actions) > 0 {
		r.actJSON = unsafeString(actSpan)
	}
	r.actionJSON = slices.Clone(r.actionJSON)
	if r.actionJSON == nil {
		r.actionJSON = []string{}
	}
	d.Actions = nil // the scratch's
	r.keyActions()
	return r, true
}

// unsafeString is b as a string without a copy; b must never change.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

var topFields = func() map[string]uint32 {
	m := map[string]uint32{}
	for i, k := range []string{"schema", "event_id", "ts", "model", "kind", "model_version", "variant", "context",
		"actions", "probabilities", "ranking", "chosen_index", "chosen", "explored", "score", "reward", "deferred", "server_id"} {
		m[k] = 1 << i
	}
	return m
}()

// foldsToField reports whether key would match one of the record's fields
// when compared without case, as the general decoder compares them.
func foldsToField(key []byte) bool {
	for k := range topFields {
		if strings.EqualFold(k, string(key)) {
			return true
		}
	}
	for _, k := range []string{"id", "features", "window_s", "default", "aggregate", "late_window_s"} {
		if strings.EqualFold(k, string(key)) {
			return true
		}
	}
	return false
}

// scanner reads JSON strictly (RFC 8259) from b at i. A method that finds
// something it cannot read sets bad; later calls then do nothing useful.
type scanner struct {
	b       []byte
	i       int
	bad     bool
	scratch *actionScratch // for actions
}

var space, special = func() (sp, spec [256]bool) {
	for _, c := range " \t\n\r" {
		sp[c] = true
	}
	for c := range 256 {
		spec[c] = c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf
	}
	return sp, spec
}()

func (s *scanner) ws() {
	b, i := s.b, s.i
	if i < len(b) && b[i] > ' ' {
		return
	}
	for i < len(b) && space[b[i]] {
		i++
	}
	s.i = i
}

// at skips white space and returns where the next value starts.
func (s *scanner) at() int {
	s.ws()
	return s.i
}

// end reports whether only white space is left.
func (s *scanner) end() bool {
	s.ws()
	return s.i == len(s.b)
}

// peek returns the next byte that is not white space, or 0.
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// open consumes c ('{' or '['), which must come next.
func (s *scanner) open(c byte) bool {
	if s.peek() != c {
		s.bad = true
		return false
	}
	s.i++
	return true
}

// more reports whether another member or element follows in an object or
// array closed by c, consuming the comma or the closing c. first is true
// before the first call.
func (s *scanner) more(c byte, first *bool) bool {
	if s.bad {
		return false
	}
	next := s.peek()
	if next == c {
		s.i++
		return false
	}
	if *first {
		*first = false
		return true
	}
	if next == ',' {
		s.i++
		return true
	}
	s.bad = true
	return false
}

// key reads an object key and its colon. Keys with escapes (rare) are
// unescaped by the general decoder.
func (s *scanner) key() []byte {
	if s.peek() != '"' {
		s.bad = true
		return nil
	}
	start := s.i
	key, plain := s.rawString()
	if !plain && !s.bad && (bytes.IndexByte(key, '\\') >= 0 || !utf8.Valid(key)) {
		var k string
		if sonic.Unmarshal(s.b[start:s.i], &k) != nil {
			s.bad = true
		}
		key = []byte(k)
	}
	if s.bad || s.peek() != ':' {
		s.bad = true
		return nil
	}
	s.i++
	return key
}

// rawString reads a string at s.i and returns its contents as they are
// written; plain says they contain no escapes and only ASCII, so they are
// the string's value too.
func (s *scanner) rawString() (raw []byte, plain bool) {
	end, plain := scanString(s.b, s.i)
	if end < 0 {
		s.bad = true
		return nil, false
	}
	raw, s.i = s.b[s.i+1:end-1], end
	return raw, plain
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// quoted reads a string and returns it with its quotes, as written.
func (s *scanner) quoted() []byte {
	if s.peek() != '"' {
		s.bad = true
		return nil
	}
	start := s.i
	s.rawString()
	return s.b[start:s.i]
}

// str reads a string value. Strings with escapes or invalid UTF-8 are
// decoded by the general decoder, so they come out exactly as it makes them.
func (s *scanner) str() string {
	if s.peek() != '"' {
		s.bad = true
		return ""
	}
	start := s.i
	raw, plain := s.rawString()
	switch {
	case s.bad:
		return ""
	case plain || bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw):
		return unsafeString(raw)
	}
	var v string
	if sonic.Unmarshal(s.b[start:s.i], &v) != nil {
		s.bad = true
	}
	return v
}

// number returns the text of a number at s.i.
func (s *scanner) number() []byte {
	s.ws()
	start := s.i
	end := skipNumber(s.b, s.i)
	if end < 0 {
		s.bad = true
		return nil
	}
	s.i = end
	return s.b[start:end]
}

func (s *scanner) float() float64 {
	n := s.number()
	if s.bad {
		return 0
	}
	f, err := strconv.ParseFloat(unsafeString(n), 64)
	if err != nil {
		s.bad = true
	}
	return f
}

func (s *scanner) int64() int64 {
	n := s.number()
	if s.bad {
		return 0
	}
	v, err := strconv.ParseInt(unsafeString(n), 10, 64)
	if err != nil {
		s.bad = true
	}
	return v
}

func (s *scanner) int() int { return int(s.int64()) }

func (s *scanner) literal(word string) {
	if !bytes.HasPrefix(s.b[s.i:], []byte(word)) {
		s.bad = true
		return
	}
	s.i += len(word)
}

func (s *scanner) bool() bool {
	switch s.peek() {
	case 't':
		s.literal("true")
		return true
	case 'f':
		s.literal("false")
		return false
	}
	s.bad = true
	return false
}

// skip reads any value, nested at most 64 deep, checking it as strictly as
// the rest. It is one loop with its own stack (a bit per level: 1 for an
// object, 0 for an array), as most of a record's bytes are skipped: the
// features of every action but the chosen one.
func (s *scanner) skip() {
	b, i := s.b, s.i
	var stack uint64
	depth := 0
value:
	for i < len(b) && space[b[i]] {
		i++
	}
	if i >= len(b) {
		goto bad
	}
	switch b[i] {
	case '{', '[':
		if depth == 64 {
			goto bad
		}
		obj := b[i] == '{'
		stack <<= 1
		if obj {
			stack |= 1
		}
		depth++
		i++
		for i < len(b) && space[b[i]] {
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
		if i, _ = scanString(b, i); i < 0 {
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
		if i = skipNumber(b, i); i < 0 {
			goto bad
		}
	}
after:
	if depth == 0 {
		s.i = i
		return
	}
	for i < len(b) && space[b[i]] {
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
	for i < len(b) && space[b[i]] {
		i++
	}
	if i >= len(b) || b[i] != '"' {
		goto bad
	}
	if i, _ = scanString(b, i); i < 0 {
		goto bad
	}
	for i < len(b) && space[b[i]] {
		i++
	}
	if i >= len(b) || b[i] != ':' {
		goto bad
	}
	i++
	goto value
bad:
	s.bad = true
}

// scanString returns where the string at b[i] ends (after its closing
// quote), or -1 if it is not a valid JSON string; plain says it has no
// escapes and only ASCII.
func scanString(b []byte, i int) (end int, plain bool) {
	i++
	plain = true
	for {
		for i < len(b) && !special[b[i]] {
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

// skipNumber returns where the number at b[i] ends, or -1 if it is not a
// valid JSON number.
func skipNumber(b []byte, i int) int {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == start {
			return -1
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		start := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == start {
			return -1
		}
	}
	return i
}

func (s *scanner) numbers() []float64 {
	out := make([]float64, 0, 32)
	if !s.open('[') {
		return nil
	}
	for first := true; s.more(']', &first); {
		out = append(out, s.float())
	}
	return out
}

// strings reads a list of strings and keeps none of them.
func (s *scanner) strings() {
	if !s.open('[') {
		return
	}
	for first := true; s.more(']', &first); {
		if s.peek() != '"' {
			s.bad = true
			return
		}
		s.rawString()
	}
}

// actionScratch is where a scan reads a decision's actions.
type actionScratch struct {
	acts  []flywheel.RawAction
	spans []string
}

var actionScratchPool = sync.Pool{New: func() any { return &actionScratch{} }}

// release forgets the record's actions and returns the scratch to the pool.
func (sc *actionScratch) release() {
	clear(sc.acts[:cap(sc.acts)])
	clear(sc.spans[:cap(sc.spans)])
	actionScratchPool.Put(sc)
}

// actions reads a list of actions, and returns each one's JSON as well,
// both in the scanner's scratch space.
func (s *scanner) actions() ([]flywheel.RawAction, []string) {
	out, spans := s.scratch.acts[:0], s.scratch.spans[:0]
	defer func() { s.scratch.acts, s.scratch.spans = out[:0], spans[:0] }()
	if !s.open('[') {
		return nil, nil
	}
	for first := true; s.more(']', &first); {
		var a flywheel.RawAction
		var seen uint8
		start := s.at()
		if !s.open('{') {
			return nil, nil
		}
		for first := true; s.more('}', &first); {
			key := s.key()
			switch {
			case s.bad:
			case string(key) == "id" && seen&1 == 0:
				seen |= 1
				a.ID = s.str()
			case string(key) == "features" && seen&2 == 0 && s.peek() == '{':
				seen |= 2
				start := s.i
				s.skip()
				a.Features = s.b[start:s.i]
			case foldsToField(key):
				s.bad = true
			default:
				s.skip()
			}
		}
		out = append(out, a)
		spans = append(spans, unsafeString(s.b[start:s.i]))
	}
	return out, spans
}

func (s *scanner) reward() (rule flywheel.RewardRule) {
	var seen uint8
	if !s.open('{') {
		return rule
	}
	for first := true; s.more('}', &first); {
		key := s.key()
		switch {
		case s.bad:
		case string(key) == "window_s" && seen&1 == 0:
			seen |= 1
			rule.WindowSeconds = s.int64()
		case string(key) == "default" && seen&2 == 0:
			seen |= 2
			rule.Default = s.float()
		case string(key) == "aggregate" && seen&4 == 0:
			seen |= 4
			rule.Aggregate = s.str()
		case string(key) == "late_window_s" && seen&8 == 0:
			seen |= 8
			rule.LateWindowSeconds = s.int64()
		case foldsToField(key):
			s.bad = true
		default:
			s.skip()
		}
	}
	return rule
}

// features flattens an object of namespaces in Features.Flatten's order
// (namespaces, then names, then bag members in order), read by the
// FeatureList that serving reads requests with; it says no (bad) for what
// that refuses, and the record is then decoded the general way.
func (s *scanner) features() (names, values []string, numbers []float64) {
	start := s.at()
	l := listPool.Get().(*flywheel.FeatureList)
	defer func() {
		l.Reset()
		listPool.Put(l)
	}()
	end, ok := l.ScanLoggedPrefix(s.b[start:])
	if !ok {
		s.bad = true
		return nil, nil, nil
	}
	s.i = start + end
	return l.Flatten(0)
}

// listPool holds the FeatureLists features reads into; what it returns are
// new slices (of strings that share the record), so a list is reused at once.
var listPool = sync.Pool{New: func() any { return &flywheel.FeatureList{Feats: make([]flywheel.ListedFeature, 0, 64)} }}
