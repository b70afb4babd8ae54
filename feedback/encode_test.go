package feedback

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
)

// A decision logged with the client's raw context and actions is the same
// record, once decoded, as one whose maps are encoded again.
func TestEncodeDecisionRawMatchesMaps(t *testing.T) {
	t.Parallel()
	d := flywheel.Decision{Schema: 1, EventID: "e1", Time: time.Unix(1700000000, 123e6).UTC(), Model: "m", Kind: flywheel.KindRanker, Version: 2,
		Variant: "champion", Context: flywheel.Features{"user": {"segment": "b", "age": 31.0}},
		Actions:       []flywheel.Action{{ID: "a", Features: flywheel.Features{"item": {"tags": []any{"x"}}}}, {ID: "b"}},
		Probabilities: []float64{0.3, 0.7}, Ranking: []string{"b", "a"}, ChosenIndex: 1, Chosen: "b", Explored: true,
		Reward: flywheel.RewardRule{WindowSeconds: 60, Default: -1, Aggregate: "max"}}
	viaMaps, err := encodeDecision(&d)
	if err != nil {
		t.Fatal(err)
	}
	raw := d
	raw.RawContext = json.RawMessage(`{"user": {"segment": "b", "age": 31}}`)
	raw.RawActions = []flywheel.RawAction{{ID: "a", Features: json.RawMessage(`{"item":{"tags":["x"]}}`)}, {ID: "b"}}
	viaRaw, err := encodeDecision(&raw)
	if err != nil {
		t.Fatal(err)
	}
	var a, b flywheel.Decision
	if err := json.Unmarshal(viaMaps, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(viaRaw, &b); err != nil {
		t.Fatalf("%s: %v", viaRaw, err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("records differ:\n%s\n%s", viaMaps, viaRaw)
	}
}
