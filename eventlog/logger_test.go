package eventlog

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/kafka"
)

// With no broker at all, logging still answers at once; once a broker comes
// up, every spooled event reaches it exactly once, and a restarted logger
// ships only what it had not shipped.
func TestLoggerRidesOutKafkaOutage(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens here yet: Kafka is "down"
	cfg := kafka.Config{Brokers: []string{addr}}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	start := func() (*Logger, context.CancelFunc, chan error) {
		l, err := NewLogger(cfg, SpoolOptions{Dir: dir}, prometheus.NewRegistry(), nil)
		if err != nil {
			t.Fatal(err)
		}
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- l.Run(rctx) }()
		return l, stop, done
	}
	l, stop, done := start()
	const n = 300
	var slowest time.Duration
	for i := 0; i < n; i++ {
		t0 := time.Now()
		d := &flywheel.Decision{Schema: 1, EventID: fmt.Sprintf("d%03d", i), Time: time.Now(), Model: "m", Kind: "ranker", Version: 1}
		if err := l.LogDecision(ctx, d); err != nil {
			t.Fatal(err)
		}
		if err := l.LogFeedback(ctx, []flywheel.Feedback{{Schema: 1, FeedbackID: fmt.Sprintf("f%03d", i), EventID: d.EventID, Time: time.Now(), Reward: 1}}); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(t0))
	}
	t.Logf("broker down: %d decisions and %d feedback logged, slowest pair %v", n, n, slowest)
	time.Sleep(500 * time.Millisecond) // the shipper fails and backs off meanwhile
	if got := testutil.ToFloat64(l.shipped.WithLabelValues("decision")); got != 0 {
		t.Fatalf("%v decisions shipped with no broker", got)
	}

	port := kafka.Port(addr)
	c, err := kfake.NewCluster(kfake.Ports(port), kfake.SeedTopics(3, cfg.Topics().Decisions, cfg.Topics().Feedback))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for testutil.ToFloat64(l.shipped.WithLabelValues("decision")) < n || testutil.ToFloat64(l.shipped.WithLabelValues("feedback")) < n {
		select {
		case <-ctx.Done():
			t.Fatal("spooled events were not shipped after the broker came up")
		case <-time.After(50 * time.Millisecond):
		}
	}
	if r := testutil.ToFloat64(l.replayed); r != 2*n {
		t.Errorf("%v events counted as replayed, want %d", r, 2*n)
	}
	stop()
	<-done
	if err := l.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	// A restart ships nothing again.
	l2, stop2, done2 := start()
	if err := l2.LogDecision(ctx, &flywheel.Decision{Schema: 1, EventID: "after", Time: time.Now(), Model: "m", Kind: "ranker", Version: 1}); err != nil {
		t.Fatal(err)
	}
	for testutil.ToFloat64(l2.shipped.WithLabelValues("decision")) < 1 {
		select {
		case <-ctx.Done():
			t.Fatal("the restarted logger did not ship")
		case <-time.After(50 * time.Millisecond):
		}
	}
	stop2()
	<-done2
	l2.Close(5 * time.Second)
	if got := testutil.ToFloat64(l2.shipped.WithLabelValues("decision")); got != 1 {
		t.Fatalf("the restarted logger shipped %v decisions, want 1", got)
	}

	for _, topic := range []string{cfg.Topics().Decisions, cfg.Topics().Feedback} {
		want := n
		if topic == cfg.Topics().Decisions {
			want = n + 1
		}
		seen := map[string]int{}
		r := kafka.NewGroupReader(cfg, "check-"+topic, topic)
		for total := 0; total < want; total++ {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				t.Fatalf("%s: after %d: %v", topic, total, err)
			}
			seen[string(m.Key)]++
		}
		// nothing more arrives
		qctx, qcancel := context.WithTimeout(ctx, time.Second)
		if m, err := r.FetchMessage(qctx); err == nil {
			t.Errorf("%s: extra record %s", topic, m.Key)
		}
		qcancel()
		r.Close()
		for k, c := range seen {
			if c != 1 {
				t.Errorf("%s: event %s delivered %d times", topic, k, c)
			}
		}
		if len(seen) != want {
			t.Errorf("%s: %d distinct events, want %d", topic, len(seen), want)
		}
	}
}

// counted counts the messages and the calls a writer takes.
type counted struct {
	mu          sync.Mutex
	calls, msgs int
}

func (c *counted) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.msgs += len(msgs)
	return nil
}

func (c *counted) Close() error { return nil }

func (c *counted) count() (calls, msgs int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls, c.msgs
}

// The shipper does not write its cursor after every batch (a create, an
// fsync and a rename each) but at most every cursorEvery, and Close writes
// where it got: a restart after a clean stop ships nothing again.
func TestCursorIsSavedSparinglyAndAtClose(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dec := &counted{}
	l, err := NewLoggerWith(SpoolOptions{Dir: dir}, dec, discard{}, nil, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	l.cursorEvery = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(rctx) }()
	const n = 40
	for i := range n {
		d := &flywheel.Decision{Schema: 1, EventID: fmt.Sprintf("d%03d", i), Time: time.Now(), Model: "m", Kind: "ranker", Version: 1}
		if err := l.LogDecision(ctx, d); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 { // let a batch go before the next ones
			for _, m := dec.count(); m < i+1; _, m = dec.count() {
				select {
				case <-ctx.Done():
					t.Fatalf("%d of %d decisions shipped", m, i+1)
				case <-time.After(5 * time.Millisecond):
				}
			}
		}
	}
	calls, msgs := dec.count()
	if calls < 4 || msgs != n {
		t.Fatalf("%d decisions shipped in %d batches, want %d in at least 4", msgs, calls, n)
	}
	if _, err := os.Stat(filepath.Join(dir, "CURSOR")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the cursor was written while shipping within cursorEvery (stat: %v)", err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	end := l.spool.End()
	if err := l.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if calls2, _ := dec.count(); calls2 != calls {
		t.Fatalf("Close shipped %d more batches of what was shipped", calls2-calls)
	}
	s, err := OpenSpool(SpoolOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if c, err := s.LoadCursor(); err != nil || c != end {
		t.Fatalf("cursor after Close %v (%v), want the end %v", c, err, end)
	}
	if p := s.Pending(end); p != 0 {
		t.Fatalf("%d bytes pending after a clean stop", p)
	}
}
