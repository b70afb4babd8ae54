package clickhouse

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/flywheel-dev/flywheel/internal/testenv"
)

// The compatibility test runs every statement the product sends (Statements),
// and every query of the analysts' guide, on the ClickHouse 18.16 server and
// on ClickHouse 26.x in process (chDB), on one fixture data set, and requires
// the same answers. The fixture has decisions with several feedback events,
// late and orphan feedback, duplicate deliveries, an open reward window and
// both model kinds.

// step is one statement with its arguments bound into its text.
type step struct {
	name     string
	sql      string
	query    bool
	varies   bool
	since    serverVersion     // zero: every server
	settings map[string]string // sent before the statement (chDB only)
	want     string            // the expected answer, when the test knows it
}

// outcome is what a server made of a step.
type outcome struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
	TSV   string `json:"tsv"`
}

// fixtureBase is when the fixture's decisions were made, a week ago at
// 10:00 UTC: every reward window of the fixture but one has long closed,
// as an ingest would have written them recently.
var fixtureBase = time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -7).Add(10 * time.Hour)

func compatEnv(t *testing.T) (httpAddr, python string) {
	t.Helper()
	return testenv.ClickHouseHTTP(t), testenv.ChDBPython(t)
}

func TestEveryStatementOnBothServers(t *testing.T) {
	httpAddr, python := compatEnv(t)
	db := fmt.Sprintf("compat_%d", time.Now().UnixNano())
	all := Statements(db)
	if len(all) < 40 {
		t.Fatalf("Statements lists %d statements; the product sends more", len(all))
	}
	var migrations, rest []Statement
	names := map[string]bool{}
	for _, s := range all {
		if names[s.Name] {
			t.Errorf("statement name %q is listed twice", s.Name)
		}
		names[s.Name] = true
		if strings.Contains(s.SQL, "{db}") {
			t.Errorf("%s: {db} left in %s", s.Name, s.SQL)
		}
		if strings.HasPrefix(s.Name, "migrate.") {
			migrations = append(migrations, s)
		} else {
			rest = append(rest, s)
		}
	}
	steps := mustSteps(t, migrations)
	steps = append(steps, fixture(db)...)
	steps = append(steps, fixtureChecks(db)...)
	steps = append(steps, mustSteps(t, rest)...)
	steps = append(steps, guideQueries(t, db)...)

	old := runServer(t, httpAddr, db, steps)
	cur := runChDB(t, python, steps)
	compare(t, steps, old, cur, serverVersion{18, 16}, serverVersion{26, 9})
	t.Logf("%d statements listed (%d of them queries), %d fixture and check steps, %d guide queries; all equal on 18.16 and 26.9",
		len(all), countQueries(all), len(fixture(db))+len(fixtureChecks(db)), len(guideQueries(t, db)))
}

