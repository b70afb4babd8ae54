package clickhouse

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/internal/testenv"
)

// The cluster tests run on a ClickHouse cluster of 2 shards x 2 replicas
// (`scripts/services.sh cluster-up`): FLYWHEEL_TEST_CLICKHOUSE_CLUSTER is the
// native host:port of one of its nodes, FLYWHEEL_TEST_CLICKHOUSE_CLUSTER_NAME
// its name in <remote_servers> (default flywheel).

func clusterEnv(t *testing.T) (addr, httpAddr, name string) {
	t.Helper()
	addr, name = testenv.ClickHouseCluster(t)
	// the node's HTTP port: FLYWHEEL_TEST_CLICKHOUSE_CLUSTER_HTTP, or the
	// native port + 10 as scripts/services.sh lays the cluster out
	httpAddr = os.Getenv("FLYWHEEL_TEST_CLICKHOUSE_CLUSTER_HTTP")
	if httpAddr == "" {
		host, port, err := net.SplitHostPort(addr)
		p, err2 := strconv.Atoi(port)
		if err != nil || err2 != nil {
			t.Fatalf("FLYWHEEL_TEST_CLICKHOUSE_CLUSTER=%q is not host:port", addr)
		}
		httpAddr = net.JoinHostPort(host, strconv.Itoa(p+10))
	}
	return addr, httpAddr, name
}

// TestEveryMigrationHasAClusterForm: every statement of the migrations has
// its cluster form, on every node (ON CLUSTER), replicated, and sharded by
// event_id for the sharded tables; single-server mode sends none of it.
func TestEveryMigrationHasAClusterForm(t *testing.T) {
	stmts, err := clusterMigrationStatements("flywheel", "prod")
	if err != nil {
		t.Fatal(err)
	}
	distributed := map[string]bool{}
	for _, s := range stmts {
		switch {
		case strings.HasPrefix(s.SQL, "INSERT INTO"):
			// a copy, sent once, from and to the Distributed tables
			if strings.Contains(s.SQL, localSuffix) {
				t.Errorf("%s copies between local tables: %s", s.Name, s.SQL)
			}
		case !strings.Contains(s.SQL, " ON CLUSTER prod"):
			t.Errorf("%s is not sent to the cluster: %s", s.Name, s.SQL)
		case strings.HasPrefix(s.SQL, "CREATE MATERIALIZED VIEW") && strings.Count(s.SQL, localSuffix) != 2:
			t.Errorf("%s: a materialized view reads and writes the local tables: %s", s.Name, s.SQL)
		}
		if strings.Contains(s.SQL, "{db}") {
			t.Errorf("%s: {db} left in %s", s.Name, s.SQL)
		}
		if strings.HasPrefix(s.SQL, "CREATE TABLE") {
			switch {
			case strings.Contains(s.SQL, "ENGINE = Distributed("):
				if !strings.Contains(s.SQL, ", cityHash64(event_id))") {
					t.Errorf("%s: not sharded by event_id: %s", s.Name, s.SQL)
				}
				distributed[strings.Fields(s.SQL)[5]] = true
			case !strings.Contains(s.SQL, "ENGINE = Replicated"):
				t.Errorf("%s: not replicated: %s", s.Name, s.SQL)
			case strings.Contains(s.SQL, "_local ON CLUSTER") != strings.Contains(s.SQL, "/clickhouse/tables/{shard}/flywheel/"):
				t.Errorf("%s: a local table of a sharded table has a path per shard, and only it: %s", s.Name, s.SQL)
			case !strings.Contains(s.SQL, "_local ON CLUSTER") && !strings.Contains(s.SQL, "'/clickhouse/tables/all/flywheel/"):
				t.Errorf("%s: a table on every node has one path: %s", s.Name, s.SQL)
			}
		}
	}
	for _, table := range ShardedTables() {
		if !distributed["flywheel."+table] {
			t.Errorf("no Distributed table %s (have %v)", table, distributed)
		}
	}
	for _, s := range migrationStatements("flywheel") {
		if strings.Contains(s.SQL, "ON CLUSTER") || strings.Contains(s.SQL, "Replicated") || strings.Contains(s.SQL, "Distributed") {
			t.Errorf("single-server statement %s changed: %s", s.Name, s.SQL)
		}
	}
	o, err := Config{DSN: "clickhouse://127.0.0.1:9000/flywheel"}.Options()
	if err != nil || len(o.Settings) != 0 {
		t.Errorf("single-server connections got settings %v (%v)", o.Settings, err)
	}
	o, err = Config{DSN: "clickhouse://127.0.0.1:9000/flywheel", Cluster: "prod"}.Options()
	if err != nil || o.Settings["insert_distributed_sync"] != 1 {
		t.Errorf("cluster connections got settings %v (%v)", o.Settings, err)
	}
	if _, err := (Config{DSN: "clickhouse://127.0.0.1:9000/flywheel", Cluster: "a'b"}).Options(); err == nil || !strings.Contains(err.Error(), "clickhouse.cluster") {
		t.Errorf("a cluster name that is no identifier: %v", err)
	}
}

