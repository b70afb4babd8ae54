package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus/testutil"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/internal/testenv"
	"github.com/flywheel-dev/flywheel/kafka"
)

func realServices(t *testing.T) (kafka.Config, clickhouse.Config) {
	t.Helper()
	k, c := testenv.Kafka(t), testenv.ClickHouse(t)
	n := time.Now().UnixNano()
	return kafka.Config{Brokers: k, TopicPrefix: fmt.Sprintf("ing%d.", n), Partitions: 3},
		clickhouse.Config{DSN: fmt.Sprintf("clickhouse://%s/ing_%d", c, n)}
}

// mustReady creates the topics and a migrated database, and returns a
// connection to it; the database is dropped when the test ends.
func mustReady(t *testing.T, ctx context.Context, kcfg kafka.Config, ccfg clickhouse.Config) driver.Conn {
	t.Helper()
	if err := kafka.EnsureTopics(ctx, kcfg); err != nil {
		t.Fatal(err)
	}
	if err := clickhouse.Migrate(ctx, ccfg); err != nil {
		t.Fatal(err)
	}
	conn, err := clickhouse.Open(ctx, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+ccfg.Database())
		conn.Close()
	})
	return conn
}

func decision(id string, ts time.Time) flywheel.Decision {
	return flywheel.Decision{
		Schema: 1, EventID: id, Time: ts, Model: "homepage", Kind: flywheel.KindRanker, Version: 1, Variant: "champion",
		Context:       flywheel.Features{"user": {"segment": "b", "age": 31.0, "tags": []any{"x", "y"}}},
		Actions:       []flywheel.Action{{ID: "a1", Features: flywheel.Features{"item": {"category": "shoes"}}}, {ID: "a2"}},
		Probabilities: []float64{0.25, 0.75}, Ranking: []string{"a2", "a1"}, ChosenIndex: 1, Chosen: "a2",
		Reward: flywheel.RewardRule{WindowSeconds: 1, Default: 0, Aggregate: "sum"},
	}
}

func msg(t *testing.T, key string, v any) kafkago.Message {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return kafkago.Message{Key: []byte(key), Value: b}
}