// TestUpgradeFromSchema6 makes a database as the previous schema left it
// (the views of migrations 3-6 are stored as text) and migrates it: on the
// 18.16 server through Migrate, and on 26.x with the statements of migration 7 and later.
func TestUpgradeFromSchema6(t *testing.T) {
	httpAddr, python := compatEnv(t)
	oldViews, err := os.ReadFile("testdata/schema6_views.sql")
	if err != nil {
		t.Fatal(err)
	}
	views := func(db string) []step {
		var out []step
		for i, v := range strings.Split(string(oldViews), ";\n") {
			v = strings.TrimSpace(regexp.MustCompile(`(?m)^--.*$`).ReplaceAllString(v, ""))
			if v != "" {
				// 18.16 stored these; current servers refuse to create them
				// unless asked not to check the aliases.
				out = append(out, step{name: fmt.Sprintf("old view %d", i+1), sql: expand(v, db),
					settings: map[string]string{"joined_subquery_requires_alias": "0"}})
			}
		}
		return out
	}
	drop := func(db string) []step {
		return []step{{name: "drop new rbv", sql: "DROP TABLE " + db + ".reward_by_version"}, {name: "drop new examples", sql: "DROP TABLE " + db + ".examples"}}
	}

	t.Run("18.16", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cfg := testConfig(t)
		if err := migrate(ctx, cfg, 6); err != nil {
			t.Fatal(err)
		}
		conn := mustOpen(t, ctx, cfg)
		db := cfg.Database()
		steps := append(append(drop(db), views(db)...), fixture(db)...)
		for i, o := range runServer(t, httpAddr, db, steps) {
			if !o.OK {
				t.Fatalf("%s: %s", steps[i].name, o.Error)
			}
		}
		if err := Migrate(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".schema_migrations WHERE version = 7").Scan(&n); err != nil || n != 1 {
			t.Fatalf("migration 7 recorded %d times (%v)", n, err)
		}
		var text string
		if err := conn.QueryRow(ctx, "SELECT create_table_query FROM system.tables WHERE database = ? AND name = 'examples'", db).Scan(&text); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(text, "ANY INNER JOIN") || !strings.Contains(text, "AS dl") {
			t.Fatalf("the examples view was not recreated:\n%s", text)
		}
		checks := fixtureChecks(db)
		for i, o := range runServer(t, httpAddr, db, checks) {
			if !o.OK || !sameAnswer(o.TSV, checks[i].want) {
				t.Errorf("%s after the upgrade: got %q (%s), want %q", checks[i].name, o.TSV, o.Error, checks[i].want)
			}
		}
	})

	t.Run("26.x", func(t *testing.T) {
		db := fmt.Sprintf("upgrade_%d", time.Now().UnixNano())
		var steps []step
		for _, s := range mustSteps(t, migrationStatements(db)) {
			if m := regexp.MustCompile(`^migrate\.(\d+)\.`).FindStringSubmatch(s.name); m != nil {
				if v, _ := strconv.Atoi(m[1]); v >= 7 {
					continue
				}
			}
			if !strings.HasPrefix(s.name, "migrate.optional") {
				steps = append(steps, s)
			}
		}
		steps = append(append(append(steps, drop(db)...), views(db)...), fixture(db)...)
		// The old view on a current server: wrong rewards (one feedback
		// event of e1 kept of two).
		before := len(steps)
		steps = append(steps, step{name: "old view", sql: "SELECT event_id, feedback_count, reward FROM " + db + ".examples WHERE event_id = 'e1'", query: true},
			step{name: "old view, restriction lifted", sql: "SELECT event_id, feedback_count, reward FROM " + db + ".examples WHERE event_id = 'e1'", query: true,
				settings: map[string]string{"joined_subquery_requires_alias": "0"}})
		for _, s := range mustSteps(t, migrationStatements(db)) {
			if m := regexp.MustCompile(`^migrate\.(\d+)\.`).FindStringSubmatch(s.name); m != nil {
				if v, _ := strconv.Atoi(m[1]); v >= 7 {
					steps = append(steps, s)
				}
			}
		}
		checks := fixtureChecks(db)
		steps = append(steps, checks...)
		out := runChDB(t, python, steps)
		for i, o := range out[:len(out)-len(checks)] {
			if !o.OK && i != before && i != before+1 {
				t.Fatalf("%s: %s\n%s", steps[i].name, o.Error, steps[i].sql)
			}
		}
		t.Logf("the old view on 26.x before the upgrade: %q %s; with joined_subquery_requires_alias = 0: %q %s (right: e1 2 1.5)",
			out[before].TSV, out[before].Error, out[before+1].TSV, out[before+1].Error)
		for i, o := range out[len(out)-len(checks):] {
			if !o.OK || !sameAnswer(o.TSV, checks[i].want) {
				t.Errorf("%s after migrations 7+ on 26.x: got %q (%s), want %q", checks[i].name, o.TSV, o.Error, checks[i].want)
			}
		}
	})
}

func countQueries(ss []Statement) int {
	n := 0
	for _, s := range ss {
		if s.Query {
			n++
		}
	}
	return n
}

// compare fails the test for every step whose outcomes differ.
func compare(t *testing.T, steps []step, old, cur []outcome, oldV, curV serverVersion) {
	t.Helper()
	for i, s := range steps {
		o, c := old[i], cur[i]
		if !oldV.atLeast(s.since.major, s.since.minor) {
			if !c.OK {
				t.Errorf("%s failed on %d.%d: %s\n%s", s.name, curV.major, curV.minor, c.Error, s.sql)
			}
			continue
		}
		switch {
		case !o.OK || !c.OK:
			t.Errorf("%s:\n  18.16: ok=%v %s\n  26.x:  ok=%v %s\n%s", s.name, o.OK, o.Error, c.OK, c.Error, s.sql)
		case s.want != "" && (!sameAnswer(o.TSV, s.want) || !sameAnswer(c.TSV, s.want)):
			t.Errorf("%s:\n  18.16: %q\n  26.x:  %q\n  want:  %q", s.name, o.TSV, c.TSV, s.want)
		case s.query && !s.varies && !sameAnswer(o.TSV, c.TSV):
			t.Errorf("%s gives different answers:\n  18.16: %q\n  26.x:  %q\n%s", s.name, o.TSV, c.TSV, s.sql)
		}
	}
}

