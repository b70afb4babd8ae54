package ingest

import (
	"bytes"
	"runtime"
	"sync"

	"github.com/bytedance/sonic"
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
	ctxJSON, actJSON    string
	chosenProbability   float64
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
	r.actJSON = actionsJSON(actions)
	return r, nil
}

// rawJSON writes the actions' features as they came: they were decoded, so
// they are valid JSON.
var rawJSON = sonic.Config{NoValidateJSONMarshaler: true}.Froze()

func actionsJSON(actions []flywheel.RawAction) string {
	if len(actions) == 0 {
		return "[]"
	}
	b, _ := rawJSON.Marshal(actions)
	return string(b)
}

// decoded is the outcome of decoding one message of a batch.
type decoded struct {
	decision *row
	feedback *flywheel.Feedback
	err      error
}

// decodeAll decodes a batch on every core, keeping its order.
func decodeAll(batch []kafkago.Message, decisionsTopic string) []decoded {
	out := make([]decoded, len(batch))
	workers := min(runtime.GOMAXPROCS(0), max(len(batch)/64, 1))
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(batch); i += workers {
				m := &batch[i]
				if m.Topic == decisionsTopic {
					out[i].decision, out[i].err = decodeDecision(m.Value)
					continue
				}
				var f flywheel.Feedback
				err := sonic.Unmarshal(m.Value, &f)
				if err == nil {
					err = f.Validate()
				}
				if err == nil {
					out[i].feedback = &f
				}
				out[i].err = err
			}
		}(w)
	}
	wg.Wait()
	return out
}
