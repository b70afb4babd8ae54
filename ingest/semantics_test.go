package ingest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus/testutil"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/kafka"
)

// On the real services: a client's retry of a feedback (the same
// feedback_id, received again later) counts once in the examples; a
// feedback received after its decision's reward window but whose "time"
// (when the user acted) is inside it counts; one without a time received
// after the window does not.
func TestFeedbackRetryAndActedTime(t *testing.T) {
	kcfg, ccfg := realServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn := mustReady(t, ctx, kcfg, ccfg)
	db := ccfg.Database()
	dw := kafka.NewWriter(kcfg, kcfg.Topics().Decisions)
	fw := kafka.NewWriter(kcfg, kcfg.Topics().Feedback)
	defer dw.Close()
	defer fw.Close()

	old := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond) // windows of 1s, closed long ago
	acted := old.Add(200 * time.Millisecond)
	late := old.Add(30 * time.Second)
	var decs []kafkago.Message
	for _, id := range []string{"retry", "acted", "late"} {
		decs = append(decs, msg(t, id, decision(id, old)))
	}
	fbs := []kafkago.Message{
		msg(t, "retry", flywheel.Feedback{Schema: 1, FeedbackID: "client-1", EventID: "retry", Time: old.Add(100 * time.Millisecond), Reward: 1}),
		msg(t, "retry", flywheel.Feedback{Schema: 1, FeedbackID: "client-1", EventID: "retry", Time: old.Add(900 * time.Millisecond), Reward: 1}), // the client's retry
		msg(t, "acted", flywheel.Feedback{Schema: 1, FeedbackID: "f2", EventID: "acted", Time: late, ActedAt: &acted, Reward: 1, Model: "homepage"}),
		msg(t, "late", flywheel.Feedback{Schema: 1, FeedbackID: "f3", EventID: "late", Time: late, Reward: 1}),
	}
	if err := dw.WriteMessages(ctx, decs...); err != nil {
		t.Fatal(err)
	}
	if err := fw.WriteMessages(ctx, fbs...); err != nil {
		t.Fatal(err)
	}
	written := time.Now()

	ing := startIngest(t, ctx, kcfg, conn, db)
	ing.waitFor(t, ctx, func(in *Ingester) bool {
		return testutil.ToFloat64(in.rows.WithLabelValues("decisions")) >= 3 && testutil.ToFloat64(in.rows.WithLabelValues("feedback")) >= 4 &&
			testutil.ToFloat64(in.watermark) >= float64(written.UnixMilli())/1000
	})
	ing.end(t)

	got := examplesOf(t, ctx, conn, db)
	for id, want := range map[string][2]float64{"retry": {1, 1}, "acted": {1, 1}, "late": {0, 0}} {
		if got[id] != want {
			t.Errorf("%s: feedback_count, reward = %v, want %v", id, got[id], want)
		}
	}
	// the feedback table keeps the receive time in ts and the judged time in ts_ms
	var ts time.Time
	var ms uint64
	if err := conn.QueryRow(ctx, "SELECT ts, ts_ms FROM "+db+".feedback FINAL WHERE event_id = 'acted'").Scan(&ts, &ms); err != nil {
		t.Fatal(err)
	}
	if ts.Unix() != late.Unix() || ms != uint64(acted.UnixMilli()) {
		t.Errorf("acted feedback stored with ts %v, ts_ms %d; want %v, %d", ts, ms, late, acted.UnixMilli())
	}
}