// sameAnswer compares two tab-separated answers as sets of rows, numbers
// within a relative 1e-9 (summation order differs between releases).
func sameAnswer(a, b string) bool {
	la, lb := rowsOf(a), rowsOf(b)
	if len(la) != len(lb) {
		return false
	}
	for i := range la {
		ca, cb := strings.Split(la[i], "\t"), strings.Split(lb[i], "\t")
		if len(ca) != len(cb) {
			return false
		}
		for j := range ca {
			if ca[j] == cb[j] {
				continue
			}
			x, err1 := strconv.ParseFloat(ca[j], 64)
			y, err2 := strconv.ParseFloat(cb[j], 64)
			if err1 != nil || err2 != nil || math.Abs(x-y) > 1e-9*math.Max(1, math.Max(math.Abs(x), math.Abs(y))) {
				return false
			}
		}
	}
	return true
}

func rowsOf(tsv string) []string {
	tsv = strings.TrimRight(tsv, "\n")
	if tsv == "" {
		return nil
	}
	rows := strings.Split(tsv, "\n")
	slices.Sort(rows)
	return rows
}

func mustSteps(t *testing.T, ss []Statement) []step {
	t.Helper()
	out := make([]step, 0, len(ss))
	for _, s := range ss {
		sql, err := bindStatement(s)
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		st := step{name: s.Name, sql: sql, query: s.Query, varies: s.Varies}
		if s.Since != "" {
			if st.since, err = parseVersion(s.Since); err != nil {
				t.Fatalf("%s: %v", s.Name, err)
			}
		}
		out = append(out, st)
	}
	return out
}

// bindStatement puts s's arguments (or rows, for a batch insert) into its
// text as SQL literals.
func bindStatement(s Statement) (string, error) {
	if s.Rows != nil {
		if len(s.Args) > 0 || strings.Contains(s.SQL, "?") {
			return "", fmt.Errorf("a batch insert has rows, not arguments")
		}
		var b strings.Builder
		b.WriteString(s.SQL)
		b.WriteString(" VALUES ")
		for i, row := range s.Rows {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteByte('(')
			for j, v := range row {
				if j > 0 {
					b.WriteString(", ")
				}
				lit, err := literal(v)
				if err != nil {
					return "", fmt.Errorf("row %d column %d: %w", i, j, err)
				}
				b.WriteString(lit)
			}
			b.WriteByte(')')
		}
		return b.String(), nil
	}
	var b strings.Builder
	n, quote := 0, byte(0)
	for i := 0; i < len(s.SQL); i++ {
		c := s.SQL[i]
		switch {
		case quote != 0:
			if c == '\\' && i+1 < len(s.SQL) {
				b.WriteByte(c)
				i++
				c = s.SQL[i]
			} else if c == quote {
				quote = 0
			}
		case c == '\'' || c == '`' || c == '"':
			quote = c
		case c == '?':
			if n >= len(s.Args) {
				return "", fmt.Errorf("%d arguments for more placeholders", len(s.Args))
			}
			lit, err := literal(s.Args[n])
			if err != nil {
				return "", fmt.Errorf("argument %d: %w", n+1, err)
			}
			b.WriteString(lit)
			n++
			continue
		}
		b.WriteByte(c)
	}
	if n != len(s.Args) {
		return "", fmt.Errorf("%d arguments for %d placeholders", len(s.Args), n)
	}
	return b.String(), nil
}

// literal renders v as a SQL literal, as clickhouse-go binds it.
func literal(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(x) + "'", nil
	case []byte:
		return literal(string(x))
	case bool:
		if x {
			return "1", nil
		}
		return "0", nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "", fmt.Errorf("no literal for %v", x)
		}
		return strconv.FormatFloat(x, 'g', -1, 64), nil
	case float32:
		return literal(float64(x))
	case time.Time:
		return "toDateTime('" + x.UTC().Format("2006-01-02 15:04:05") + "', 'UTC')", nil
	case ch.GroupSet:
		parts := make([]string, len(x.Value))
		for i, e := range x.Value {
			lit, err := literal(e)
			if err != nil {
				return "", err
			}
			parts[i] = lit
		}
		return "(" + strings.Join(parts, ", ") + ")", nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(rv.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(rv.Uint(), 10), nil
	case reflect.String:
		return literal(rv.String())
	case reflect.Float32, reflect.Float64:
		return literal(rv.Float())
	case reflect.Slice, reflect.Array:
		parts := make([]string, rv.Len())
		for i := range parts {
			lit, err := literal(rv.Index(i).Interface())
			if err != nil {
				return "", err
			}
			parts[i] = lit
		}
		return "[" + strings.Join(parts, ", ") + "]", nil
	case reflect.Pointer:
		if rv.IsNil() {
			return "", fmt.Errorf("nil %T", v)
		}
		return literal(rv.Elem().Interface())
	}
	return "", fmt.Errorf("no literal for %T", v)
}