// TestClusterStatementsParseOnCurrentReleases: chDB (ClickHouse 26.x, no
// ZooKeeper) cannot run the cluster's DDL, but it parses it.
func TestClusterStatementsParseOnCurrentReleases(t *testing.T) {
	_, python := compatEnv(t)
	stmts, err := clusterMigrationStatements("flywheel", "prod")
	if err != nil {
		t.Fatal(err)
	}
	var steps []step
	for _, s := range stmts {
		lit, _ := literal(s.SQL)
		steps = append(steps, step{name: s.Name, sql: "SELECT length(formatQuery(" + lit + ")) > 0", query: true})
	}
	for i, o := range runChDB(t, python, steps) {
		if !o.OK || strings.TrimSpace(o.TSV) != "1" {
			t.Errorf("%s does not parse on 26.x: %s\n%s", steps[i].name, o.Error, stmts[i].SQL)
		}
	}
}

// TestClusterGivesTheAnswersOfOneServer migrates a database on the cluster
// from two processes at once (two nodes of different shards), writes the
// compatibility test's fixture and decisions and feedback through ingest's
// inserts to it and to one server, and requires every statement the product
// sends, every check of the fixture and every query of the analysts' guide
// to answer the same on both, and every node to hold the same.
func TestClusterGivesTheAnswersOfOneServer(t *testing.T) {
	addr, clusterHTTP, cluster := clusterEnv(t)
	t.Parallel() // its own databases
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	db := fmt.Sprintf("cluster_%d", time.Now().UnixNano())
	t0 := time.Now()
	stage := func(what string) { t.Logf("%6.1fs %s", time.Since(t0).Seconds(), what) }

	admin, err := Open(ctx, Config{DSN: "clickhouse://" + addr + "/default", Cluster: cluster})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	nodes, err := ClusterNodes(ctx, admin, cluster)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) < 2 {
		t.Fatalf("cluster %s has nodes %v; the test needs a cluster of several nodes", cluster, nodes)
	}
	t.Cleanup(func() {
		if err := admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db+" ON CLUSTER "+cluster); err != nil {
			t.Logf("drop %s on the cluster: %v", db, err)
		}
	})
	log := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	clusterCfg := func(node string) Config {
		return Config{DSN: "clickhouse://" + node + "/" + db, Cluster: cluster, Log: log}
	}
	singleCfg := Config{DSN: "clickhouse://" + testenv.ClickHouse(t) + "/" + db}

	// Two processes migrate the cluster at once, through nodes of
	// different shards.
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, node := range []string{nodes[0], nodes[len(nodes)-1]} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = Migrate(ctx, clusterCfg(node))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("migration %d of the cluster: %v", i+1, err)
		}
	}
	took := time.Since(start)
	// A process that stopped between dropping a view and creating it again
	// leaves none: the next start puts it back.
	if err := admin.Exec(ctx, "DROP TABLE "+db+".reward_by_version ON CLUSTER "+cluster); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, clusterCfg(nodes[1])); err != nil {
		t.Fatal(err)
	}
	// Then a start finds everything applied and sends no DDL.
	start = time.Now()
	if err := Migrate(ctx, clusterCfg(nodes[1])); err != nil {
		t.Fatal(err)
	}
	again := time.Since(start)
	if err := Migrate(ctx, singleCfg); err != nil {
		t.Fatal(err)
	}
	t.Logf("the cluster migrated by two processes at once in %v; a start with nothing to migrate took %v", took.Round(time.Millisecond), again.Round(time.Millisecond))

	conns := make([]driver.Conn, len(nodes))
	for i, node := range nodes {
		if conns[i], err = Open(ctx, clusterCfg(node)); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
	}
	single := mustOpen(t, ctx, singleCfg)

	checkSchemaEverywhere(t, ctx, db, single, conns, nodes)
	stage("schema checked on every node")

	// The data: the fixture, its checks, then decisions and feedback
	// through ingest's inserts, then every other statement the product
	// sends and the guide's queries, on both.
	var rest []Statement
	for _, s := range Statements(db) {
		if !strings.HasPrefix(s.Name, "migrate.") {
			rest = append(rest, s)
		}
	}
	before := append(fixture(db), fixtureChecks(db)...)
	after := append(mustSteps(t, rest), guideQueries(t, db)...)
	after = append(after, summaryQueries(db)...)

	// Writes go over HTTP (clickhouse-go sends no INSERT … VALUES to
	// 18.16), with the settings of the product's connections; reads over
	// the product's connections.
	cl := native{conn: conns[0], http: "http://" + clusterHTTP + "/?insert_distributed_sync=1"}
	one := native{conn: single, http: "http://" + testenv.ClickHouseHTTP(t) + "/"}
	clOut := cl.run(ctx, before)
	oneOut := one.run(ctx, before)
	stage("fixture and its checks run")
	n := ingestThrough(t, ctx, cl.conn, db)
	if m := ingestThrough(t, ctx, one.conn, db); m != n {
		t.Fatalf("generated %d and %d rows", n, m)
	}
	stage("ingested")
	// Acknowledged is stored: once an insert into a Distributed table
	// returns, each shard's first replica has its rows.
	var stored uint64
	for i, conn := range conns {
		if i%2 == 0 { // 2 replicas a shard, in order
			var n uint64
			if err := conn.QueryRow(ctx, "SELECT uniqExact(event_id) FROM "+db+".decisions_local WHERE event_id LIKE 'gen-%'").Scan(&n); err != nil {
				t.Fatal(err)
			}
			stored += n
		}
	}
	if stored != 500 {
		t.Errorf("the shards' first replicas have %d of the 500 decisions just inserted", stored)
	}
	clOut = append(clOut, cl.run(ctx, after)...)
	oneOut = append(oneOut, one.run(ctx, after)...)
	stage("statements run")
	steps := append(before, after...)
	queries := 0
	for i, s := range steps {
		o, c := oneOut[i], clOut[i]
		if s.query {
			queries++
		}
		switch {
		case !o.OK && !c.OK && s.want == "":
			// refused by one server too: the compatibility test's to report
			t.Logf("%s fails on one server and on the cluster alike: %s", s.name, o.Error)
		case !o.OK || !c.OK:
			t.Errorf("%s:\n  one server: ok=%v %s\n  cluster:    ok=%v %s\n%s", s.name, o.OK, o.Error, c.OK, c.Error, s.sql)
		case s.want != "" && (!sameAnswer(o.TSV, s.want) || !sameAnswer(c.TSV, s.want)):
			t.Errorf("%s:\n  one server: %q\n  cluster:    %q\n  want:       %q", s.name, o.TSV, c.TSV, s.want)
		case s.query && !s.varies && !sameAnswer(o.TSV, c.TSV):
			t.Errorf("%s gives different answers:\n  one server: %q\n  cluster:    %q\n%s", s.name, o.TSV, c.TSV, s.sql)
		}
	}

	// Every node, once the replicas have caught up, holds and answers
	// the same: each shard's rows on both its replicas, the small tables
	// whole everywhere.
	syncReplicas(t, ctx, db, conns)
	summary := summaryQueries(db)
	want := one.run(ctx, summary)
	for i, conn := range conns {
		for j, o := range (native{conn: conn}).run(ctx, summary) {
			if !o.OK || !sameAnswer(o.TSV, want[j].TSV) {
				t.Errorf("node %s: %s: %q (%s), one server: %q", nodes[i], summary[j].name, o.TSV, o.Error, want[j].TSV)
			}
		}
	}
	checkShards(t, ctx, db, conns, nodes)
	t.Logf("%d steps (%d queries) and %d rows through ingest's inserts: the same answers on the cluster (%d nodes) and on one server",
		len(steps), queries, n, len(nodes))
}

