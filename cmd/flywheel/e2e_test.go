package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/internal/testenv"
	"github.com/flywheel-dev/flywheel/sim"
)

// services returns the real Kafka and ClickHouse that `make test` starts.
func services(t *testing.T) (kafkaAddr, chAddr string) {
	t.Helper()
	return strings.Join(testenv.Kafka(t), ","), testenv.ClickHouse(t)
}

// testDB connects to database db on the ClickHouse at chAddr; the database
// is dropped when the test ends, after the processes it started stopped.
func testDB(t *testing.T, ctx context.Context, chAddr, db string) driver.Conn {
	t.Helper()
	conn, err := clickhouse.Open(ctx, clickhouse.Config{DSN: fmt.Sprintf("clickhouse://%s/%s", chAddr, db)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		conn.Close()
	})
	return conn
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func waitReady(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	waitFor(t, ctx, "readiness", func() bool {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// delivery counts the ids of want that got holds no time and more than once.
func delivery(want []string, got map[string]int) (missing, dup int) {
	for _, id := range want {
		switch got[id] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	return missing, dup
}

func liveVersion(url string) int {
	resp, err := http.Get(url + "/v1/models/homepage")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var mi struct {
		Version int `json:"live_version"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&mi)
	return mi.Version
}

// TestLoopCloses runs `flywheel dev` against the real broker and server, lets
// the simulator drive it from the uniformly random first version until
// retraining promotes a better one, and checks that the new version is served,
// beats version 1 by more than three standard errors, and that every decision
// the simulator received is in ClickHouse exactly once.
func TestLoopCloses(t *testing.T) {
	kafkaAddr, chAddr := services(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	suffix := time.Now().UnixNano()
	db := fmt.Sprintf("e2e_%d", suffix)
	addr := testenv.FreeAddr(t)
	url := "http://" + addr
	cfgPath := filepath.Join(t.TempDir(), "flywheel.yaml")
	cfg := fmt.Sprintf(`
http: {addr: %q}
kafka: {brokers: [%q], topic_prefix: "e2e%d.", partitions: 4}
clickhouse: {dsn: "clickhouse://%s/%s"}
ingest: {batch_wait: 200ms}
serve: {poll_interval: 2s}
log: {level: info}
models:
  homepage:
    kind: ranker
    interactions: [[user, item]]
    exploration: {policy: epsilon-greedy, epsilon: 0.1}
    reward: {window: 1s, default: 0, aggregate: sum}
    retrain: {schedule: "@every 3s", window: 1h, holdout: 0.3, min_new_examples: 1000, passes: 2}
    promote: {policy: auto, estimator: snips, confidence: 0.95}
`, addr, kafkaAddr, suffix, chAddr, db)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	defer inProcess(t, ctx, "flywheel dev", "dev", "--config", cfgPath)()
	waitReady(t, ctx, url)
	if v := liveVersion(url); v != 1 {
		t.Fatalf("a fresh model starts at version %d, want 1", v)
	}

	// Phase 1: the uniformly random version 1.
	first, err := sim.Run(ctx, sim.Config{URL: url, Events: 2000, Concurrency: 4, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if first.Errors != 0 || len(first.Versions) == 0 || first.Versions[0].Version != 1 {
		t.Fatalf("phase 1: %d errors (the first: %s), versions %+v", first.Errors, first.FirstError, first.Versions)
	}
	start := time.Now()
	waitFor(t, ctx, "a promoted version >= 2 to be served", func() bool { return liveVersion(url) >= 2 })
	t.Logf("version %d served %.1fs after phase 1 ended", liveVersion(url), time.Since(start).Seconds())

	// Phase 2: the promoted version.
	second, err := sim.Run(ctx, sim.Config{URL: url, Events: 2000, Concurrency: 4, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if second.Errors != 0 {
		t.Fatalf("phase 2: %d errors, the first: %s", second.Errors, second.FirstError)
	}
	v1 := first.Versions[0]
	for _, v := range second.Versions {
		if v.Version < 2 {
			t.Fatalf("phase 2 was served by version %d", v.Version)
		}
		se := math.Sqrt(v.StdErr*v.StdErr + v1.StdErr*v1.StdErr)
		t.Logf("v1 %.3f ± %.3f (%d) | v%d %.3f ± %.3f (%d) | random %.3f oracle %.3f | gap %.1f s.e.",
			v1.RewardRate, v1.StdErr, v1.Decisions, v.Version, v.RewardRate, v.StdErr, v.Decisions,
			second.RandomRewardRate, second.OracleRewardRate, (v.RewardRate-v1.RewardRate)/se)
		if v.Decisions > 200 && v.RewardRate-v1.RewardRate <= 3*se {
			t.Errorf("v%d reward rate %.3f does not beat v1's %.3f by more than 3 standard errors (%.3f)", v.Version, v.RewardRate, v1.RewardRate, 3*se)
		}
	}

	// Every decision the simulator received is in ClickHouse exactly once.
	want := append(append([]string{}, first.EventIDs...), second.EventIDs...)
	conn := testDB(t, ctx, chAddr, db)
	var got []string
	waitFor(t, ctx, "ingest to catch up", func() bool {
		rows, err := conn.Query(ctx, "SELECT event_id FROM "+db+".decisions FINAL")
		if err != nil {
			return false
		}
		defer rows.Close()
		got = got[:0]
		for rows.Next() {
			var id string
			if rows.Scan(&id) == nil {
				got = append(got, id)
			}
		}
		return len(got) >= len(want)
	})
	sort.Strings(got)
	sort.Strings(want)
	if len(got) != len(want) {
		t.Fatalf("ClickHouse holds %d decisions, the simulator received %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("decision %d: ClickHouse has %s, simulator received %s", i, got[i], want[i])
		}
	}
	var rows, distinct uint64
	if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(event_id) FROM "+db+".examples").Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != distinct {
		t.Fatalf("examples has %d rows for %d event ids", rows, distinct)
	}
	t.Logf("%d decisions from the simulator, %d in ClickHouse, each once; %d in examples", len(want), len(got), rows)
}