// runServer runs the steps in order on the ClickHouse server's HTTP
// interface; the database is dropped when the test ends.
func runServer(t *testing.T, addr, db string, steps []step) []outcome {
	t.Helper()
	t.Cleanup(func() { httpQuery(addr, "DROP DATABASE IF EXISTS "+db) })
	out := make([]outcome, len(steps))
	for i, s := range steps {
		body, err := httpQuery(addr, s.sql)
		out[i] = outcome{OK: err == nil, TSV: body}
		if err != nil {
			out[i].Error = err.Error()
		}
	}
	return out
}

func httpQuery(addr, sql string) (string, error) {
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Post("http://"+addr+"/", "text/plain", strings.NewReader(sql))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

// runChDB runs the steps in order in one chDB session (scripts/chdb_run.py).
func runChDB(t *testing.T, python string, steps []step) []outcome {
	t.Helper()
	type req struct {
		Name     string            `json:"name"`
		SQL      string            `json:"sql"`
		Query    bool              `json:"query"`
		Settings map[string]string `json:"settings,omitempty"`
	}
	in := struct {
		Path       string `json:"path"`
		Statements []req  `json:"statements"`
	}{Path: t.TempDir()}
	for _, s := range steps {
		in.Statements = append(in.Statements, req{s.name, s.sql, s.query, s.settings})
	}
	body, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "../scripts/chdb_run.py")
	cmd.Stdin = bytes.NewReader(body)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("chdb_run.py: %v\n%s", err, stderr.String())
	}
	var out []outcome
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var o outcome
		if err := json.Unmarshal(sc.Bytes(), &o); err != nil {
			t.Fatalf("chdb_run.py output: %v", err)
		}
		out = append(out, o)
	}
	if len(out) != len(steps) {
		t.Fatalf("chdb_run.py answered %d of %d statements\n%s", len(out), len(steps), stderr.String())
	}
	return out
}

