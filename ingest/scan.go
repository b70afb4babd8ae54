package ingest

import (
	"slices"
	"strings"
	"sync"
	"unsafe"

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
// is wrong. FuzzScanDecision checks that the two agree. It reads with
// flywheel.Scanner, the JSON reader serving decodes requests with, and the
// features with flywheel.FeatureList, as serving and retraining do.
func scanDecision(b []byte) (*row, bool) {
	// The actions are read into scratch space: the row keeps their ids and
	// their JSON, not the list.
	sc := actionScratchPool.Get().(*actionScratch)
	defer sc.release()
	s := recordScanner{Scanner: flywheel.NewScanner(b), b: b, scratch: sc}
	r := &row{}
	d := &r.d
	var ctxSpan, actSpan []byte
	var seen uint32
	if !s.Open('{') {
		return nil, false
	}
	for first := true; s.More('}', &first); {
		key, ok := s.Key()
		bit, known := topFields[key]
		switch {
		case !ok:
		case !known:
			if foldsToField(key) {
				return nil, false
			}
			s.Skip()
		case seen&bit != 0:
			return nil, false
		default:
			seen |= bit
			switch key {
			case "schema":
				d.Schema = s.int()
			case "event_id":
				d.EventID = s.str()
			case "ts":
				start := s.at()
				if _, ok := s.Str(); ok && d.Time.UnmarshalJSON(b[start:s.Pos()]) != nil {
					s.Fail()
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
				ctxSpan = b[start:s.Pos()]
			case "actions":
				start := s.at()
				d.Actions, r.actionJSON = s.actions()
				actSpan = b[start:s.Pos()]
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
		if s.Bad() {
			return nil, false
		}
	}
	if s.Bad() || !s.End() {
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
			c := recordScanner{Scanner: flywheel.NewScanner(f), b: f}
			r.chNames, r.chValues, r.chNumbers = c.features()
			if c.Bad() || !c.End() {
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
func foldsToField(key string) bool {
	for k := range topFields {
		if strings.EqualFold(k, key) {
			return true
		}
	}
	for _, k := range []string{"id", "features", "window_s", "default", "aggregate", "late_window_s"} {
		if strings.EqualFold(k, key) {
			return true
		}
	}
	return false
}

// recordScanner is flywheel.Scanner with what reading a logged record needs
// besides: the record's bytes, for the spans kept as they were logged, and
// scratch space for its actions. Its readers of one value return the zero
// value when the scanner is Bad, which the caller checks once per field.
type recordScanner struct {
	flywheel.Scanner
	b       []byte
	scratch *actionScratch // for actions
}

// at skips white space and returns where the next value starts.
func (s *recordScanner) at() int {
	s.Peek()
	return s.Pos()
}

func (s *recordScanner) str() string {
	v, _ := s.Str()
	return v
}

func (s *recordScanner) int() int {
	v, _ := s.Int()
	return int(v)
}

func (s *recordScanner) int64() int64 {
	v, _ := s.Int()
	return v
}

func (s *recordScanner) float() float64 {
	v, _ := s.Number()
	return v
}

func (s *recordScanner) bool() bool {
	v, _ := s.Bool()
	return v
}

func (s *recordScanner) numbers() []float64 {
	out := make([]float64, 0, 32)
	if !s.Open('[') {
		return nil
	}
	for first := true; s.More(']', &first); {
		out = append(out, s.float())
	}
	return out
}

// strings reads a list of strings and keeps none of them.
func (s *recordScanner) strings() {
	if !s.Open('[') {
		return
	}
	for first := true; s.More(']', &first); {
		if s.Peek() != '"' {
			s.Fail()
			return
		}
		s.Str()
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
func (s *recordScanner) actions() ([]flywheel.RawAction, []string) {
	out, spans := s.scratch.acts[:0], s.scratch.spans[:0]
	defer func() { s.scratch.acts, s.scratch.spans = out[:0], spans[:0] }()
	if !s.Open('[') {
		return nil, nil
	}
	for first := true; s.More(']', &first); {
		var a flywheel.RawAction
		var seen uint8
		start := s.at()
		if !s.Open('{') {
			return nil, nil
		}
		for first := true; s.More('}', &first); {
			key, ok := s.Key()
			switch {
			case !ok:
			case key == "id" && seen&1 == 0:
				seen |= 1
				a.ID = s.str()
			case key == "features" && seen&2 == 0 && s.Peek() == '{':
				seen |= 2
				start := s.Pos()
				s.Skip()
				a.Features = s.b[start:s.Pos()]
			case foldsToField(key):
				s.Fail()
			default:
				s.Skip()
			}
		}
		out = append(out, a)
		spans = append(spans, unsafeString(s.b[start:s.Pos()]))
	}
	return out, spans
}

func (s *recordScanner) reward() (rule flywheel.RewardRule) {
	var seen uint8
	if !s.Open('{') {
		return rule
	}
	for first := true; s.More('}', &first); {
		key, ok := s.Key()
		switch {
		case !ok:
		case key == "window_s" && seen&1 == 0:
			seen |= 1
			rule.WindowSeconds = s.int64()
		case key == "default" && seen&2 == 0:
			seen |= 2
			rule.Default = s.float()
		case key == "aggregate" && seen&4 == 0:
			seen |= 4
			rule.Aggregate = s.str()
		case key == "late_window_s" && seen&8 == 0:
			seen |= 8
			rule.LateWindowSeconds = s.int64()
		case foldsToField(key):
			s.Fail()
		default:
			s.Skip()
		}
	}
	return rule
}

// features flattens an object of namespaces in Features.Flatten's order
// (namespaces, then names, then bag members in order), read by the
// FeatureList that serving reads requests with; it says no (bad) for what
// that refuses, and the record is then decoded the general way.
func (s *recordScanner) features() (names, values []string, numbers []float64) {
	l := listPool.Get().(*flywheel.FeatureList)
	defer func() {
		l.Reset()
		listPool.Put(l)
	}()
	if !l.ScanLoggedFrom(&s.Scanner) {
		return nil, nil, nil
	}
	return l.Flatten(0)
}

// listPool holds the FeatureLists features reads into; what it returns are
// new slices (of strings that share the record), so a list is reused at once.
var listPool = sync.Pool{New: func() any { return &flywheel.FeatureList{Feats: make([]flywheel.ListedFeature, 0, 64)} }}
