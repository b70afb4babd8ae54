package eventlog

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bytedance/sonic"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-dev/flywheel"
)

// benchDecision is a decision of 20 actions with 4 features each, kept raw
// as serving keeps them: the record bench/serve's requests log.
func benchDecision() *flywheel.Decision {
	d := &flywheel.Decision{Schema: 1, EventID: "0123456789abcdef0123456789abcdef", Time: time.Unix(1700000000, 0).UTC(), Model: "homepage",
		Kind: flywheel.KindRanker, Version: 3, Variant: "champion", Reward: flywheel.RewardRule{WindowSeconds: 600, Aggregate: "sum"},
		RawContext: json.RawMessage(`{"user":{"segment":"b","age":31,"country":"fr","device":"ios","tags":["x","y"]}}`)}
	for i := range 20 {
		id := fmt.Sprintf("a%d", i)
		d.Actions = append(d.Actions, flywheel.Action{ID: id})
		d.RawActions = append(d.RawActions, flywheel.RawAction{ID: id, Features: json.RawMessage(fmt.Sprintf(`{"item":{"id":"i%d","category":"c%d","price":%d.99,"new":false}}`, i, i%5, i))})
		d.Probabilities = append(d.Probabilities, 0.05)
		d.Ranking = append(d.Ranking, id)
	}
	d.Chosen = "a0"
	return d
}

// BenchmarkLogDecision is the cost serving pays per decision: the record
// encoded and appended to the spool, and shipped by the logger's loop (to a
// writer that discards, here; Kafka's client is bench/serve's to measure).
func BenchmarkLogDecision(b *testing.B) {
	l, err := NewLoggerWith(SpoolOptions{Dir: b.TempDir()}, discard{}, discard{}, nil, prometheus.NewRegistry(), nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	d := benchDecision()
	rec, _ := encodeDecision(d)
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	for b.Loop() {
		dd := *d
		if err := l.LogDecision(ctx, &dd); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cancel()
	<-done
	l.Close(time.Second)
	if !strings.Contains(string(rec), `"context":{"user"`) {
		b.Fatalf("record %s", rec)
	}
}

// BenchmarkEncodeDecision is the record's encoding alone.
func BenchmarkEncodeDecision(b *testing.B) {
	d := benchDecision()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeDecision(d); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeDecisionSonic is the encoding the logger used before
// DecisionRecord.AppendJSON, for comparison.
func BenchmarkEncodeDecisionSonic(b *testing.B) {
	d := benchDecision()
	enc := sonic.Config{NoValidateJSONMarshaler: true}.Froze()
	b.ReportAllocs()
	for b.Loop() {
		r, _ := d.Record()
		if _, err := enc.Marshal(r); err != nil {
			b.Fatal(err)
		}
	}
}
