package clickhouse

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flywheel-dev/flywheel/internal/testenv"
)

// TestConfig returns a config for a fresh database on the real server named
// by FLYWHEEL_TEST_CLICKHOUSE (host:port), which make test starts.
func testConfig(t *testing.T) Config {
	t.Helper()
	return Config{DSN: fmt.Sprintf("clickhouse://%s/t_%d", testenv.ClickHouse(t), time.Now().UnixNano())}
}

// mustOpen connects to cfg's database; it is dropped when the test ends.
func mustOpen(t *testing.T, ctx context.Context, cfg Config) driver.Conn {
	t.Helper()
	conn, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.Database())
		conn.Close()
	})
	return conn
}

// mustIngestThrough writes ingest's claim that all feedback logged before
// at is in db: a decision whose window ends by then is closed.
func mustIngestThrough(t *testing.T, ctx context.Context, conn driver.Conn, db string, at time.Time) {
	t.Helper()
	w := Watermark{Stream: StreamFeedback, Topic: "flywheel.feedback", Partitions: 1, Through: at}
	if err := NewInserts(conn, db).WriteWatermark(ctx, w); err != nil {
		t.Fatal(err)
	}
}

func TestMigrateTwiceAndViews(t *testing.T) {
	cfg := testConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < 2; i++ {
		if err := Migrate(ctx, cfg); err != nil {
			t.Fatalf("migrate run %d: %v", i+1, err)
		}
	}
	conn := mustOpen(t, ctx, cfg)
	db := cfg.Database()
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".schema_migrations FINAL").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != uint64(SchemaVersion()) {
		t.Fatalf("schema_migrations has %d rows, want %d", n, SchemaVersion())
	}
	// Decision e1 (closed window, two feedbacks inside it, one after it),
	// e2 (closed, none: default), e3 (open window: left out). e1 inserted twice.
	now := time.Now().UTC()
	old := now.Add(-time.Hour)
	ins := func(id string, ts time.Time, window uint32, agg string) {
		t.Helper()
		err := conn.Exec(ctx, "INSERT INTO "+db+`.decisions (event_id, ts, ts_ms, model, kind, version, variant, chosen, reward_window_s, reward_default, reward_aggregate, ingested_at)
			SELECT ?, ?, ?, 'm', 'ranker', 1, 'champion', 'a', ?, -1, ?, now()`, id, ts, uint64(ts.UnixMilli()), window, agg)
		if err != nil {
			t.Fatal(err)
		}
	}
	fb := func(ev, id string, ts time.Time, r float64) {
		t.Helper()
		if err := conn.Exec(ctx, "INSERT INTO "+db+`.feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at) SELECT ?, ?, ?, ?, ?, '', now()`, ev, id, ts, uint64(ts.UnixMilli()), r); err != nil {
			t.Fatal(err)
		}
	}
	ins("e1", old, 600, "sum")
	ins("e1", old, 600, "sum")
	ins("e2", old, 600, "sum")
	ins("e3", now, 3600, "sum")
	fb("e1", "f1", old.Add(time.Minute), 1)
	fb("e1", "f1", old.Add(time.Minute), 1) // duplicate delivery
	fb("e1", "f2", old.Add(2*time.Minute), 0.5)
	fb("e1", "f3", old.Add(20*time.Minute), 100) // outside the window
	closed := func() uint64 {
		t.Helper()
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".examples").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// The windows of e1 and e2 end at old+10m: nothing is closed before
	// ingest says the feedback up to then is in.
	if n := closed(); n != 0 {
		t.Fatalf("%d examples before any ingest watermark, want 0", n)
	}
	mustIngestThrough(t, ctx, conn, db, old.Add(9*time.Minute))
	if n := closed(); n != 0 {
		t.Fatalf("%d examples with the watermark before the windows' end, want 0", n)
	}
	mustIngestThrough(t, ctx, conn, db, now)
	rows, err := conn.Query(ctx, "SELECT event_id, reward, feedback_count FROM "+db+".examples ORDER BY event_id")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]float64{}
	for rows.Next() {
		var id string
		var r float64
		var c uint64
		if err := rows.Scan(&id, &r, &c); err != nil {
			t.Fatal(err)
		}
		got[id] = [2]float64{r, float64(c)}
	}
	want := map[string][2]float64{"e1": {1.5, 2}, "e2": {-1, 0}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("examples = %v, want %v", got, want)
	}
	var decisions uint64
	var rate float64
	if err := conn.QueryRow(ctx, "SELECT decisions, reward_rate FROM "+db+".reward_by_version WHERE model = 'm'").Scan(&decisions, &rate); err != nil {
		t.Fatal(err)
	}
	if decisions != 2 || rate != 0.25 {
		t.Fatalf("reward_by_version: %d decisions, rate %v; want 2, 0.25", decisions, rate)
	}
}

