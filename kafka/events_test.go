package kafka

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/flywheel-dev/flywheel"
)

// A published model event is one record keyed by the model name whose value
// is the event's JSON, byte for byte what any Kafka client reads; the event
// reader decodes it, and skips, with ErrUndecodable, a record that is not one.
func TestEventPublisherWireFormat(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := Config{Brokers: testBrokers(t), TopicPrefix: fmt.Sprintf("ev%d.", time.Now().UnixNano())}
	if err := EnsureTopics(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	events := []flywheel.ModelEvent{
		{Schema: flywheel.SchemaVersion, Type: flywheel.EventPromoted, Model: "homepage", Alias: "champion", Version: 8,
			PreviousVersion: 7, Actor: "admin", Reason: "better", Time: time.Date(2026, 1, 2, 3, 4, 5, 600_000_000, time.UTC)},
		{Schema: flywheel.SchemaVersion, Type: flywheel.EventRegistered, Model: "ctr", Version: 1, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
	}
	want := []struct{ key, value string }{
		{"homepage", `{"schema":1,"type":"promoted","model":"homepage","alias":"champion","version":8,"previous_version":7,"actor":"admin","reason":"better","ts":"2026-01-02T03:04:05.6Z"}`},
		{"ctr", `{"schema":1,"type":"registered","model":"ctr","version":1,"ts":"2026-01-02T03:04:05Z"}`},
	}
	p := NewEventPublisher(cfg)
	defer p.Close()
	if err := p.Publish(ctx, events[0]); err != nil {
		t.Fatal(err)
	}
	// A record that is no model event, between two that are.
	w := NewWriter(cfg, cfg.Topics().ModelEvents)
	defer w.Close()
	if err := w.WriteMessages(ctx, kafkago.Message{Key: []byte("x"), Value: []byte("not json")}); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, events[1]); err != nil {
		t.Fatal(err)
	}

	raw, err := NewTailReader(cfg, cfg.Topics().ModelEvents, kafkago.FirstOffset)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for i, off := range []int{0, 2} {
		if i == 1 {
			if _, err := raw.ReadMessage(ctx); err != nil { // the record that is no event
				t.Fatal(err)
			}
		}
		m, err := raw.ReadMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.Offset != int64(off) || string(m.Key) != want[i].key || string(m.Value) != want[i].value {
			t.Fatalf("record %d: offset %d key %q value %s, want offset %d key %q value %s", i, m.Offset, m.Key, m.Value, off, want[i].key, want[i].value)
		}
	}

	r, err := NewEventReader(cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := r.Read(ctx)
	if err != nil || !reflect.DeepEqual(got, events[0]) {
		t.Fatalf("first event: %+v, %v; want %+v", got, err, events[0])
	}
	if _, err := r.Read(ctx); !errors.Is(err, ErrUndecodable) {
		t.Fatalf("the record that is no event: %v, want %v", err, ErrUndecodable)
	}
	got, err = r.Read(ctx)
	if err != nil || !reflect.DeepEqual(got, events[1]) {
		t.Fatalf("second event: %+v, %v; want %+v", got, err, events[1])
	}
}
