package ingest

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/eventlog"
	"github.com/flywheel-dev/flywheel/kafka"
)

// The watermark claims, per partition, the newest check whose log end the
// committed offset has reached, and for the topic the oldest of those; it
// is written only when it moves.
func TestWatermarkFromCommittedOffsets(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	type step struct {
		offs map[int]kafka.PartitionOffsets
		want time.Duration // after base; -1: zero
	}
	po := func(end, committed int64) kafka.PartitionOffsets {
		return kafka.PartitionOffsets{End: end, Committed: committed}
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"caught up: the time of the check", []step{
			{map[int]kafka.PartitionOffsets{0: po(10, 10), 1: po(0, 0)}, 0},
			{map[int]kafka.PartitionOffsets{0: po(12, 12), 1: po(0, 0)}, time.Second},
		}},
		{"behind: the check whose end the commit reached", []step{
			{map[int]kafka.PartitionOffsets{0: po(10, 10), 1: po(5, 0)}, -1},                // 1 never caught up: no watermark
			{map[int]kafka.PartitionOffsets{0: po(10, 10), 1: po(8, 4)}, -1},                // still below 5
			{map[int]kafka.PartitionOffsets{0: po(10, 10), 1: po(9, 5)}, 0},                 // reached the first check's end
			{map[int]kafka.PartitionOffsets{0: po(10, 10), 1: po(20, 9)}, 2 * time.Second},  // reached the third's
			{map[int]kafka.PartitionOffsets{0: po(11, 10), 1: po(20, 20)}, 3 * time.Second}, // 0 is behind now, caught up at 3s
		}},
		{"no partitions: nothing", []step{{map[int]kafka.PartitionOffsets{}, -1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			now := base
			var i int
			var wrote []time.Time
			w := newWatermark("fb", clickhouse.StreamFeedback, func(context.Context) (map[int]kafka.PartitionOffsets, error) { return tc.steps[i].offs, nil },
				func(_ context.Context, m clickhouse.Watermark) error {
					if m.Stream != clickhouse.StreamFeedback || m.Topic != "fb" || m.Partitions != len(tc.steps[i].offs) {
						t.Errorf("wrote %+v", m)
					}
					wrote = append(wrote, m.Through)
					return nil
				}, func() time.Time { return now })
			var last time.Time
			for i = range tc.steps {
				got, err := w.check(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				want := time.Time{}
				if d := tc.steps[i].want; d >= 0 {
					want = base.Add(d)
				}
				if !got.Equal(want) {
					t.Fatalf("check %d: watermark %v, want %v", i+1, got, want)
				}
				if !got.IsZero() && got.After(last) {
					if len(wrote) == 0 || !wrote[len(wrote)-1].Equal(got) {
						t.Fatalf("check %d: watermark %v moved and was not written (%v)", i+1, got, wrote)
					}
					last = got
				}
				now = now.Add(time.Second)
			}
			for j := 1; j < len(wrote); j++ {
				if !wrote[j].After(wrote[j-1]) {
					t.Fatalf("written again without moving: %v", wrote)
				}
			}
		})
	}
}

// A failed write is tried again at the next check.
func TestWatermarkWriteRetried(t *testing.T) {
	t.Parallel()
	fail := true
	n := 0
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	w := newWatermark("fb", clickhouse.StreamFeedback, func(context.Context) (map[int]kafka.PartitionOffsets, error) {
		return map[int]kafka.PartitionOffsets{0: {End: 1, Committed: 1}}, nil
	}, func(context.Context, clickhouse.Watermark) error {
		n++
		if fail {
			return errors.New("down")
		}
		return nil
	}, func() time.Time { return now })
	if _, err := w.check(context.Background()); err == nil {
		t.Fatal("no error from a failed write")
	}
	fail = false
	if _, err := w.check(context.Background()); err != nil || n != 2 {
		t.Fatalf("second check: %v, %d writes", err, n)
	}
}

// Feedback held back in Kafka (ingest stopped) is not taken for the default
// reward: the decision stays out of the examples and of training's counts,
// although its reward window has passed, until ingest has written the
// feedback; then it is closed with the feedback's reward. (Idle partitions,
// two of the three, do not hold the watermark back.)
func TestFeedbackInKafkaKeepsDecisionOpen(t *testing.T) {
	kcfg, ccfg := realServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn := mustReady(t, ctx, kcfg, ccfg)
	db := ccfg.Database()
	training := clickhouse.NewTraining(conn, db)
	count := func(q string) uint64 {
		t.Helper()
		var n uint64
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	fresh := func() uint64 {
		t.Helper()
		n, err := training.FreshCount(ctx, "homepage", flywheel.KindRanker, 0)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	start := func() (*Ingester, func()) {
		in, err := New(Config{Group: kcfg.TopicPrefix + "ingest", BatchRows: 10, BatchWait: 50 * time.Millisecond, WatermarkInterval: 100 * time.Millisecond},
			Options{Kafka: kcfg, Inserts: clickhouse.NewInserts(conn, db)})
		if err != nil {
			t.Fatal(err)
		}
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- in.Run(rctx) }()
		return in, func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("ingest returned %v", err)
			}
		}
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for !ok() {
			select {
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	dw, fw := kafka.NewWriter(kcfg, kcfg.Topics().Decisions), kafka.NewWriter(kcfg, kcfg.Topics().Feedback)
	defer dw.Close()
	defer fw.Close()

	// The decision is ingested, then ingest stops; its feedback, received
	// inside the 3 s window, reaches Kafka while ingest is stopped.
	in, stop := start()
	waitFor("ingest to join and claim a watermark", func() bool { return testutil.ToFloat64(in.watermark) > 0 })
	made := time.Now().UTC().Truncate(time.Millisecond)
	d := decision("held", made)
	d.Reward.WindowSeconds = 3
	if err := dw.WriteMessages(ctx, msg(t, "held", d)); err != nil {
		t.Fatal(err)
	}
	waitFor("the decision", func() bool { return count("SELECT count() FROM "+db+".decisions FINAL") == 1 })
	stop()
	atStop := time.UnixMilli(int64(testutil.ToFloat64(in.watermark) * 1000))
	if err := fw.WriteMessages(ctx, msg(t, "held", flywheel.Feedback{Schema: 1, FeedbackID: "f-held", EventID: "held", Time: made.Add(500 * time.Millisecond), Reward: 1})); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(made.Add(4 * time.Second))) // the window has passed
	wm, err := training.ClosedThrough(ctx)
	if err != nil {
		t.Fatal(err)
	}
	window := count("SELECT count() FROM " + db + ".decisions FINAL WHERE ts_ms + reward_window_s * 1000 <= toUInt64(toUInt32(now())) * 1000")
	ex, fc := count("SELECT count() FROM "+db+".examples"), fresh()
	t.Logf("window ended %v ago; feedback watermark %v (at stop %v); by the window alone %d closed; examples %d, fresh count %d",
		time.Since(made.Add(3*time.Second)).Round(time.Millisecond), wm.Format(time.RFC3339Nano), atStop.Format(time.RFC3339Nano), window, ex, fc)
	if window != 1 || ex != 0 || fc != 0 {
		t.Fatalf("with its feedback still in Kafka: %d examples, %d fresh for training (want 0, 0; %d by the window alone)", ex, fc, window)
	}
	if !wm.Before(made.Add(3 * time.Second)) {
		t.Fatalf("watermark %v passed the window's end although ingest stopped before the feedback was in Kafka", wm)
	}

	// Ingest again: the feedback goes in and the watermark passes the
	// window's end; the decision is closed, with the feedback's reward.
	in, stop = start()
	defer stop()
	waitFor("the decision to close", func() bool { return count("SELECT count() FROM "+db+".examples") == 1 })
	var reward float64
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT reward, feedback_count FROM "+db+".examples WHERE event_id = 'held'").Scan(&reward, &n); err != nil {
		t.Fatal(err)
	}
	if reward != 1 || n != 1 || fresh() != 1 {
		t.Fatalf("closed with reward %v from %d feedback events, %d fresh for training; want 1, 1, 1", reward, n, fresh())
	}
	if g := testutil.ToFloat64(in.watermark); g < float64(made.Add(3*time.Second).UnixMilli())/1000 {
		t.Fatalf("the watermark gauge %v is behind the window's end", g)
	}
}

// A spool watermark in the log is told from feedback by its first bytes,
// and checked.
func TestDecodeSpoolWatermark(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	good := msgOf(t, "s1", flywheel.SpoolWatermarkRecord{Schema: 1, Watermark: flywheel.SpoolWatermark{Source: "s1", Through: at, Sent: at.Add(time.Second)}})
	if x := decodeOne(&good, "decisions"); x.err != nil || x.spool == nil || x.spool.Source != "s1" || !x.spool.Through.Equal(at) {
		t.Fatalf("spool watermark decoded as %+v", x)
	}
	bad := msgOf(t, "s1", flywheel.SpoolWatermarkRecord{Schema: 1, Watermark: flywheel.SpoolWatermark{Source: "s1", Through: at.Add(time.Hour), Sent: at}})
	if x := decodeOne(&bad, "decisions"); x.err == nil {
		t.Fatalf("a claim through after it was sent was taken: %+v", x)
	}
	fb := msgOf(t, "e1", flywheel.Feedback{Schema: 1, FeedbackID: "f", EventID: "e1", Time: at, Reward: 1, Type: "spool_watermark"})
	if x := decodeOne(&fb, "decisions"); x.err != nil || x.feedback == nil || x.spool != nil {
		t.Fatalf("feedback of type spool_watermark decoded as %+v", x)
	}
}

func msgOf(t *testing.T, key string, v any) kafkago.Message {
	t.Helper()
	m := msg(t, key, v)
	m.Topic = "feedback"
	return m
}

// A spool claim is written only once the Kafka watermark has passed the
// time it was sent, the newest such per source; the later ones wait.
func TestSpoolClaimsWaitForTheKafkaWatermark(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	claim := func(src string, through, sent time.Duration) flywheel.SpoolWatermark {
		return flywheel.SpoolWatermark{Source: src, Through: at.Add(through), Sent: at.Add(sent)}
	}
	c := newSpoolClaims()
	c.add([]flywheel.SpoolWatermark{claim("a", 0, time.Second), claim("a", time.Second, 2*time.Second), claim("b", 0, 3*time.Second), claim("a", 2*time.Second, 4*time.Second)})
	var got []clickhouse.SpoolWatermark
	insert := func(_ context.Context, ws []clickhouse.SpoolWatermark, _ time.Time) error {
		got = append(got, ws...)
		return nil
	}
	if err := c.write(context.Background(), at.Add(2500*time.Millisecond), time.Minute, at, insert); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Source != "a" || !got[0].Through.Equal(at.Add(time.Second)) || !got[0].ValidUntil.Equal(at.Add(2*time.Second+time.Minute)) {
		t.Fatalf("written %+v; want a's claim through 1s, valid until 1m2s", got)
	}
	got = nil
	if err := c.write(context.Background(), at.Add(5*time.Second), time.Minute, at, insert); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("written %+v; want b's and a's last", got)
	}
	if len(c.pending) != 0 {
		t.Fatalf("left %v", c.pending)
	}
}