// Duplicates appear once, a poison record goes to the DLQ with its origin and
// the records after it are ingested, and a restarted ingester neither loses
// nor doubles anything.
func TestIngestIdempotentWithDeadLetters(t *testing.T) {
	kcfg, ccfg := realServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn := mustReady(t, ctx, kcfg, ccfg)
	db := ccfg.Database()

	dw := kafka.NewWriter(kcfg, kcfg.Topics().Decisions)
	fw := kafka.NewWriter(kcfg, kcfg.Topics().Feedback)
	defer dw.Close()
	defer fw.Close()
	old := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	var decs, fbs []kafkago.Message
	for i := 0; i < 100; i++ {
		id := fmt.Sprintf("ev-%03d", i)
		decs = append(decs, msg(t, id, decision(id, old)))
		if i%4 == 0 {
			fbs = append(fbs, msg(t, id, flywheel.Feedback{Schema: 1, FeedbackID: "fb-" + id, EventID: id, Time: old.Add(100 * time.Millisecond), Reward: 1}))
		}
	}
	poison := kafkago.Message{Key: []byte("poison"), Value: []byte(`{"schema": 1, "event_id": "poison", "model": ""}`)}
	// first half, the poison record, second half, then every decision again
	batch := append(append(append([]kafkago.Message{}, decs[:50]...), poison), decs[50:]...)
	if err := dw.WriteMessages(ctx, batch...); err != nil {
		t.Fatal(err)
	}
	if err := fw.WriteMessages(ctx, append(fbs, fbs...)...); err != nil {
		t.Fatal(err)
	}

	count := func(q string) uint64 {
		var n uint64
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	runFor := func(until func(in *Ingester) bool) {
		t.Helper()
		in, err := New(Config{Group: kcfg.TopicPrefix + "ingest", BatchRows: 40, BatchWait: 100 * time.Millisecond, WatermarkInterval: 100 * time.Millisecond}, Options{Kafka: kcfg, Inserts: clickhouse.NewInserts(conn, db)})
		if err != nil {
			t.Fatal(err)
		}
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- in.Run(rctx) }()
		for !until(in) {
			select {
			case <-ctx.Done():
				t.Fatalf("timed out waiting for ingest: %d decisions, %d feedback", count("SELECT count() FROM "+db+".decisions"), count("SELECT count() FROM "+db+".feedback"))
			case err := <-done:
				t.Fatalf("ingest stopped: %v", err)
			case <-time.After(100 * time.Millisecond):
			}
		}
		stop()
		if err := <-done; err != nil {
			t.Fatalf("ingest returned %v", err)
		}
	}
	runFor(func(*Ingester) bool {
		return count("SELECT count() FROM "+db+".decisions FINAL") >= 100 && count("SELECT count() FROM "+db+".feedback FINAL") >= 25
	})

	// Deliver everything again, as after a crash before the commit; restart.
	if err := dw.WriteMessages(ctx, decs...); err != nil {
		t.Fatal(err)
	}
	if err := fw.WriteMessages(ctx, fbs...); err != nil {
		t.Fatal(err)
	}
	written := time.Now()
	// Raw row counts shrink as ClickHouse merges duplicates away, so the
	// restarted ingester's own counters say when it has inserted them again;
	// its watermark, when the decisions are closed.
	runFor(func(in *Ingester) bool {
		return testutil.ToFloat64(in.rows.WithLabelValues("decisions")) >= 100 && testutil.ToFloat64(in.rows.WithLabelValues("feedback")) >= 25 &&
			testutil.ToFloat64(in.watermark) >= float64(written.UnixMilli())/1000
	})

	if n := count("SELECT count() FROM " + db + ".decisions FINAL"); n != 100 {
		t.Errorf("decisions FINAL has %d rows, want 100", n)
	}
	if n := count("SELECT count() FROM " + db + ".examples"); n != 100 {
		t.Errorf("examples has %d rows, want 100", n)
	}
	if n := count("SELECT toUInt64(sum(reward)) FROM " + db + ".examples"); n != 25 {
		t.Errorf("examples reward sum %d, want 25 (each feedback once)", n)
	}
	if n := count("SELECT count() FROM " + db + ".decisions FINAL WHERE has(context_names, 'user^tags') AND context_values[indexOf(context_names, 'user^segment')] = 'b'"); n != 100 {
		t.Errorf("feature arrays: %d rows match, want 100", n)
	}

	// Every column of one decision holds what was logged.
	var (
		ev, model, kind, variant, chosen, agg, ctxJSON, actJSON string
		tsMs                                                    uint64
		version, window                                         uint32
		chosenIdx                                               uint16
		explored                                                uint8
		chosenProb, score, def                                  float64
		ctxNames, ctxValues, actionIDs, chNames, chValues       []string
		actionKeys                                              []string
		ctxNumbers, probs, chNumbers                            []float64
	)
	if err := conn.QueryRow(ctx, `SELECT event_id, ts_ms, model, kind, version, variant, context_names, context_values, context_numbers,
		action_ids, probabilities, chosen, chosen_index, chosen_probability, chosen_names, chosen_values, chosen_numbers,
		explored, score, reward_window_s, reward_default, reward_aggregate, context_json, actions_json, action_keys
		FROM `+db+`.decisions FINAL WHERE event_id = 'ev-007'`).Scan(&ev, &tsMs, &model, &kind, &version, &variant, &ctxNames, &ctxValues, &ctxNumbers,
		&actionIDs, &probs, &chosen, &chosenIdx, &chosenProb, &chNames, &chValues, &chNumbers,
		&explored, &score, &window, &def, &agg, &ctxJSON, &actJSON, &actionKeys); err != nil {
		t.Fatal(err)
	}
	// Its actions are in the actions table, by key. Every decision offered
	// the same two actions: each run wrote them once, when it saw them the
	// second time, not with each of its 100 or 200 decisions; the one
	// decision a run saw them in first carries their JSON as well. Which
	// copy of that decision FINAL keeps depends on the delivery: when the
	// first run stopped before committing its last offsets, the second
	// reads those decisions again, and a later copy without the JSON
	// (written once the actions were known) replaces the first. So at most
	// one decision per run carries it, and the actions table has them all.
	if actJSON != "" {
		var inline []flywheel.Action
		if json.Unmarshal([]byte(actJSON), &inline) != nil || fmt.Sprint(inline) != fmt.Sprint(decision("ev-007", old).Actions) {
			t.Errorf("inline actions JSON %s is not the logged actions", actJSON)
		}
	}
	if n := count("SELECT count() FROM " + db + ".decisions FINAL WHERE actions_json != ''"); n > 2 {
		t.Errorf("%d decisions carry their actions' JSON, want at most 2 (the first of each run)", n)
	}
	if n := count("SELECT count() FROM " + db + ".actions FINAL"); n != 2 {
		t.Errorf("actions FINAL has %d rows, want 2", n)
	}
	if n := count("SELECT count() FROM " + db + ".actions"); n > 4 {
		t.Errorf("actions has %d rows before merging, want at most 4 (each action once by each of the two runs)", n)
	}
	var parts []string
	for _, key := range actionKeys {
		var js string
		if err := conn.QueryRow(ctx, "SELECT action_json FROM "+db+".actions FINAL WHERE action_key = ?", key).Scan(&js); err != nil {
			t.Fatalf("action %s: %v", key, err)
		}
		parts = append(parts, js)
	}
	actJSON = "[" + strings.Join(parts, ",") + "]"
	want := decision("ev-007", old)
	got := fmt.Sprint(ev, tsMs, model, kind, version, variant, ctxNames, ctxValues, ctxNumbers, actionIDs, probs, chosen, chosenIdx, chosenProb,
		len(chNames), len(chValues), len(chNumbers), explored, score, window, def, agg)
	if exp := fmt.Sprint("ev-007", uint64(old.UnixMilli()), "homepage", "ranker", 1, "champion", []string{"user^age", "user^segment", "user^tags", "user^tags"},
		[]string{"", "b", "x", "y"}, []float64{31, 1, 1, 1}, []string{"a1", "a2"}, []float64{0.25, 0.75}, "a2", 1, 0.75,
		0, 0, 0, 0, 0, 1, 0, "sum"); got != exp {
		t.Errorf("decision columns:\n got %s\nwant %s", got, exp)
	}
	var gotCtx flywheel.Features
	var gotActs []flywheel.Action
	if json.Unmarshal([]byte(ctxJSON), &gotCtx) != nil || json.Unmarshal([]byte(actJSON), &gotActs) != nil ||
		fmt.Sprint(gotCtx) != fmt.Sprint(want.Context) || fmt.Sprint(gotActs) != fmt.Sprint(want.Actions) {
		t.Errorf("stored JSON %s %s does not decode to the logged context and actions", ctxJSON, actJSON)
	}

	// The poison record is in the DLQ with its origin.
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: kcfg.Brokers, Topic: kcfg.Topics().DLQ, Partition: 0, MaxWait: 200 * time.Millisecond})
	defer r.Close()
	m, err := r.ReadMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var dead deadRecord
	if err := json.Unmarshal(m.Value, &dead); err != nil {
		t.Fatal(err)
	}
	if dead.Topic != kcfg.Topics().Decisions || !strings.Contains(dead.Error, "model is empty") || !strings.Contains(dead.Value, `"poison"`) {
		t.Errorf("dead letter %+v", dead)
	}
}

