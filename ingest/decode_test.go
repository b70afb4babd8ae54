package ingest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
)

// A logged decision's row carries the flat columns of its context and chosen
// action, and its context and actions JSON decode back to what was logged.
func TestDecodeDecisionRow(t *testing.T) {
	t.Parallel()
	d := flywheel.Decision{Schema: 1, EventID: "e1", Time: time.Unix(1700000000, 0).UTC(), Model: "m", Kind: flywheel.KindRanker, Version: 3,
		Variant: "canary", Context: flywheel.Features{"user": {"segment": "b", "age": 31.0, "tags": []any{"x", "y"}}},
		Actions:       []flywheel.Action{{ID: "a", Features: flywheel.Features{"item": {"price": 9.5}}}, {ID: "b", Features: flywheel.Features{"item": {"cat": "books"}}}},
		Probabilities: []float64{0.25, 0.75}, ChosenIndex: 1, Chosen: "b", Reward: flywheel.RewardRule{WindowSeconds: 60, Aggregate: "sum"}}
	b, _ := json.Marshal(d)
	r, err := decodeDecision(b)
	if err != nil {
		t.Fatal(err)
	}
	cn, cv, cnum := flat(d.Context)
	chn, chv, chnum := flat(d.Actions[1].Features)
	if !reflect.DeepEqual([][]string{r.ctxNames, r.ctxValues, r.chNames, r.chValues, r.actionIDs}, [][]string{cn, cv, chn, chv, {"a", "b"}}) ||
		!reflect.DeepEqual([][]float64{r.ctxNumbers, r.chNumbers}, [][]float64{cnum, chnum}) || r.chosenProbability != 0.75 {
		t.Fatalf("flat columns differ: %+v", r)
	}
	var ctx flywheel.Features
	var acts []flywheel.Action
	if json.Unmarshal([]byte(r.ctxJSON), &ctx) != nil || json.Unmarshal([]byte(actionsOf(r)), &acts) != nil ||
		fmt.Sprint(ctx) != fmt.Sprint(d.Context) || fmt.Sprint(acts) != fmt.Sprint(d.Actions) {
		t.Fatalf("stored JSON does not decode back: %s %s", r.ctxJSON, actionsOf(r))
	}
	if err := checkKeys(r); err != nil {
		t.Fatal(err)
	}
	if r.actionKeys[0] == r.actionKeys[1] {
		t.Fatalf("two different actions have one key %s", r.actionKeys[0])
	}
}

func TestDecodeDecisionRefuses(t *testing.T) {
	t.Parallel()
	good := `{"schema":1,"event_id":"e","ts":"2026-01-01T00:00:00Z","model":"m","kind":"ranker","model_version":1,` +
		`"context":{},"actions":[{"id":"a"},{"id":"b","features":{"item":{"x":1}}}],"probabilities":[0.5,0.5],"chosen_index":1,` +
		`"reward":{"window_s":60,"aggregate":"sum"}}`
	if _, err := decodeDecision([]byte(good)); err != nil {
		t.Fatalf("good decision refused: %v", err)
	}
	for name, tc := range map[string]struct{ from, to, want string }{
		"not json":          {`{"schema"`, `{"schema`, ""},
		"chosen out":        {`"chosen_index":1`, `"chosen_index":2`, "chosen_index"},
		"probabilities":     {`"probabilities":[0.5,0.5]`, `"probabilities":[1]`, "probabilities"},
		"actions not array": {`"actions":[{"id":"a"},{"id":"b","features":{"item":{"x":1}}}]`, `"actions":{"id":"a"}`, "actions"},
		"chosen features":   {`"features":{"item":{"x":1}}`, `"features":"x"`, "actions[1].features"},
		"context":           {`"context":{}`, `"context":[1]`, "context"},
		"no event id":       {`"event_id":"e"`, `"event_id":""`, "event_id"},
	} {
		bad := strings.Replace(good, tc.from, tc.to, 1)
		if bad == good {
			t.Fatalf("%s: the test did not change the record", name)
		}
		if _, err := decodeDecision([]byte(bad)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v does not name %q", name, err, tc.want)
		}
	}
}