// Features newer than 18.16 are applied only where the server has them, once.
func TestOptionalStatementsByVersion(t *testing.T) {
	t.Parallel()
	types := map[string]string{"decisions.model": "String", "decisions.kind": "LowCardinality(String)", "decisions.variant": "String",
		"decisions.reward_aggregate": "String", "feedback.type": "String"}
	for _, tc := range []struct {
		version     string
		retention   time.Duration
		wantStmts   int
		wantSkipped int
	}{
		{"18.16.1", 0, 0, 1},
		{"18.16.1", 90 * 24 * time.Hour, 0, 2},
		{"19.1.6", 90 * 24 * time.Hour, 4, 1},
		{"19.6.2", 90 * 24 * time.Hour, 9, 0}, // and the TTLs of the time-ordered companions
		{"24.8.4.13", 0, 4, 0},
	} {
		v, err := parseVersion(tc.version)
		if err != nil {
			t.Fatal(err)
		}
		stmts, skipped := optionalStatements(v, "db", tc.retention, types)
		if len(stmts) != tc.wantStmts || len(skipped) != tc.wantSkipped {
			t.Errorf("%s, retention %v: %d statements %q, skipped %q; want %d and %d", tc.version, tc.retention, len(stmts), stmts, skipped, tc.wantStmts, tc.wantSkipped)
		}
		for _, s := range stmts {
			if strings.Contains(s, " kind ") {
				t.Errorf("%s: altered a column that is already LowCardinality: %s", tc.version, s)
			}
		}
	}
	stmts, _ := optionalStatements(serverVersion{19, 6}, "db", 36*time.Hour, nil)
	if len(stmts) != 5 || !strings.Contains(stmts[0], "INTERVAL 2 DAY") || !strings.Contains(stmts[4], "actions MODIFY TTL seen_at + INTERVAL 4 DAY") {
		t.Errorf("a retention of 36h rounds up to 2 days: %q", stmts)
	}
}

// Migrating with a retention on a server without TTL (the 18.16 the tests
// run) succeeds and changes nothing it cannot.
// TestSeveralProcessesMigrateAtOnce: serve, ingest and retrain start
// together on a fresh database; each migrates, and a view one of them
// drops to make again must not fail another (a CI run saw "Table
// examples doesn't exist" from a process creating a view over it).
func TestSeveralProcessesMigrateAtOnce(t *testing.T) {
	cfg := testConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	const procs = 4
	errs := make(chan error, procs)
	for i := 0; i < procs; i++ {
		go func() { errs <- Migrate(ctx, cfg) }()
	}
	for i := 0; i < procs; i++ {
		if err := <-errs; err != nil {
			t.Errorf("a process's migration: %v", err)
		}
	}
	conn := mustOpen(t, ctx, cfg)
	db := cfg.Database()
	var want []string
	for _, m := range migrations {
		for _, stmt := range m.statements {
			if v := reCreateView.FindStringSubmatch(stmt); v != nil && !slices.Contains(want, v[1]) {
				want = append(want, v[1])
			}
		}
	}
	for _, view := range want {
		ok, err := hasTable(ctx, conn, db, view)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Errorf("the view %s is missing after %d processes migrated at once", view, procs)
		}
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+"."+view).Scan(&n); err != nil {
			t.Errorf("read the view %s: %v", view, err)
		}
	}
	var versions uint64
	if err := conn.QueryRow(ctx, "SELECT uniqExact(version) FROM "+db+".schema_migrations").Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if versions != uint64(SchemaVersion()) {
		t.Fatalf("schema_migrations records %d versions, want %d", versions, SchemaVersion())
	}
}

func TestMigrateWithRetentionOnOldServer(t *testing.T) {
	cfg := testConfig(t)
	cfg.Retention = 180 * 24 * time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := Migrate(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, cfg); err != nil {
		t.Fatalf("second run: %v", err)
	}
	mustOpen(t, ctx, cfg) // drops the database when the test ends
}

// A database of schema 5, with decisions that carry their actions' JSON,
// gains the actions table and the action_keys column; its decisions read
// as before, with no keys.
func TestMigrateFromSchema5KeepsDecisions(t *testing.T) {
	cfg := testConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := migrate(ctx, cfg, 5); err != nil {
		t.Fatal(err)
	}
	conn := mustOpen(t, ctx, cfg)
	db := cfg.Database()
	old := time.Now().UTC().Add(-time.Hour)
	if err := conn.Exec(ctx, "INSERT INTO "+db+`.decisions (event_id, ts, ts_ms, model, kind, version, variant, action_ids, chosen, reward_window_s, reward_default, reward_aggregate, actions_json, ingested_at)
		SELECT 'e1', ?, ?, 'm', 'ranker', 1, 'champion', ['a', 'b'], 'a', 600, 0, 'sum', '[{"id":"a"},{"id":"b"}]', now()`, old, uint64(old.UnixMilli())); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := Migrate(ctx, cfg); err != nil {
			t.Fatalf("migrate run %d: %v", i+1, err)
		}
	}
	mustIngestThrough(t, ctx, conn, db, time.Now())
	var ids, keys []string
	var js string
	if err := conn.QueryRow(ctx, "SELECT action_ids, action_keys, actions_json FROM "+db+".examples WHERE event_id = 'e1'").Scan(&ids, &keys, &js); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ids) != "[a b]" || len(keys) != 0 || js != `[{"id":"a"},{"id":"b"}]` {
		t.Fatalf("after migrating: action_ids %q, action_keys %q, actions_json %s", ids, keys, js)
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".actions").Scan(&n); err != nil || n != 0 {
		t.Fatalf("actions table: %d rows, %v", n, err)
	}
}

func TestCheckVersion(t *testing.T) {
	for _, tc := range []struct {
		v  string
		ok bool
	}{{"18.16.1", true}, {"18.14.2", false}, {"20.3.1.1", true}, {"26.9.2.1", true}, {"26.10.1", false}, {"27.1", false}, {"1.1", false}} {
		v, err := parseVersion(tc.v)
		if err != nil {
			t.Fatal(err)
		}
		if got := checkVersion(v); got != tc.ok {
			t.Errorf("%s: in the tested range %v, want %v", tc.v, got, tc.ok)
		}
	}
}