// checkSchemaEverywhere: every node has the tables of one server (and the
// local tables of the sharded ones), the views in the same definition, and
// every migration recorded.
func checkSchemaEverywhere(t *testing.T, ctx context.Context, db string, single driver.Conn, conns []driver.Conn, nodes []string) {
	t.Helper()
	tables := func(conn driver.Conn) map[string]string {
		rows, err := conn.Query(ctx, "SELECT name, engine, create_table_query FROM system.tables WHERE database = ?", db)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]string{}
		for rows.Next() {
			var name, engine, create string
			if err := rows.Scan(&name, &engine, &create); err != nil {
				t.Fatal(err)
			}
			out[name] = engine
			if engine == "View" {
				out[name] = create
			}
		}
		return out
	}
	one := tables(single)
	for i, conn := range conns {
		got := tables(conn)
		for name, engine := range one {
			switch {
			case shardedTables[name]:
				if got[name] != "Distributed" || !strings.HasPrefix(got[name+localSuffix], "Replicated") {
					t.Errorf("node %s: %s is %q over %q", nodes[i], name, got[name], got[name+localSuffix])
				}
			case engine == "View" || strings.HasPrefix(engine, "CREATE VIEW"):
				if got[name] != engine {
					t.Errorf("node %s: view %s is\n%s\non one server\n%s", nodes[i], name, got[name], engine)
				}
			case engine == "MaterializedView":
				if got[name] != engine {
					t.Errorf("node %s: materialized view %s is %q", nodes[i], name, got[name])
				}
			case got[name] != "Replicated"+engine:
				t.Errorf("node %s: %s is %q, on one server %q", nodes[i], name, got[name], engine)
			}
		}
		if len(got) != len(one)+len(shardedTables) {
			t.Errorf("node %s has %d tables, one server %d (+%d local): %v", nodes[i], len(got), len(one), len(shardedTables), got)
		}
	}
	syncReplicas(t, ctx, db, conns)
	for i, conn := range conns {
		var versions, rows uint64
		if err := conn.QueryRow(ctx, "SELECT uniqExact(version), count() FROM "+db+".schema_migrations").Scan(&versions, &rows); err != nil {
			t.Fatal(err)
		}
		if versions != uint64(len(migrations)) {
			t.Errorf("node %s: %d migrations recorded (%d rows), want %d", nodes[i], versions, rows, len(migrations))
		}
	}
}

