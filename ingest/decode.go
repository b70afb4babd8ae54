package ingest

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/bytedance/sonic"
	"github.com/go-faster/city"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/flywheel-dev/flywheel"
)

// row is one decision ready for the decisions table.
type row struct {
	d                   flywheel.DecisionRecord
	ctxNames, ctxValues []string
	ctxNumbers          []float64
	actionIDs           []string
	chNames, chValues   []string
	chNumbers           []float64
	ctxJSON, actJSON    string     // the context and the actions as logged when they could be
	actionJSON          []string   // each action's JSON (a part of actJSON)
	actionKeys          []string   // the key of each action's JSON (actionKey), in hex
	actionHashes        [][16]byte // the hashes behind actionKeys
	inline              bool       // store actJSON with the decision (an action is new)
	chosenProbability   float64
}

// actionKey appends the 128-bit CityHash of an action's JSON to dst; in hex,
// it is the key the action is stored under in the actions table.
func actionKey(dst []byte, js []byte) []byte {
	h := city.Hash128(js)
	dst = binary.BigEndian.AppendUint64(dst, h.High)
	dst = binary.BigEndian.AppendUint64(dst, h.Low)
	return dst
}

// keyActions fills r.actionHashes and r.actionKeys from r.actionJSON, the
// hex keys sharing one allocation.
func (r *row) keyActions() {
	buf := make([]byte, 0, 32*len(r.actionJSON))
	r.actionHashes = make([][16]byte, len(r.actionJSON))
	for i, js := range r.actionJSON {
		h := actionKey(r.actionHashes[i][:0], unsafe.Slice(unsafe.StringData(js), len(js)))
		buf = hex.AppendEncode(buf, h)
	}
	all := unsafeString(buf)
	r.actionKeys = make([]string, len(r.actionJSON))
	for i := range r.actionKeys {
		r.actionKeys[i] = all[32*i : 32*(i+1)]
	}
}

var emptyObject = []byte("{}")

// decodeDecision decodes and checks one logged decision, as strictly as
// Decision.Validate does.
func decodeDecision(b []byte) (*row, error) {
	if r, ok := scanDecision(b); ok {
		return r, nil
	}
	return decodeGeneral(b)
}

// decodeGeneral decodes any decision through maps, and names what is wrong
// with one it refuses.
func decodeGeneral(b []byte) (*row, error) {
	r := &row{}
	d := &r.d
	if err := sonic.Unmarshal(b, d); err != nil {
		return nil, flywheel.Errorf(flywheel.EINVALID, "%v", err)
	}
	actions := d.Actions
	var ctx flywheel.Features
	if len(d.Context) > 0 && !bytes.Equal(d.Context, []byte("null")) {
		if err := sonic.Unmarshal(d.Context, &ctx); err != nil {
			return nil, flywheel.Errorf(flywheel.EINVALID, "context: %v", err)
		}
	} else {
		d.Context = emptyObject
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	r.ctxNames, r.ctxValues, r.ctxNumbers = flat(ctx)
	r.actionIDs = make([]string, len(actions))
	for i, a := range actions {
		r.actionIDs[i] = a.ID
	}
	if d.Kind == flywheel.KindRanker {
		var chosen flywheel.Features
		if f := actions[d.ChosenIndex].Features; len(f) > 0 {
			if err := sonic.Unmarshal(f, &chosen); err != nil {
				return nil, flywheel.Errorf(flywheel.EINVALID, "actions[%d].features: %v", d.ChosenIndex, err)
			}
		}
		r.chNames, r.chValues, r.chNumbers = flat(chosen)
		r.chosenProbability = d.Probabilities[d.ChosenIndex]
	} else {
		r.chNames, r.chValues, r.chNumbers = []string{}, []string{}, []float64{}
	}
	if d.Probabilities == nil {
		d.Probabilities = []float64{}
	}
	r.ctxJSON = string(d.Context)
	r.actionJSON = make([]string, len(actions))
	for i, a := range actions {
		// They were decoded, so their features are valid JSON.
		b, _ := rawJSON.Marshal(a)
		r.actionJSON[i] = string(b)
	}
	r.actJSON = "[" + strings.Join(r.actionJSON, ",") + "]"
	r.keyActions()
	return r, nil
}

// flat lists f's features as the parallel columns of names, values and
// numbers, in Features.Flatten's order.
func flat(f flywheel.Features) (names, values []string, numbers []float64) {
	fl := f.Flatten()
	names, values, numbers = make([]string, len(fl)), make([]string, len(fl)), make([]float64, len(fl))
	for i, x := range fl {
		names[i], values[i], numbers[i] = x.Name, x.Value, x.Number
	}
	return names, values, numbers
}

// rawJSON writes the actions' features as they came.
var rawJSON = sonic.Config{NoValidateJSONMarshaler: true}.Froze()

// decoded is the outcome of decoding one message of a batch.
type decoded struct {
	decision *row
	feedback *flywheel.Feedback
	spool    *flywheel.SpoolWatermark // a serving process's control record in the feedback topic
	err      error
}

var spoolWatermarkPrefix = []byte(flywheel.SpoolWatermarkPrefix)

// decodeOne decodes and checks one record of either topic.
func decodeOne(m *kafkago.Message, decisionsTopic string) (x decoded) {
	if m.Topic == decisionsTopic {
		x.decision, x.err = decodeDecision(m.Value)
		return x
	}
	if bytes.HasPrefix(m.Value, spoolWatermarkPrefix) {
		var w flywheel.SpoolWatermarkRecord
		err := sonic.Unmarshal(m.Value, &w)
		if err == nil {
			err = w.Watermark.Validate()
		}
		if err == nil {
			x.spool = &w.Watermark
		}
		x.err = err
		return x
	}
	var f flywheel.Feedback
	err := sonic.Unmarshal(m.Value, &f)
	if err == nil {
		err = f.Validate()
	}
	if err == nil {
		x.feedback = &f
	}
	x.err = err
	return x
}

// decodeChunk is how many records one decoding goroutine takes.
const decodeChunk = 256

// decoder decodes a batch while it is still being read: every decodeChunk
// records go to a goroutine (at most one per core at a time), so that when
// the batch is cut most of it is decoded already.
type decoder struct {
	topic  string
	sem    chan struct{}
	wg     sync.WaitGroup
	chunks [][]decoded
	taken  int // records handed to goroutines so far
}

func newDecoder(decisionsTopic string) *decoder {
	return &decoder{topic: decisionsTopic, sem: make(chan struct{}, runtime.GOMAXPROCS(0))}
}

// add is told the batch so far; it starts decoding each full chunk, or
// everything left when last.
func (d *decoder) add(msgs []kafkago.Message, last bool) {
	for len(msgs)-d.taken >= decodeChunk || last && len(msgs) > d.taken {
		n := min(decodeChunk, len(msgs)-d.taken)
		part := msgs[d.taken : d.taken+n] // never written again: appends leave it as it is
		out := make([]decoded, n)
		d.chunks = append(d.chunks, out)
		d.taken += n
		d.sem <- struct{}{}
		d.wg.Add(1)
		go func() {
			defer func() { <-d.sem; d.wg.Done() }()
			for i := range part {
				out[i] = decodeOne(&part[i], d.topic)
			}
		}()
	}
}

// wait decodes what is left of msgs and returns every record's outcome, in
// order.
func (d *decoder) wait(msgs []kafkago.Message) []decoded {
	d.add(msgs, true)
	d.wg.Wait()
	out := make([]decoded, 0, len(msgs))
	for _, c := range d.chunks {
		out = append(out, c...)
	}
	return out
}
