package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel/internal/testenv"
	"github.com/flywheel-dev/flywheel/kafka"
)

const faultAppKey = "fault-test-app-key-0123456789"

// faultServices returns the fault broker (one the test may stop, with the
// services script, which it checks is named) and the ClickHouse address.
func faultServices(t *testing.T) (broker, ch string) {
	t.Helper()
	testenv.Services(t)
	return testenv.KafkaFault(t), testenv.ClickHouse(t)
}

func brokerCtl(t *testing.T, broker, verb string) {
	t.Helper()
	testenv.Control(t, "kafka", verb, broker)
}

func faultConfig(t *testing.T, broker, ch, prefix, spool, addr string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "flywheel.yaml")
	cfg := fmt.Sprintf(`
http: {addr: %q}
kafka: {brokers: [%q], topic_prefix: %q, partitions: 2}
clickhouse: {dsn: "clickhouse://%s/%s"}
auth: {app_keys: [%q]}
serve: {spool_dir: %q}
log: {level: warn}
models:
  homepage: {kind: ranker, interactions: [[user, item]]}
`, addr, broker, prefix, ch, strings.TrimSuffix(prefix, "."), faultAppKey, spool)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func postJSON(url, key string, body any) (int, []byte, error) {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes(), nil
}

var rankBody = map[string]any{"model": "homepage", "context": map[string]any{"user": map[string]any{"segment": "b"}},
	"actions": []any{map[string]any{"id": "a1", "features": map[string]any{"item": map[string]any{"id": "i1"}}},
		map[string]any{"id": "a2", "features": map[string]any{"item": map[string]any{"id": "i2"}}}}}

// load sends rank then feedback from workers until stop is closed, pacing each
// worker, and returns the acknowledged event ids and feedback ids and the
// number of failed requests.
type loadResult struct {
	mu        sync.Mutex
	decisions []string
	feedback  []string
	failures  atomic.Int64
}

func runLoad(url string, workers int, pace time.Duration, stop <-chan struct{}) *loadResult {
	res := &loadResult{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(pace):
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				body := map[string]any{}
				for k, v := range rankBody {
					body[k] = v
				}
				body["event_id"] = id
				if code, _, err := postJSON(url+"/v1/rank", faultAppKey, body); err != nil || code != 200 {
					res.failures.Add(1)
					continue
				}
				res.mu.Lock()
				res.decisions = append(res.decisions, id)
				res.mu.Unlock()
				fid := "fb-" + id
				if code, _, err := postJSON(url+"/v1/feedback", faultAppKey, map[string]any{"event_id": id, "feedback_id": fid, "reward": 1}); err != nil || code != 202 {
					res.failures.Add(1)
					continue
				}
				res.mu.Lock()
				res.feedback = append(res.feedback, fid)
				res.mu.Unlock()
			}
		}(w)
	}
	go func() { <-stop; wg.Wait() }()
	return res
}

// readTopic reads every record of every partition of topic, from the first
// offset to the end, and counts each record by the JSON field idField. Two
// different records with the same id fail the test: a record delivered
// twice (at least once, as the spool ships) must be the same record, which
// ingest then keeps once.
func readTopic(t *testing.T, ctx context.Context, broker, topic, idField string) map[string]int {
	t.Helper()
	seen := map[string]int{}
	first := map[string]string{}
	err := kafka.ReadTopic(ctx, kafka.Config{Brokers: []string{broker}}, topic, func(m kafka.Record) error {
		var v map[string]any
		if json.Unmarshal(m.Value, &v) == nil {
			id := fmt.Sprint(v[idField])
			seen[id]++
			if f, ok := first[id]; !ok {
				first[id] = string(m.Value)
			} else if f != string(m.Value) {
				t.Errorf("%s: two different records with %s %s:\n%s\n%s", topic, idField, id, f, m.Value)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return seen
}

// With the broker stopped for 30 s under load, serving keeps answering, and
// every decision and feedback it acknowledged reaches Kafka exactly once by
// id after the broker is back.
func TestServeRidesOutBrokerOutage(t *testing.T) {
	broker, ch := faultServices(t)
	outage := testenv.Outage(t, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), outage+4*time.Minute)
	defer cancel()
	prefix := fmt.Sprintf("outage%d.", time.Now().UnixNano())
	addr := testenv.FreeAddr(t)
	cfg := faultConfig(t, broker, ch, prefix, t.TempDir(), addr)
	url := "http://" + addr
	defer inProcess(t, ctx, "flywheel serve", "serve", "--config", cfg)()
	waitReady(t, ctx, url)

	stop := make(chan struct{})
	load := runLoad(url, 4, 20*time.Millisecond, stop)
	time.Sleep(3 * time.Second)
	brokerCtl(t, broker, "down")
	down := time.Now()
	load.mu.Lock()
	before := len(load.decisions)
	load.mu.Unlock()
	time.Sleep(outage)
	load.mu.Lock()
	during := len(load.decisions) - before
	load.mu.Unlock()
	brokerCtl(t, broker, "up")
	t.Logf("broker down for %.1fs; %d decisions answered meanwhile", time.Since(down).Seconds(), during)
	time.Sleep(3 * time.Second)
	close(stop)
	time.Sleep(200 * time.Millisecond)
	load.mu.Lock()
	decisions, feedback := append([]string(nil), load.decisions...), append([]string(nil), load.feedback...)
	load.mu.Unlock()
	if n := load.failures.Load(); n != 0 {
		t.Errorf("%d requests failed", n)
	}
	if during == 0 {
		t.Fatal("no decision was answered while the broker was down")
	}
	t.Logf("load stopped after %.1fs; reading the topics back", time.Since(down).Seconds())
	topics := kafka.Config{TopicPrefix: prefix}.Topics()
	// Wait until serving has shipped its spool (its metric), then read back.
	waitFor(t, ctx, "the spool to be shipped", func() bool { return spoolEmpty(url) })
	gotD := readTopic(t, ctx, broker, topics.Decisions, "event_id")
	gotF := readTopic(t, ctx, broker, topics.Feedback, "feedback_id")
	// Nothing acknowledged may be missing. The spool ships at least once
	// (kafka-go has no idempotent producer): a produce request the broker
	// applied but could not answer before it went down is sent again, so a
	// record may be in Kafka twice, as the same bytes (readTopic checks),
	// which ingest keeps once (by event id and feedback id).
	check := func(kind string, want []string, got map[string]int) {
		missing, dup := delivery(want, got)
		t.Logf("%s: %d acknowledged, %d in Kafka, %d missing, %d more than once", kind, len(want), len(got), missing, dup)
		if missing != 0 || len(got) != len(want) {
			t.Errorf("%s: %d missing, %d distinct in Kafka for %d acknowledged", kind, missing, len(got), len(want))
		}
	}
	t.Logf("topics read back %.1fs after the outage began", time.Since(down).Seconds())
	check("decisions", decisions, gotD)
	check("feedback", feedback, gotF)
}