// syncReplicas waits until every replicated table on every node has what
// the other replicas have.
func syncReplicas(t *testing.T, ctx context.Context, db string, conns []driver.Conn) {
	t.Helper()
	for _, conn := range conns {
		rows, err := conn.Query(ctx, "SELECT name FROM system.tables WHERE database = ? AND engine LIKE 'Replicated%'", db)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				t.Fatal(err)
			}
			names = append(names, name)
		}
		rows.Close()
		for _, name := range names {
			if err := conn.Exec(ctx, "SYSTEM SYNC REPLICA "+db+"."+name); err != nil {
				t.Fatalf("SYSTEM SYNC REPLICA %s.%s: %v", db, name, err)
			}
		}
	}
}

// checkShards: each event's rows are on one shard (both its replicas), and
// every shard has some.
func checkShards(t *testing.T, ctx context.Context, db string, conns []driver.Conn, nodes []string) {
	t.Helper()
	where := map[string]map[string]bool{} // event -> shard macros holding it
	perShard := map[string]int{}
	for i, conn := range conns {
		var shard string
		if err := conn.QueryRow(ctx, "SELECT substitution FROM system.macros WHERE macro = 'shard'").Scan(&shard); err != nil {
			t.Fatal(err)
		}
		for _, table := range ShardedTables() {
			rows, err := conn.Query(ctx, "SELECT DISTINCT event_id FROM "+db+"."+table+localSuffix)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var e string
				if err := rows.Scan(&e); err != nil {
					t.Fatal(err)
				}
				if where[e] == nil {
					where[e] = map[string]bool{}
				}
				if !where[e][shard] {
					perShard[shard]++
				}
				where[e][shard] = true
			}
			rows.Close()
		}
		_ = nodes[i]
	}
	for e, shards := range where {
		if len(shards) != 1 {
			t.Errorf("event %s is on shards %v", e, shards)
		}
	}
	if len(perShard) < 2 {
		t.Errorf("events by shard: %v; every shard should have some", perShard)
	}
	t.Logf("events by shard: %v", perShard)
}