// guideQueries are the numbered queries of docs/analytics.md.
func guideQueries(t *testing.T, db string) []step {
	t.Helper()
	doc, err := os.ReadFile("../docs/analytics.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []step
	for _, blk := range regexp.MustCompile("(?s)```sql\n(-- Q(\\d+)\\..*?)```").FindAllStringSubmatch(string(doc), -1) {
		out = append(out, step{name: "analytics Q" + blk[2], sql: strings.ReplaceAll(blk[1], "flywheel.", db+"."), query: true})
	}
	if len(out) < 10 {
		t.Fatalf("the guide has %d numbered queries", len(out))
	}
	return out
}

// fixture is the data set, written as SQL so that both servers get the
// same rows.
func fixture(db string) []step {
	at := func(d time.Duration) time.Time { return fixtureBase.Add(d) }
	ms := func(t time.Time) uint64 { return uint64(t.UnixMilli()) }
	ingested := fixtureBase.Add(time.Hour * 24)
	type dec struct {
		id, model, kind string
		version         uint32
		variant         string
		ts              time.Time
		window          uint32
		def             float64
		agg             string
	}
	decs := []dec{
		{"e1", "homepage", "ranker", 1, "champion", at(0), 60, 0, "sum"},
		{"e1", "homepage", "ranker", 1, "champion", at(0), 60, 0, "sum"}, // delivered twice
		{"e2", "homepage", "ranker", 1, "champion", at(time.Second), 60, 0, "first"},
		{"e6", "homepage", "ranker", 1, "champion", at(2 * time.Second), 60, 0, "sum"},
		{"e3", "homepage", "ranker", 2, "champion", at(time.Hour), 60, 0, "last"},
		{"e4", "homepage", "ranker", 2, "champion", at(time.Hour + time.Second), 60, 0, "max"},
		{"e5", "homepage", "ranker", 2, "canary", at(time.Hour + 2*time.Second), 60, 0.25, "sum"},
		{"e7", "homepage", "ranker", 2, "champion", at(time.Hour + 3*time.Second), 60, 0, "sum"},
		{"e8", "homepage", "ranker", 2, "champion", time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), 60, 0, "sum"}, // window open
		{"e9", "homepage", "ranker", 2, "champion", at(3 * time.Hour), 60, 0, "sum"},                           // window passed, feedback watermark behind
		{"c1", "ctr", "classifier", 1, "champion", at(0), 600, 0, "max"},
		{"c2", "ctr", "classifier", 1, "champion", at(time.Second), 600, 0, "max"},
		{"c3", "ctr", "classifier", 1, "champion", at(2 * time.Second), 600, 0, "max"},
		// two pages of a multi-slot ranker (serve/slots.go): EVENT_ID#SLOT
		{"p1#hero", "page", "ranker", 1, "champion", at(0), 60, 0, "sum"},
		{"p1#side", "page", "ranker", 1, "champion", at(0), 60, 0, "sum"},
		{"p2#hero", "page", "ranker", 1, "champion", at(time.Second), 60, 0, "sum"},
	}
	action := func(id string, price float64) string {
		return fmt.Sprintf(`{"id":"%s","features":{"item":{"price":%g}}}`, id, price)
	}
	var rows [][]any
	for i, d := range decs {
		seg := []string{"a", "b"}[i%2]
		ids, keys, probs := []string{"x", "y"}, []string{"k-x", "k-y"}, []float64{0.75, 0.25}
		chosen, idx, actions := "x", uint16(0), ""
		score := 0.0
		if d.kind == "classifier" {
			ids, keys, probs, chosen, actions = []string{}, []string{}, []float64{}, "", ""
			score = 0.1 * float64(i)
		}
		if d.id == "e4" { // a new version of y: this decision carries its actions
			keys, actions = []string{"k-x", "k-y2"}, "["+action("x", 9.5)+","+action("y", 4.5)+"]"
		}
		rows = append(rows, []any{d.id, d.ts, ms(d.ts), d.model, d.kind, d.version, d.variant,
			[]string{"user^segment", "user^age"}, []string{seg, ""}, []float64{1, 30 + float64(i)},
			ids, keys, probs, chosen, idx, 0.75, []string{"item^price"}, []string{""}, []float64{9.5},
			uint8(i % 2), score, d.window, d.def, d.agg,
			`{"user":{"segment":"` + seg + `"}}`, actions, ingested})
	}
	type fb struct {
		event, id string
		after     time.Duration
		reward    float64
	}
	dts := map[string]time.Time{}
	for _, d := range decs {
		dts[d.id] = d.ts
	}
	fbs := []fb{
		{"e1", "f1a", 5 * time.Second, 1}, {"e1", "f1b", 20 * time.Second, 0.5},
		{"e2", "f2a", 10 * time.Second, 0.8}, {"e2", "f2b", 5 * time.Second, 0.2},
		{"e3", "f3a", 5 * time.Second, 0.2}, {"e3", "f3b", 30 * time.Second, 0.9},
		{"e4", "f4a", time.Second, 0.3}, {"e4", "f4b", 2 * time.Second, 0.7}, {"e4", "f4c", 3 * time.Second, 0.1},
		{"e6", "f6", 2 * time.Minute, 1},                                       // late
		{"e7", "f7a", 10 * time.Second, 1}, {"e7", "f7a", 10 * time.Second, 1}, // delivered twice
		{"e7", "f7b", 61 * time.Second, 1}, // late
		{"e8", "f8", time.Second, 1},       // window still open
		{"e9", "f9", 5 * time.Second, 1},   // in time, but e9 is not closed until ingest has caught up
		{"c1", "fc1", 100 * time.Second, 1},
		{"c2", "fc2", 700 * time.Second, 1}, // late
		{"p1#hero", "fp1", 5 * time.Second, 1}, {"p2#hero", "fp2", 3 * time.Second, 0.5},
		{"ghost", "fg", 0, 1}, // no decision
	}
	var frows [][]any
	for _, f := range fbs {
		ts := dts[f.event]
		if ts.IsZero() {
			ts = fixtureBase
		}
		ts = ts.Add(f.after)
		frows = append(frows, []any{f.event, f.id, ts, ms(ts), f.reward, "click", ingested})
	}
	st := func(name, sql string, rows [][]any) step {
		s, err := bindStatement(Statement{SQL: expand(sql, db), Rows: rows})
		if err != nil {
			panic(err)
		}
		return step{name: "fixture " + name, sql: s}
	}
	return []step{
		st("decisions", `INSERT INTO {db}.decisions (event_id, ts, ts_ms, model, kind, version, variant,
			context_names, context_values, context_numbers, action_ids, action_keys, probabilities,
			chosen, chosen_index, chosen_probability, chosen_names, chosen_values, chosen_numbers,
			explored, score, reward_window_s, reward_default, reward_aggregate,
			context_json, actions_json, ingested_at)`, rows),
		st("feedback", `INSERT INTO {db}.feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at)`, frows),
		st("actions", `INSERT INTO {db}.actions (action_key, action_id, action_json, seen_at)`, [][]any{
			{"k-x", "x", action("x", 9.5), ingested}, {"k-y", "y", action("y", 5), ingested}, {"k-x", "x", action("x", 9.5), ingested}}),
		st("models", `INSERT INTO {db}.models (name, version, kind, created_at, artifact, sha256, manifest, metrics)`, [][]any{
			{"homepage", uint32(1), "ranker", at(0), "a1", "s1", "{}", "{}"},
			{"homepage", uint32(2), "ranker", at(time.Hour), "a2", "s2", `{"rows":8}`, `{"snips":0.5}`},
			{"ctr", uint32(1), "classifier", at(0), "c1", "s3", "{}", "{}"}}),
		st("deployments", `INSERT INTO {db}.deployments (name, alias, version, previous_version, ts, seq, actor, reason)`, [][]any{
			{"homepage", "champion", uint32(1), uint32(0), at(0), uint64(1), "bootstrap", "first"},
			{"homepage", "champion", uint32(2), uint32(1), at(time.Hour), uint64(2), "retrain", "better"},
			{"homepage", "canary", uint32(2), uint32(0), at(time.Hour), uint64(3), "retrain", "canary"},
			{"ctr", "champion", uint32(1), uint32(0), at(0), uint64(1), "bootstrap", "first"}}),
		st("retrain_runs", `INSERT INTO {db}.retrain_runs (model, started_at, started_ms, took_ms, outcome, reason, version, champion, train_rows, holdout_rows, comparison)`, [][]any{
			{"homepage", at(time.Hour), ms(at(time.Hour)), uint64(1200), "promoted", "better", uint32(2), uint32(1), uint64(6), uint64(2), `{"snips":0.5}`}}),
		st("model_references", `INSERT INTO {db}.model_references (model, name, value, source, ts, ts_ms)`, [][]any{
			{"homepage", "random", 0.2, "sim", at(0), ms(at(0))}, {"homepage", "random", 0.3, "sim", at(time.Hour), ms(at(time.Hour))}}),
	}
}

