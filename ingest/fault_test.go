package ingest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/internal/testenv"
	"github.com/flywheel-dev/flywheel/kafka"
)

func countFinal(t *testing.T, ctx context.Context, ccfg clickhouse.Config) (rows, distinct uint64) {
	t.Helper()
	conn, err := clickhouse.Open(ctx, ccfg)
	if err != nil {
		return 0, 0
	}
	defer conn.Close()
	if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(event_id) FROM "+ccfg.Database()+".decisions FINAL").Scan(&rows, &distinct); err != nil {
		return 0, 0
	}
	return rows, distinct
}

// variedDecision is decision(id, ts) whose second action is one of 3,000
// versions: new actions keep coming, in every batch.
func variedDecision(id string, ts time.Time, i int) flywheel.Decision {
	d := decision(id, ts)
	d.Actions[1].Features = flywheel.Features{"item": {"version": float64(i % 3000)}}
	return d
}

// danglingKeys counts the action keys of decisions that name their actions
// by key alone and are not in the actions table: such a decision must never
// be in before the actions it names.
func danglingKeys(t *testing.T, ctx context.Context, ccfg clickhouse.Config) (dangling, actions uint64) {
	t.Helper()
	conn, err := clickhouse.Open(ctx, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	db := ccfg.Database()
	if err := conn.QueryRow(ctx, "SELECT count() FROM (SELECT arrayJoin(action_keys) AS k FROM "+db+".decisions WHERE actions_json = '') WHERE k NOT IN (SELECT action_key FROM "+db+".actions)").Scan(&dangling); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".actions FINAL").Scan(&actions); err != nil {
		t.Fatal(err)
	}
	return dangling, actions
}

// produceFor writes decisions with ids p-0, p-1, ... at about rate per
// second until stop is closed, and returns how many it wrote.
func produceFor(t *testing.T, ctx context.Context, kcfg kafka.Config, prefix string, rate int, stop <-chan struct{}) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	w := kafka.NewWriter(kcfg, kcfg.Topics().Decisions)
	old := time.Now().Add(-time.Minute).UTC()
	go func() {
		defer w.Close()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			var msgs []kafkago.Message
			for i := 0; i < rate/10; i++ {
				seq := n.Load() + int64(i)
				id := fmt.Sprintf("%s-%d", prefix, seq)
				msgs = append(msgs, msg(t, id, variedDecision(id, old, int(seq))))
			}
			if err := w.WriteMessages(ctx, msgs...); err != nil {
				t.Errorf("produce: %v", err)
				return
			}
			n.Add(int64(len(msgs)))
		}
	}()
	return &n
}

// With ClickHouse stopped for 30 s under load, ingest retries, commits
// nothing it did not insert, resumes by itself, and every record appears once.
func TestIngestRidesOutClickHouseOutage(t *testing.T) {
	kcfg, _ := realServices(t)
	chFault := testenv.ClickHouseFault(t)
	testenv.Services(t)
	outage := testenv.Outage(t, 30*time.Second)
	ctl := func(verb string) {
		t.Helper()
		testenv.Control(t, "clickhouse", verb, chFault)
	}
	ccfg := clickhouse.Config{DSN: fmt.Sprintf("clickhouse://%s/chout_%d", chFault, time.Now().UnixNano())}
	ctx, cancel := context.WithTimeout(context.Background(), outage+3*time.Minute)
	defer cancel()
	conn := mustReady(t, ctx, kcfg, ccfg)
	in, err := New(Config{Group: kcfg.TopicPrefix + "ingest", BatchRows: 500, BatchWait: 200 * time.Millisecond}, Options{Kafka: kcfg, Inserts: clickhouse.NewInserts(conn, ccfg.Database())})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stopIngest := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- in.Run(rctx) }()
	stop := make(chan struct{})
	produced := produceFor(t, ctx, kcfg, "o", 300, stop)
	time.Sleep(3 * time.Second)
	ctl("down")
	t0 := time.Now()
	time.Sleep(outage)
	during := produced.Load()
	ctl("up")
	t.Logf("ClickHouse down for %.1fs while %d records had been produced", time.Since(t0).Seconds(), during)
	time.Sleep(3 * time.Second)
	close(stop)
	time.Sleep(200 * time.Millisecond)
	want := uint64(produced.Load())
	var rows, distinct uint64
	for rows, distinct = countFinal(t, ctx, ccfg); rows < want; rows, distinct = countFinal(t, ctx, ccfg) {
		select {
		case err := <-done:
			t.Fatalf("ingest stopped: %v (%d of %d rows)", err, rows, want)
		case <-ctx.Done():
			t.Fatalf("timed out: %d of %d rows", rows, want)
		case <-time.After(200 * time.Millisecond):
		}
	}
	stopIngest()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	dangling, actions := danglingKeys(t, ctx, ccfg)
	t.Logf("%d produced, %d rows in decisions FINAL, %d distinct; %d distinct actions, %d action keys of decisions not in the actions table", want, rows, distinct, actions, dangling)
	if rows != want || distinct != want || dangling != 0 {
		t.Fatalf("%d produced, %d rows, %d distinct, %d dangling action keys", want, rows, distinct, dangling)
	}
}