// pausable is a Kafka writer that fails while paused, as Kafka unreachable
// from one serving process.
type pausable struct {
	w      *kafka.LogWriter
	paused atomic.Bool
}

func (p *pausable) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	if p.paused.Load() {
		return errors.New("paused: Kafka unreachable")
	}
	return p.w.WriteMessages(ctx, msgs...)
}

func (p *pausable) Close() error { return p.w.Close() }

// Feedback still in a serving process's spool (Kafka unreachable from it)
// keeps its decision open, although the decision is ingested, its window
// has passed and ingest is caught up with Kafka; once the spool ships, the
// decision is closed with the feedback's reward.
func TestFeedbackInSpoolKeepsDecisionOpen(t *testing.T) {
	kcfg, ccfg := realServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn := mustReady(t, ctx, kcfg, ccfg)
	db := ccfg.Database()
	training := clickhouse.NewTraining(conn, db)
	count := func(q string) uint64 {
		t.Helper()
		var n uint64
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for !ok() {
			select {
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	in, err := New(Config{Group: kcfg.TopicPrefix + "ingest", BatchRows: 10, BatchWait: 50 * time.Millisecond, WatermarkInterval: 100 * time.Millisecond, SpoolExpiry: time.Minute},
		Options{Kafka: kcfg, Inserts: clickhouse.NewInserts(conn, db)})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- in.Run(rctx) }()
	defer func() { stop(); <-done }()

	tp := kcfg.Topics()
	fw := &pausable{w: kafka.NewLogWriter(kcfg, tp.Feedback)}
	lg, err := eventlog.NewLoggerWith(eventlog.SpoolOptions{Dir: t.TempDir(), WatermarkInterval: 100 * time.Millisecond},
		kafka.NewLogWriter(kcfg, tp.Decisions), fw, kafka.NewLogWriter(kcfg, tp.SpoolWatermarks), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	lctx, stopLogger := context.WithCancel(ctx)
	lgDone := make(chan error, 1)
	go func() { lgDone <- lg.Run(lctx) }()
	defer func() { stopLogger(); <-lgDone; lg.Close(time.Second) }()

	// The serving process is known: a claim of its spool is in ClickHouse.
	waitFor("the first spool watermark", func() bool { return count("SELECT count() FROM "+db+".spool_watermarks") > 0 })

	fw.paused.Store(true)
	made := time.Now().UTC().Truncate(time.Millisecond)
	d := decision("spooled", made)
	d.Reward.WindowSeconds = 2
	if err := lg.LogDecision(ctx, &d); err != nil {
		t.Fatal(err)
	}
	if err := lg.LogFeedback(ctx, []flywheel.Feedback{{Schema: 1, FeedbackID: "f-spooled", EventID: "spooled", Time: time.Now().UTC(), Reward: 1}}); err != nil {
		t.Fatal(err)
	}
	deadline := uint64(made.Add(2 * time.Second).UnixMilli())
	waitFor("the decision, and the Kafka watermark past its window", func() bool {
		return count("SELECT count() FROM "+db+".decisions FINAL") == 1 &&
			count("SELECT max(through_ms) FROM "+db+".ingest_watermarks WHERE stream = 'feedback'") > deadline+500
	})
	fresh, err := training.FreshCount(ctx, "homepage", flywheel.KindRanker, 0)
	if err != nil {
		t.Fatal(err)
	}
	wm, err := training.ClosedThrough(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ex := count("SELECT count() FROM " + db + ".examples")
	t.Logf("window ended %v ago, Kafka caught up; feedback watermark %v (held by the spool); examples %d, fresh for training %d",
		time.Since(made.Add(2*time.Second)).Round(time.Millisecond), wm.Format(time.RFC3339Nano), ex, fresh)
	if ex != 0 || fresh != 0 || !wm.Before(made.Add(2*time.Second)) {
		t.Fatalf("with its feedback still in a spool: %d examples, %d fresh for training, watermark %v (window end %v); want 0, 0, before",
			ex, fresh, wm, made.Add(2*time.Second))
	}

	// Kafka is reachable again: the spool ships, its claim moves on, and
	// the decision closes with its feedback.
	fw.paused.Store(false)
	waitFor("the decision to close", func() bool { return count("SELECT count() FROM "+db+".examples") == 1 })
	var reward float64
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT reward, feedback_count FROM "+db+".examples WHERE event_id = 'spooled'").Scan(&reward, &n); err != nil {
		t.Fatal(err)
	}
	if reward != 1 || n != 1 {
		t.Fatalf("closed with reward %v from %d feedback events; want 1 from 1", reward, n)
	}
}