// bounded is a check of the bounded examples query of model's decisions in
// [fromMs, toMs].
// Closing is judged as the product's reads judge it, by closedThrough, here
// read in the query itself (a step binds values, not what the fixture's
// watermarks say).
func bounded(name, db, model string, fromMs, toMs uint64, want string) step {
	q := strings.ReplaceAll(expand("SELECT event_id, feedback_count, reward FROM {examples}", db), closedByArg, expand(closedCondition, db))
	args := examplesArgs(model, fromMs, toMs, 0)
	args = append(args[1:7:7], args[8:]...) // without the two closing times
	return boundStep(name, q, args, want)
}

// recent is bounded's check of the recent examples query ({recent}), over
// the time-ordered companions: it must answer as the view and {examples}.
func recent(name, db, model string, fromMs, toMs uint64, want string) step {
	q := strings.ReplaceAll(expand("SELECT event_id, feedback_count, reward FROM {recent}", db), closedByArg, expand(closedCondition, db))
	args := recentArgs(model, fromMs, toMs, 0)
	args = append(args[1:6:6], args[7:]...) // without the two closing times
	return boundStep(name+" (recent)", q, args, want)
}

func boundStep(name, q string, args []any, want string) step {
	sql, err := bindStatement(Statement{SQL: q, Args: args})
	if err != nil {
		panic(err)
	}
	return step{name: name, sql: sql, query: true, want: want}
}

