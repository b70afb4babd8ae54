package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/kafka"
)

// claims records the spool watermarks a logger sends.
type claims struct {
	mu  sync.Mutex
	got []flywheel.SpoolWatermarkRecord
	raw []string
}

func (c *claims) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		var r flywheel.SpoolWatermarkRecord
		if err := json.Unmarshal(m.Value, &r); err != nil {
			return err
		}
		c.got, c.raw = append(c.got, r), append(c.raw, string(m.Value))
	}
	return nil
}

func (c *claims) Close() error { return nil }

// wait polls the claims until ok holds of them, failing t when ctx ends
// first.
func (c *claims) wait(t *testing.T, ctx context.Context, what string, ok func([]flywheel.SpoolWatermarkRecord) bool) {
	t.Helper()
	for !ok(c.all()) {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s; claims %v", what, c.all())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (c *claims) all() []flywheel.SpoolWatermarkRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]flywheel.SpoolWatermarkRecord(nil), c.got...)
}

// down is a writer that fails while Kafka is "down".
type down struct{ on atomic.Bool }

func (d *down) WriteMessages(context.Context, ...kafka.Message) error {
	if d.on.Load() {
		return errors.New("kafka down")
	}
	return nil
}

func (d *down) Close() error { return nil }

// The spool watermark never passes feedback still in the spool: while Kafka
// takes no feedback, no claim reaches past it; once the spool ships, one
// does. The claims are sent under the spool's id, which a restart keeps,
// and their JSON starts with the prefix ingest recognises.
func TestSpoolWatermarkWaitsForShipping(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cl, fb := &claims{}, &down{}
	l, err := NewLoggerWith(SpoolOptions{Dir: dir, WatermarkInterval: 20 * time.Millisecond}, discard{}, fb, cl, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(rctx) }()
	wait := func(what string, ok func([]flywheel.SpoolWatermarkRecord) bool) {
		t.Helper()
		cl.wait(t, ctx, what, ok)
	}
	wait("a first claim", func(c []flywheel.SpoolWatermarkRecord) bool { return len(c) > 0 })

	fb.on.Store(true)
	received := time.Now().UTC()
	if err := l.LogFeedback(ctx, []flywheel.Feedback{{Schema: 1, FeedbackID: "f", EventID: "e", Time: received, Reward: 1}}); err != nil {
		t.Fatal(err)
	}
	before := len(cl.all())
	time.Sleep(300 * time.Millisecond)
	for _, c := range cl.all()[before:] {
		if c.Watermark.Through.After(received) {
			t.Fatalf("claim %+v passes feedback received at %v and still in the spool", c.Watermark, received)
		}
	}
	fb.on.Store(false)
	wait("a claim past the shipped feedback", func(c []flywheel.SpoolWatermarkRecord) bool {
		return len(c) > 0 && c[len(c)-1].Watermark.Through.After(received)
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := l.Close(time.Second); err != nil {
		t.Fatal(err)
	}
	for i, c := range cl.all() {
		if err := c.Watermark.Validate(); err != nil || c.Watermark.Source != cl.all()[0].Watermark.Source || !strings.HasPrefix(cl.raw[i], flywheel.SpoolWatermarkPrefix) {
			t.Fatalf("claim %s: %v", cl.raw[i], err)
		}
	}
	if id, err := spoolSource(dir); err != nil || id != cl.all()[0].Watermark.Source {
		t.Fatalf("after a restart the spool's id is %q (%v), was %q", id, err, cl.all()[0].Watermark.Source)
	}
}

// An event timed before a claim was sent (the caller took the time, a claim
// went out, then the caller logged the event) is logged after the claim, so
// that the claim, which the event was not in, does not cover it; and no
// claim passes it until it has shipped. Decisions are covered as feedback
// is: a decision's window closes only once the decision is in.
func TestSpoolWatermarkCoversEventsTimedBeforeAClaim(t *testing.T) {
	t.Parallel()
	cl, kafkaDown := &claims{}, &down{}
	l, err := NewLoggerWith(SpoolOptions{Dir: t.TempDir(), WatermarkInterval: 10 * time.Millisecond}, kafkaDown, kafkaDown, cl, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(rctx) }()
	wait := func(what string, ok func([]flywheel.SpoolWatermarkRecord) bool) {
		t.Helper()
		cl.wait(t, ctx, what, ok)
	}
	timed := time.Now().UTC()
	past := func(at time.Time) func(c []flywheel.SpoolWatermarkRecord) bool {
		return func(c []flywheel.SpoolWatermarkRecord) bool {
			return len(c) > 0 && c[len(c)-1].Watermark.Through.After(at)
		}
	}
	wait("a claim past the events' time", past(timed))
	kafkaDown.on.Store(true)
	d := &flywheel.Decision{Schema: 1, EventID: "d", Time: timed, Model: "m", Kind: flywheel.KindRanker}
	if err := l.LogDecision(ctx, d); err != nil {
		t.Fatal(err)
	}
	fs := []flywheel.Feedback{{Schema: 1, FeedbackID: "f", EventID: "d", Time: timed, Reward: 1}}
	if err := l.LogFeedback(ctx, fs); err != nil {
		t.Fatal(err)
	}
	sent := cl.all()
	last := sent[len(sent)-1].Watermark.Through
	if !d.Time.After(last) || !fs[0].Time.After(last) {
		t.Fatalf("timed at %v, logged at %v (decision) and %v (feedback): not after the claim through %v sent before",
			timed, d.Time, fs[0].Time, last)
	}
	time.Sleep(200 * time.Millisecond)
	for _, c := range cl.all() {
		if !c.Watermark.Through.Before(d.Time) || !c.Watermark.Through.Before(fs[0].Time) {
			t.Fatalf("claim %+v covers events still in the spool, logged at %v and %v", c.Watermark, d.Time, fs[0].Time)
		}
	}
	kafkaDown.on.Store(false)
	wait("a claim past the shipped events", past(fs[0].Time))
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
