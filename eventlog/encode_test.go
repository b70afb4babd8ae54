package eventlog

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/kafka"
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

// discard is a Writer that takes everything; the test below never ships.
type discard struct{}

func (discard) WriteMessages(context.Context, ...kafka.Message) error { return nil }
func (discard) Close() error                                          { return nil }

// A decision whose record Kafka would refuse (over MaxRecordBytes) is refused
// with ETOOLARGE before it reaches the spool, where it would block shipping;
// one just under the limit is taken.
func TestLogDecisionRefusesRecordsKafkaWouldRefuse(t *testing.T) {
	t.Parallel()
	l, err := NewLoggerWith(SpoolOptions{Dir: t.TempDir()}, discard{}, discard{}, nil, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(time.Second)
	decision := func(ctxBytes int) *flywheel.Decision {
		d := &flywheel.Decision{Schema: 1, EventID: "e1", Time: time.Unix(1700000000, 0).UTC(), Model: "m", Kind: flywheel.KindRanker, Version: 1,
			Actions: []flywheel.Action{{ID: "a"}}, RawActions: []flywheel.RawAction{{ID: "a"}}, Probabilities: []float64{1}, Chosen: "a",
			Reward: flywheel.RewardRule{WindowSeconds: 60, Aggregate: "sum"}}
		d.RawContext = json.RawMessage(`{"u":{"blob":"` + strings.Repeat("x", ctxBytes) + `"}}`)
		return d
	}
	small, err := encodeDecision(decision(0))
	if err != nil {
		t.Fatal(err)
	}
	fits := kafka.MaxRecordBytes - len(small) - len("e1")
	if err := l.LogDecision(context.Background(), decision(fits)); err != nil {
		t.Fatalf("a record of exactly %d bytes was refused: %v", kafka.MaxRecordBytes, err)
	}
	err = l.LogDecision(context.Background(), decision(fits+1))
	if flywheel.ErrorCode(err) != flywheel.ETOOLARGE || !strings.Contains(err.Error(), fmt.Sprint(kafka.MaxRecordBytes+1)) {
		t.Fatalf("a record one byte over the limit: error %v, want ETOOLARGE naming its size", err)
	}
	if n := testutil.ToFloat64(l.spooled.WithLabelValues("decision")); n != 1 {
		t.Fatalf("%v decisions spooled, want 1 (the refused one must not be)", n)
	}
}