// summaryQueries sum up the database, to compare node by node.
func summaryQueries(db string) []step {
	var out []step
	for _, q := range []string{
		"SELECT count(), uniqExact(model, event_id), sum(chosen_index), round(sum(score), 6) FROM {db}.decisions FINAL",
		"SELECT count(), uniqExact(event_id, feedback_id), round(sum(reward), 6) FROM {db}.feedback FINAL",
		"SELECT model, count(), sum(feedback_count), round(sum(reward), 6) FROM {db}.examples GROUP BY model",
		"SELECT model, version, variant, hour, decisions, round(reward_sum, 6), with_feedback FROM {db}.reward_by_version",
		"SELECT count(), uniqExact(action_key) FROM {db}.actions FINAL",
		"SELECT name, version, sha256 FROM {db}.models FINAL",
		"SELECT name, alias, version, seq FROM {db}.deployments",
		"SELECT count() FROM {db}.retrain_runs",
		"SELECT model, name, value FROM {db}.model_references FINAL",
		"SELECT stream, max(through_ms) FROM {db}.ingest_watermarks GROUP BY stream",
		"SELECT source, max(through_ms) FROM {db}.spool_watermarks GROUP BY source",
		"SELECT count() FROM {db}.installation",
	} {
		out = append(out, step{name: "summary: " + q, sql: expand(q, db), query: true})
	}
	return out
}