// Two ingest processes in one group split the partitions between them, and
// together insert every record once.
func TestTwoIngestersSplitPartitions(t *testing.T) {
	kcfg, ccfg := realServices(t)
	kcfg.Partitions = 4
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn := mustReady(t, ctx, kcfg, ccfg)
	db := ccfg.Database()
	var ins [2]*Ingester
	var stops [2]context.CancelFunc
	var dones [2]chan error
	for i := range ins {
		in, err := New(Config{Group: kcfg.TopicPrefix + "ingest", BatchRows: 50, BatchWait: 100 * time.Millisecond}, Options{Kafka: kcfg, Inserts: clickhouse.NewInserts(conn, db)})
		if err != nil {
			t.Fatal(err)
		}
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- in.Run(rctx) }()
		ins[i], stops[i], dones[i] = in, stop, done
	}
	defer func() {
		for i := range ins {
			stops[i]()
			<-dones[i]
		}
	}()
	time.Sleep(3 * time.Second) // let both join before the records arrive
	w := kafka.NewWriter(kcfg, kcfg.Topics().Decisions)
	defer w.Close()
	old := time.Now().Add(-time.Minute).UTC()
	var msgs []kafkago.Message
	for i := 0; i < 400; i++ {
		id := fmt.Sprintf("ev-%03d", i)
		msgs = append(msgs, msg(t, id, decision(id, old)))
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	rows := func(in *Ingester) float64 { return testutil.ToFloat64(in.rows.WithLabelValues("decisions")) }
	for rows(ins[0])+rows(ins[1]) < 400 {
		select {
		case <-ctx.Done():
			t.Fatalf("ingested %v + %v of 400", rows(ins[0]), rows(ins[1]))
		case <-time.After(100 * time.Millisecond):
		}
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".decisions FINAL").Scan(&n); err != nil {
		t.Fatal(err)
	}
	t.Logf("ingester A inserted %v, ingester B %v; %d distinct decisions", rows(ins[0]), rows(ins[1]), n)
	if rows(ins[0]) == 0 || rows(ins[1]) == 0 || rows(ins[0])+rows(ins[1]) != 400 || n != 400 {
		t.Fatalf("the partitions were not split: %v + %v rows, %d distinct", rows(ins[0]), rows(ins[1]), n)
	}
}