// fixtureChecks are answers the fixture must give, on every server.
func fixtureChecks(db string) []step {
	h0 := fixtureBase.Format("2006-01-02 15:04:05")
	h1 := fixtureBase.Add(time.Hour).Format("2006-01-02 15:04:05")
	watermarkOf := func(stream, name string, through time.Time) step {
		s, err := bindStatement(Statement{SQL: expand(insertWatermarkSQL, db),
			Args: []any{stream, "flywheel." + stream, uint32(3), uint64(through.UnixMilli()), through.Add(time.Second)}})
		if err != nil {
			panic(err)
		}
		return step{name: name, sql: s}
	}
	watermark := func(name string, through time.Time) step { return watermarkOf(StreamFeedback, name, through) }
	forever := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	spool := func(name string, claims [][]any) step {
		var rows [][]any
		for _, c := range claims {
			ms := func(i int) uint64 { return uint64(c[i].(time.Time).UnixMilli()) }
			rows = append(rows, []any{c[0], ms(1), ms(2), ms(3), c[2]})
		}
		s, err := bindStatement(Statement{SQL: expand(insertSpoolWatermarksSQL, db), Rows: rows})
		if err != nil {
			panic(err)
		}
		return step{name: name, sql: s}
	}
	return append([]step{
		// The fixture's ingest watermarks (here, not in fixture: the table
		// is newer than the schema the upgrade test starts from): all
		// feedback ingested through 3h30s after the base, the claims of
		// two processes, the larger counts; e9's window ends at 3h1m.
		watermark("fixture watermark 1", fixtureBase.Add(2*time.Hour)),
		watermark("fixture watermark 2", fixtureBase.Add(3*time.Hour+30*time.Second)),
		{name: "check examples", query: true,
			sql: "SELECT event_id, feedback_count, reward FROM " + db + ".examples",
			// e1: two feedback events summed; e2 the first by time, e3 the
			// last, e4 the max of three; e5 the default; e6's and c2's only
			// feedback late; e7 one in time (delivered twice) and one late;
			// e8's window still open; the orphan nowhere.
			want: "c1\t1\t1\nc2\t0\t0\nc3\t0\t0\ne1\t2\t1.5\ne2\t2\t0.2\ne3\t2\t0.9\ne4\t3\t0.7\ne5\t0\t0.25\ne6\t0\t0\ne7\t1\t1\n" +
				"p1#hero\t1\t1\np1#side\t0\t0\np2#hero\t1\t0.5"},
		// The product's bounded query of examples ({examples}) answers as
		// the view does, over the whole range and over a part of it.
		bounded("check bounded examples of homepage", db, "homepage", 0, math.MaxUint64,
			"e1\t2\t1.5\ne2\t2\t0.2\ne3\t2\t0.9\ne4\t3\t0.7\ne5\t0\t0.25\ne6\t0\t0\ne7\t1\t1"),
		bounded("check bounded examples of homepage's second hour", db, "homepage", uint64(fixtureBase.Add(time.Hour).UnixMilli()),
			uint64(fixtureBase.Add(time.Hour+3*time.Second).UnixMilli()), "e3\t2\t0.9\ne4\t3\t0.7\ne5\t0\t0.25\ne7\t1\t1"),
		bounded("check bounded examples of ctr", db, "ctr", 0, math.MaxUint64, "c1\t1\t1\nc2\t0\t0\nc3\t0\t0"),
		recent("check bounded examples of homepage", db, "homepage", 0, math.MaxUint64,
			"e1\t2\t1.5\ne2\t2\t0.2\ne3\t2\t0.9\ne4\t3\t0.7\ne5\t0\t0.25\ne6\t0\t0\ne7\t1\t1"),
		recent("check bounded examples of homepage's second hour", db, "homepage", uint64(fixtureBase.Add(time.Hour).UnixMilli()),
			uint64(fixtureBase.Add(time.Hour+3*time.Second).UnixMilli()), "e3\t2\t0.9\ne4\t3\t0.7\ne5\t0\t0.25\ne7\t1\t1"),
		recent("check bounded examples of ctr", db, "ctr", 0, math.MaxUint64, "c1\t1\t1\nc2\t0\t0\nc3\t0\t0"),
		{name: "check reward_by_version", query: true,
			sql: "SELECT model, version, variant, hour, decisions, round(reward_sum, 6), with_feedback, round(join_rate, 6) FROM " + db + ".reward_by_version",
			want: strings.NewReplacer("H0", h0, "H1", h1).Replace("ctr\t1\tchampion\tH0\t3\t1\t1\t0.333333\n" +
				"homepage\t1\tchampion\tH0\t3\t1.7\t2\t0.666667\n" +
				"homepage\t2\tcanary\tH1\t1\t0.25\t0\t0\n" +
				"homepage\t2\tchampion\tH1\t3\t2.6\t3\t1\n" +
				"page\t1\tchampion\tH0\t3\t1.5\t2\t0.666667")},
		// e9's reward window passed long ago, but ingest has not said that
		// all feedback up to its end is in: not closed, not counted, not
		// trained on; once the watermark passes it, with its feedback.
		{name: "check e9's window passed", query: true,
			sql:  "SELECT count() FROM " + db + ".decisions FINAL WHERE event_id = 'e9' AND " + windowClosedCondition,
			want: "1"},
		{name: "check e9 not closed behind the watermark", query: true,
			sql: "SELECT (SELECT count() FROM " + db + ".examples WHERE event_id = 'e9'), (SELECT count() FROM " +
				db + ".decisions FINAL WHERE model = 'homepage' AND kind = 'ranker' AND " + strings.ReplaceAll(liveCondition, "{db}", db) + ")",
			want: "0\t7"},
		watermark("watermark past e9", fixtureBase.Add(4*time.Hour)),
		{name: "check e9 closed once ingested", query: true,
			sql:  "SELECT event_id, feedback_count, reward FROM " + db + ".examples WHERE event_id = 'e9'",
			want: "e9\t1\t1"},
		// Until an ingest writes the decisions watermark, the feedback's
		// stands for it (an ingest of an older release); once one does, a
		// decisions topic behind e9's window keeps it open.
		watermarkOf(StreamDecisions, "decisions watermark behind e9", fixtureBase.Add(2*time.Hour)),
		{name: "check e9 held open by the decisions watermark", query: true,
			sql:  "SELECT count() FROM " + db + ".examples WHERE event_id = 'e9'",
			want: "0"},
		bounded("check bounded examples of homepage held by the decisions watermark", db, "homepage", 0, math.MaxUint64,
			"e1\t2\t1.5\ne2\t2\t0.2\ne3\t2\t0.9\ne4\t3\t0.7\ne5\t0\t0.25\ne6\t0\t0\ne7\t1\t1"),
		recent("check bounded examples of homepage held by the decisions watermark", db, "homepage", 0, math.MaxUint64,
			"e1\t2\t1.5\ne2\t2\t0.2\ne3\t2\t0.9\ne4\t3\t0.7\ne5\t0\t0.25\ne6\t0\t0\ne7\t1\t1"),
		watermarkOf(StreamDecisions, "decisions watermark past e9", fixtureBase.Add(4*time.Hour)),
		{name: "check e9 closed once its decision's topic is in", query: true,
			sql:  "SELECT count() FROM " + db + ".examples WHERE event_id = 'e9'",
			want: "1"},
		// A serve process whose spool has held feedback since 3h keeps e9
		// open; one silent since long ago (its claims expired) holds
		// nothing back, although its claim is older still.
		spool("fixture spool claims", [][]any{
			{"dead", fixtureBase.Add(time.Hour), fixtureBase.Add(time.Hour), fixtureBase.Add(2 * time.Hour)},
			{"live", fixtureBase.Add(2 * time.Hour), fixtureBase.Add(2 * time.Hour), forever},
			{"live", fixtureBase.Add(3 * time.Hour), fixtureBase.Add(3*time.Hour + time.Second), forever}}),
		{name: "check e9 held open by a spool", query: true,
			sql: "SELECT (SELECT count() FROM " + db + ".examples WHERE event_id = 'e9'), (SELECT count() FROM " + db + ".examples WHERE event_id = 'e7'), " +
				expand(spoolWatermark, db) + " = " + fmt.Sprint(fixtureBase.Add(3*time.Hour).UnixMilli()),
			want: "0\t1\t1"},
		spool("fixture spool shipped", [][]any{{"live", fixtureBase.Add(5 * time.Hour), fixtureBase.Add(5 * time.Hour), forever}}),
		{name: "check e9 closed once the spool shipped", query: true,
			sql:  "SELECT count() FROM " + db + ".examples WHERE event_id = 'e9'",
			want: "1"},
	}, lateChecks(db)...)
}