// kill -9 of an ingest process mid-batch and a restart leave every event
// exactly once in the views.
func TestIngestKill9MidBatch(t *testing.T) {
	kcfg, ccfg := realServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "flywheel")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "../cmd/flywheel").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cfg := filepath.Join(t.TempDir(), "flywheel.yaml")
	yaml := fmt.Sprintf("kafka: {brokers: [%q], topic_prefix: %q, partitions: 3}\nclickhouse: {dsn: %q}\ningest: {batch_rows: 2000, batch_wait: 1s}\nlog: {level: warn}\n",
		kcfg.Brokers[0], kcfg.TopicPrefix, ccfg.DSN)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	kcfg.Partitions = 3
	if err := kafka.EnsureTopics(ctx, kcfg); err != nil {
		t.Fatal(err)
	}
	const n = 20000
	w := kafka.NewWriter(kcfg, kcfg.Topics().Decisions)
	old := time.Now().Add(-time.Minute).UTC()
	for b := 0; b < n; b += 1000 {
		var msgs []kafkago.Message
		for i := b; i < b+1000; i++ {
			id := "k-" + strconv.Itoa(i)
			msgs = append(msgs, msg(t, id, variedDecision(id, old, i)))
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "ingest", "--config", cfg)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	first := start()
	var atKill uint64
	for {
		rows, _ := countFinal(t, ctx, ccfg)
		if rows > 0 {
			atKill = rows
			break
		}
		select {
		case <-ctx.Done():
			first.Process.Kill()
			t.Fatal("the first ingest process inserted nothing")
		case <-time.After(20 * time.Millisecond):
		}
	}
	first.Process.Kill() // SIGKILL, between batches or in the middle of one
	first.Wait()
	second := start()
	defer func() { second.Process.Kill(); second.Wait() }()
	var rows, distinct uint64
	for rows, distinct = countFinal(t, ctx, ccfg); rows < n; rows, distinct = countFinal(t, ctx, ccfg) {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out: %d of %d rows", rows, n)
		case <-time.After(200 * time.Millisecond):
		}
	}
	conn, err := clickhouse.Open(ctx, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	defer conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+ccfg.Database())
	var raw, examples uint64
	conn.QueryRow(ctx, "SELECT count() FROM "+ccfg.Database()+".decisions").Scan(&raw)
	// Closed once the second process's feedback watermark has passed them.
	for conn.QueryRow(ctx, "SELECT count() FROM "+ccfg.Database()+".examples").Scan(&examples); examples < n && ctx.Err() == nil; {
		time.Sleep(200 * time.Millisecond)
		conn.QueryRow(ctx, "SELECT count() FROM "+ccfg.Database()+".examples").Scan(&examples)
	}
	dangling, actions := danglingKeys(t, ctx, ccfg)
	t.Logf("killed with %d rows inserted; after the restart %d rows in decisions FINAL (%d distinct, %d stored before merging), %d in examples; %d distinct actions, %d action keys of decisions not in the actions table",
		atKill, rows, distinct, raw, examples, actions, dangling)
	if rows != n || distinct != n || examples != n || dangling != 0 || actions != 3001 {
		t.Fatalf("%d rows, %d distinct, %d examples; want %d each; %d dangling action keys (want 0), %d actions (want 3001)", rows, distinct, examples, n, dangling, actions)
	}
}