// A batch is cut early once it has 1000 records and ingest has read every
// partition in it to the end, long before batch_wait; a smaller one waits
// for batch_wait, so that a trickle of records does not become a trickle of
// tiny inserts.
func TestBatchCutWhenCaughtUp(t *testing.T) {
	kcfg, ccfg := realServices(t)
	kcfg.Partitions = 1 // "read to the end" then means all 1500 were read
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn := mustReady(t, ctx, kcfg, ccfg)
	const wait = 8 * time.Second
	in, err := New(Config{Group: kcfg.TopicPrefix + "ingest", BatchWait: wait}, Options{Kafka: kcfg, Inserts: clickhouse.NewInserts(conn, ccfg.Database())})
	if err != nil {
		t.Fatal(err)
	}
	w := kafka.NewWriter(kcfg, kcfg.Topics().Decisions)
	defer w.Close()
	produce := func(from, n int) time.Time {
		var msgs []kafkago.Message
		for i := from; i < from+n; i++ {
			id := fmt.Sprintf("ev-%05d", i)
			msgs = append(msgs, msg(t, id, decision(id, time.Now().Add(-time.Minute).UTC())))
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}
	rows := func() float64 { return testutil.ToFloat64(in.rows.WithLabelValues("decisions")) }
	waitFor := func(n float64, within time.Duration) time.Duration {
		start := time.Now()
		for rows() < n {
			if time.Since(start) > within {
				t.Fatalf("%v of %v rows after %v", rows(), n, within)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return time.Since(start)
	}
	// All 1500 are in the log before ingest starts, so that it does not
	// catch up, and cut a batch, between two of the writer's requests.
	produce(0, 1500)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- in.Run(rctx) }()
	defer func() { stop(); <-done }()
	big := waitFor(1500, wait-2*time.Second)
	sent := produce(1500, 10)
	time.Sleep(wait / 2)
	if rows() != 1500 {
		t.Fatalf("a batch of 10 records was inserted %v after it was produced, before batch_wait (%v)", time.Since(sent), wait)
	}
	waitFor(1510, wait)
	t.Logf("1500 records inserted %v after ingest started (batch_wait %v); 10 records inserted %v after they were produced",
		big.Round(time.Millisecond), wait, time.Since(sent).Round(time.Millisecond))
}