// lateChecks add e10, a decision with a late window (reward.late_window,
// newer than the schema the upgrade test starts from), and its feedback:
// one inside its reward window, one after it within the late window (both
// in its reward), one after both (in none); e6's, e7's and c2's late
// feedback came with no late window.
func lateChecks(db string) []step {
	at := fixtureBase.Add(3*time.Hour + 10*time.Minute)
	ms := uint64(at.UnixMilli())
	ingested := fixtureBase.Add(24 * time.Hour)
	st := func(name, sql string, rows [][]any) step {
		s, err := bindStatement(Statement{SQL: expand(sql, db), Rows: rows})
		if err != nil {
			panic(err)
		}
		return step{name: name, sql: s}
	}
	var fbs [][]any
	for _, f := range []struct {
		id     string
		after  time.Duration
		reward float64
	}{{"f10a", 30 * time.Second, 1}, {"f10b", 90 * time.Second, 0.5}, {"f10c", 200 * time.Second, 1}} {
		ts := at.Add(f.after)
		fbs = append(fbs, []any{"e10", f.id, ts, uint64(ts.UnixMilli()), f.reward, "click", ingested})
	}
	late, err := bindStatement(Statement{SQL: expand(sqlLateFeedback, db), Args: []any{uint64(0), "homepage", "homepage", uint64(0)}})
	if err != nil {
		panic(err)
	}
	return []step{
		st("fixture late window decision", `INSERT INTO {db}.decisions (event_id, ts, ts_ms, model, kind, version, variant,
			action_ids, action_keys, probabilities, chosen, chosen_index, chosen_probability,
			reward_window_s, reward_late_window_s, reward_default, reward_aggregate, context_json, actions_json, ingested_at)`, [][]any{
			{"e10", at, ms, "homepage", "ranker", uint32(2), "champion", []string{"x", "y"}, []string{"k-x", "k-y"}, []float64{0.75, 0.25},
				"x", uint16(0), 0.75, uint32(60), uint32(120), 0.0, "sum", `{"user":{"segment":"a"}}`, "", ingested}}),
		st("fixture late window feedback", `INSERT INTO {db}.feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at)`, fbs),
		{name: "check e10 re-scored by its late feedback", query: true,
			sql:  "SELECT event_id, feedback_count, reward FROM " + db + ".examples WHERE event_id = 'e10'",
			want: "e10\t2\t1.5"},
		bounded("check bounded examples with a late window", db, "homepage", ms, ms, "e10\t2\t1.5"),
		recent("check bounded examples with a late window", db, "homepage", ms, ms, "e10\t2\t1.5"),
		// homepage's feedback: 17 on its decisions; late: e6's, e7's
		// second and e10's two; re-scoring: e10's first late one.
		{name: "check late feedback of homepage", query: true, sql: late, want: "17\t4\t1"},
	}
}