// On the real services, reward.late_window: each decision carries its own
// late window. A decision is an example as soon as its reward window has
// closed, scored with the feedback inside it; feedback after the window but
// within the late window re-scores it, for analysts (the examples view) and
// for a retrain that reads it afterwards; feedback after both counts in no
// reward, and neither does late feedback on a decision without a late
// window. The dashboard counts the late feedback.
func TestLateWindowRescores(t *testing.T) {
	kcfg, ccfg := realServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn := mustReady(t, ctx, kcfg, ccfg)
	db := ccfg.Database()
	dw := kafka.NewWriter(kcfg, kcfg.Topics().Decisions)
	fw := kafka.NewWriter(kcfg, kcfg.Topics().Feedback)
	defer dw.Close()
	defer fw.Close()

	at := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Millisecond) // reward windows of 10s, closed long ago
	var decs []kafkago.Message
	for _, id := range []string{"in-time", "rescored", "ignored", "no-late-window"} {
		d := decision(id, at)
		d.Reward.WindowSeconds = 10
		if id != "no-late-window" {
			d.Reward.LateWindowSeconds = 60
		}
		decs = append(decs, msg(t, id, d))
	}
	feedback := func(id string, after time.Duration) kafkago.Message {
		return msg(t, id, flywheel.Feedback{Schema: 1, FeedbackID: "f-" + id, EventID: id, Time: at.Add(after), Reward: 1})
	}
	ing := startIngest(t, ctx, kcfg, conn, db)
	// send writes the messages and waits until ingest has written them and
	// its watermark has passed them.
	send := func(w *kafkago.Writer, ms ...kafkago.Message) {
		t.Helper()
		rows := ing.in.rows.WithLabelValues(map[*kafkago.Writer]string{dw: "decisions", fw: "feedback"}[w])
		want := testutil.ToFloat64(rows) + float64(len(ms))
		if err := w.WriteMessages(ctx, ms...); err != nil {
			t.Fatal(err)
		}
		written := time.Now()
		ing.waitFor(t, ctx, func(in *Ingester) bool {
			return testutil.ToFloat64(rows) >= want && testutil.ToFloat64(in.watermark) >= float64(written.UnixMilli())/1000
		})
	}
	training := clickhouse.NewTraining(conn, db)
	check := func(when string, want map[string][2]float64) {
		t.Helper()
		got := examplesOf(t, ctx, conn, db)
		trained := map[string][2]float64{}
		err := training.Rankers(ctx, "homepage", 0, uint64(time.Now().UnixMilli()), func(scan func(dst ...any) error) error {
			var (
				id, cj, aj, keys string
				ms, n            uint64
				ver              uint32
				probs            []float64
				chosen           uint16
				r                float64
			)
			if err := scan(&id, &ms, &ver, &cj, &aj, &keys, &probs, &chosen, &r, &n); err != nil {
				return err
			}
			trained[id] = [2]float64{float64(n), r}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for id, w := range want {
			if got[id] != w || trained[id] != w {
				t.Errorf("%s: %s has feedback_count, reward %v in examples and %v for retraining, want %v", when, id, got[id], trained[id], w)
			}
		}
	}

	send(dw, decs...)
	send(fw, feedback("in-time", 5*time.Second))
	// Closed at the window's end: trainable at once, the late window does
	// not hold it back.
	check("before the late feedback", map[string][2]float64{"in-time": {1, 1}, "rescored": {0, 0}, "ignored": {0, 0}, "no-late-window": {0, 0}})
	send(fw, feedback("rescored", 40*time.Second), feedback("ignored", 3*time.Minute), feedback("no-late-window", 40*time.Second))
	check("after it", map[string][2]float64{"in-time": {1, 1}, "rescored": {1, 1}, "ignored": {0, 0}, "no-late-window": {0, 0}})
	ing.end(t)

	o, err := clickhouse.Insights(ctx, conn, db, "homepage", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if want := (clickhouse.LateFeedback{Feedback: 4, Late: 3, Rescored: 1, LateShare: 0.75}); o.Late != want {
		t.Errorf("the dashboard counts late feedback %+v, want %+v", o.Late, want)
	}
	var rule uint32
	if err := conn.QueryRow(ctx, "SELECT reward_late_window_s FROM "+db+".decisions FINAL WHERE event_id = 'rescored'").Scan(&rule); err != nil || rule != 60 {
		t.Errorf("decision stored with reward_late_window_s %d (%v), want 60", rule, err)
	}
}

// examplesOf returns the feedback count and reward of every example in the
// examples view of db, by event id.
func examplesOf(t *testing.T, ctx context.Context, conn driver.Conn, db string) map[string][2]float64 {
	t.Helper()
	rows, err := conn.Query(ctx, "SELECT event_id, feedback_count, reward FROM "+db+".examples")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string][2]float64{}
	for rows.Next() {
		var id string
		var n uint64
		var r float64
		if err := rows.Scan(&id, &n, &r); err != nil {
			t.Fatal(err)
		}
		got[id] = [2]float64{float64(n), r}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

// testIngest is an ingester running in a test.
type testIngest struct {
	in   *Ingester
	done chan error
	stop context.CancelFunc
}

// startIngest runs an ingester of kcfg's topics into db over conn.
func startIngest(t *testing.T, ctx context.Context, kcfg kafka.Config, conn driver.Conn, db string) *testIngest {
	t.Helper()
	in, err := New(Config{Group: kcfg.TopicPrefix + "ingest", BatchRows: 10, BatchWait: 100 * time.Millisecond, WatermarkInterval: 100 * time.Millisecond},
		Options{Kafka: kcfg, Inserts: clickhouse.NewInserts(conn, db)})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	ti := &testIngest{in: in, done: make(chan error, 1), stop: stop}
	go func() { ti.done <- in.Run(rctx) }()
	return ti
}

// waitFor polls ok until it holds; the test fails if ingest stops or ctx
// ends first.
func (ti *testIngest) waitFor(t *testing.T, ctx context.Context, ok func(in *Ingester) bool) {
	t.Helper()
	for !ok(ti.in) {
		select {
		case <-ctx.Done():
			t.Fatal("timed out waiting for ingest")
		case err := <-ti.done:
			t.Fatalf("ingest stopped: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// end stops the ingester; the test fails if it returns an error.
func (ti *testIngest) end(t *testing.T) {
	t.Helper()
	ti.stop()
	if err := <-ti.done; err != nil {
		t.Fatalf("ingest returned %v", err)
	}
}

// On the real services: event ids are unique per model. Of decisions that
// two serving processes logged under one model and event id, the first is
// kept and the later one goes to the dead-letter topic (in the same batch,
// and after a restart, found in ClickHouse); a second delivery of the first
// is no conflict, and the same id under another model is another decision.
func TestReusedEventIDKeepsTheFirstDecision(t *testing.T) {
	kcfg, ccfg := realServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn := mustReady(t, ctx, kcfg, ccfg)
	db := ccfg.Database()
	dw := kafka.NewWriter(kcfg, kcfg.Topics().Decisions)
	defer dw.Close()

	at := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	first := decision("dup", at)
	other := decision("dup", at.Add(time.Millisecond)) // another replica's: other time, other choice
	other.ChosenIndex, other.Chosen = 0, "a1"
	otherModel := decision("dup", at.Add(2*time.Millisecond))
	otherModel.Model = "search"
	if err := dw.WriteMessages(ctx, msg(t, "dup", first), msg(t, "dup", other), msg(t, "dup", first), msg(t, "dup", otherModel), msg(t, "x", decision("x", at))); err != nil {
		t.Fatal(err)
	}
	ing := startIngest(t, ctx, kcfg, conn, db)
	ing.waitFor(t, ctx, func(in *Ingester) bool {
		return testutil.ToFloat64(in.rows.WithLabelValues("decisions")) >= 4 && testutil.ToFloat64(in.dead) >= 1
	})
	if n := testutil.ToFloat64(ing.in.reused.WithLabelValues("homepage")); n != 1 {
		t.Errorf("%v reused event ids counted, want 1", n)
	}
	ing.end(t)

	// Later, after a restart: a third decision under the id, found stored.
	third := decision("dup", at.Add(time.Second))
	third.Version = 2
	if err := dw.WriteMessages(ctx, msg(t, "dup", third), msg(t, "y", decision("y", at))); err != nil {
		t.Fatal(err)
	}
	ing = startIngest(t, ctx, kcfg, conn, db)
	ing.waitFor(t, ctx, func(in *Ingester) bool {
		return testutil.ToFloat64(in.rows.WithLabelValues("decisions")) >= 1 && testutil.ToFloat64(in.dead) >= 1
	})
	ing.end(t)

	rows, err := conn.Query(ctx, "SELECT model, chosen, version, ts_ms FROM "+db+".decisions FINAL WHERE event_id = 'dup' ORDER BY model")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var model, chosen string
		var version uint32
		var ms uint64
		if err := rows.Scan(&model, &chosen, &version, &ms); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s v%d +%dms", model, chosen, version, int64(ms)-at.UnixMilli()))
	}
	rows.Close()
	if want := "homepage a2 v1 +0ms, search a2 v1 +2ms"; strings.Join(got, ", ") != want {
		t.Errorf("stored under dup: %q, want %q", strings.Join(got, ", "), want)
	}
	var dead []string
	if err := kafka.ReadTopic(ctx, kcfg, kcfg.Topics().DLQ, func(r kafka.Record) error {
		dead = append(dead, string(r.Value))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	reused := 0
	for _, d := range dead {
		if strings.Contains(d, `event_id \"dup\" of model \"homepage\" already names another decision`) {
			reused++
		}
	}
	if reused != 2 || len(dead) != 2 {
		t.Errorf("dead letters: %d for the reused id of %d, want 2 of 2:\n%s", reused, len(dead), strings.Join(dead, "\n"))
	}
	t.Logf("kept: %s; dead-lettered: %d", strings.Join(got, ", "), reused)
}