// ingestThrough writes decisions (some delivered twice), their actions and
// feedback (some twice, some for no decision) through ingest's inserts,
// and returns how many rows it appended.
func ingestThrough(t *testing.T, ctx context.Context, conn driver.Conn, db string) int {
	t.Helper()
	x := NewInserts(conn, db)
	ingested := fixtureBase.Add(24 * time.Hour)
	n := 0
	acts, err := x.PrepareActions(ctx, ingested)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("g%d", i)
		if err := acts.Append("k-"+id, id, fmt.Sprintf(`{"id":%q,"features":{"item":{"price":%d}}}`, id, i)); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if err := acts.Send(); err != nil {
		t.Fatal(err)
	}
	var fbs []*flywheel.Feedback
	for batch := 0; batch < 3; batch++ {
		b, err := x.PrepareDecisions(ctx, ingested)
		if err != nil {
			t.Fatal(err)
		}
		for i := batch * 150; i < batch*150+200; i++ { // 50 of each batch again in the next
			model, kind, window, agg := "homepage", "ranker", int64(60), []string{"sum", "first", "last", "max"}[i%4]
			ids, keys, probs, chosen := []string{"g1", "g2", "g3"}, []string{"k-g1", "k-g2", "k-g3"}, []float64{0.5, 0.3, 0.2}, i%3
			if i%5 == 0 {
				model, kind, window, agg = "ctr", "classifier", 600, "max"
				ids, keys, probs, chosen = []string{}, []string{}, []float64{}, 0
			}
			ts := fixtureBase.Add(time.Duration(i) * 17 * time.Second)
			d := &flywheel.DecisionRecord{Schema: 1, EventID: fmt.Sprintf("gen-%04d", i), Time: ts, Model: model, Kind: kind,
				Version: 1 + i%2, Variant: []string{"champion", "canary"}[i%7/6], Probabilities: probs, ChosenIndex: chosen,
				Explored: i%4 == 0, Score: float64(i%10) / 10, Reward: flywheel.RewardRule{WindowSeconds: window, Default: float64(i%3) / 4, Aggregate: agg}}
			if kind == "ranker" {
				d.Chosen = ids[chosen]
			}
			seg := []string{"a", "b", "c"}[i%3]
			r := &DecisionRow{Decision: d, ContextNames: []string{"user^segment", "user^age"}, ContextValues: []string{seg, ""},
				ContextNumbers: []float64{1, float64(20 + i%40)}, ActionIDs: ids, ActionKeys: keys, ChosenProbability: 0.5,
				ChosenNames: []string{"item^price"}, ChosenValues: []string{""}, ChosenNumbers: []float64{float64(chosen)},
				ContextJSON: `{"user":{"segment":"` + seg + `"}}`}
			if err := b.Append(r); err != nil {
				t.Fatal(err)
			}
			n++
			if i >= batch*150+150 || batch == 2 {
				continue
			}
			for k := 0; k < i%4; k++ { // 0-3 feedback events, some late
				ft := ts.Add(time.Duration(10+k*25+i%30) * time.Second)
				fbs = append(fbs, &flywheel.Feedback{Schema: 1, FeedbackID: fmt.Sprintf("f%d", k), EventID: d.EventID, Time: ft,
					Reward: math.Round(float64((i*7+k*3)%10)) / 10, Type: "click"})
			}
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	fbs = append(fbs, &flywheel.Feedback{Schema: 1, FeedbackID: "orphan", EventID: "gen-none", Time: fixtureBase, Reward: 1, Type: "click"})
	for _, part := range [][]*flywheel.Feedback{fbs, fbs[:len(fbs)/3]} { // a third delivered twice
		b, err := x.PrepareFeedback(ctx, ingested)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Append(part); err != nil {
			t.Fatal(err)
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
		n += len(part)
	}
	return n
}

// native runs steps on a server: queries over conn (the product's
// connection, with its settings), the rest over HTTP (http: host:port/?settings).
type native struct {
	conn driver.Conn
	http string
}

// run runs the steps in order, answers as tab-separated text.
func (n native) run(ctx context.Context, steps []step) []outcome {
	out := make([]outcome, len(steps))
	for i, s := range steps {
		if !s.query {
			if err := httpExec(n.http, s.sql); err != nil {
				out[i] = outcome{Error: err.Error()}
			} else {
				out[i] = outcome{OK: true}
			}
			continue
		}
		tsv, err := queryTSV(ctx, n.conn, s.sql)
		out[i] = outcome{OK: err == nil, TSV: tsv}
		if err != nil {
			out[i].Error = err.Error()
		}
	}
	return out
}

func queryTSV(ctx context.Context, conn driver.Conn, sql string) (string, error) {
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	cts := rows.ColumnTypes()
	var lines []string
	for rows.Next() {
		vals := make([]any, len(cts))
		for i, ct := range cts {
			vals[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(vals...); err != nil {
			return "", err
		}
		cells := make([]string, len(vals))
		for i, v := range vals {
			cells[i] = tsvCell(reflect.ValueOf(v).Elem())
		}
		lines = append(lines, strings.Join(cells, "\t"))
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	slices.Sort(lines)
	if len(lines) == 0 {
		return "", nil
	}
	return strings.Join(lines, "\n") + "\n", nil
}

// tsvCell writes a value as ClickHouse's TabSeparated output does, near
// enough for sameAnswer.
func tsvCell(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return `\N`
		}
		v = v.Elem()
	}
	switch x := v.Interface().(type) {
	case time.Time:
		return x.UTC().Format("2006-01-02 15:04:05")
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32)
	case string:
		return strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`).Replace(x)
	}
	if v.Kind() == reflect.Slice {
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = tsvCell(v.Index(i))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	return fmt.Sprint(v.Interface())
}

// httpExec posts sql to the HTTP interface at url.
func httpExec(url, sql string) error {
	client := &http.Client{Timeout: time.Minute}
	resp, err := client.Post(url, "text/plain", strings.NewReader(sql))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

// testLog writes what Migrate logs (its warnings: a retry, the servers'
// profile) to the test's log.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
