package clickhouse

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Every query of docs/analytics.md runs against the real server on known
// data and gives the answer written here.
func TestAnalyticsGuideQueries(t *testing.T) {
	cfg := testConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := Migrate(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	conn := mustOpen(t, ctx, cfg)
	db := cfg.Database()
	mustIngestThrough(t, ctx, conn, db, time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)) // past every window: closing is up to now()

	h0 := time.Now().UTC().Add(-3 * time.Hour).Truncate(time.Hour)
	h1 := h0.Add(time.Hour)
	type dec struct {
		id, model string
		version   uint32
		at        time.Time
		window    uint32
		segment   string
		chosen    string
		explored  uint8
		prob      float64
	}
	decs := []dec{
		{"e1", "homepage", 1, h0.Add(10 * time.Minute), 60, "a", "x", 0, 0.5},
		{"e2", "homepage", 1, h0.Add(10*time.Minute + time.Second), 60, "a", "x", 1, 0.25},
		{"e3", "homepage", 1, h0.Add(10*time.Minute + 2*time.Second), 60, "b", "y", 0, 0.5},
		{"e4", "homepage", 1, h0.Add(10*time.Minute + 3*time.Second), 60, "b", "x", 0, 0.5},
		{"e5", "homepage", 2, h1.Add(10 * time.Minute), 60, "a", "x", 0, 0.9},
		{"e6", "homepage", 2, h1.Add(10*time.Minute + time.Second), 60, "b", "y", 0, 0.9},
		{"e7", "homepage", 2, h1.Add(10*time.Minute + 2*time.Second), 60, "a", "y", 0, 0.9},
		{"e8", "homepage", 2, h1.Add(10*time.Minute + 3*time.Second), 60, "b", "y", 1, 0.05},
		{"e9", "search", 1, time.Now().UTC(), 3600, "c", "z", 0, 0.5},
		// Two pages of two slots each (serve/slots.go): decisions EVENT_ID#SLOT.
		{"p1#hero", "page", 1, h0.Add(20 * time.Minute), 60, "a", "x", 0, 0.5},
		{"p1#side", "page", 1, h0.Add(20 * time.Minute), 60, "a", "y", 0, 0.5},
		{"p2#hero", "page", 1, h0.Add(21 * time.Minute), 60, "b", "y", 0, 0.5},
		{"p2#side", "page", 1, h0.Add(21 * time.Minute), 60, "b", "x", 1, 0.5},
	}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+`.decisions (event_id, ts, ts_ms, model, kind, version, variant,
		context_names, context_values, context_numbers, action_ids, action_keys, probabilities, chosen, chosen_index, chosen_probability,
		explored, reward_window_s, reward_default, reward_aggregate, actions_json, ingested_at)`)
	if err != nil {
		t.Fatal(err)
	}
	// Actions: x, and y, which e4 offered at another price: seen once, that
	// version of y is not in the actions table, and e4 carries its actions.
	actions := [][3]string{
		{"k-x", "x", `{"id":"x","features":{"item":{"price":9.5}}}`},
		{"k-y", "y", `{"id":"y","features":{"item":{"price":5}}}`},
	}
	ab, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".actions (action_key, action_id, action_json, seen_at)")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range append(actions, actions...) { // written twice: stored once
		if err := ab.Append(a[0], a[1], a[2], time.Now().UTC()); err != nil {
			t.Fatal(err)
		}
	}
	if err := ab.Send(); err != nil {
		t.Fatal(err)
	}
	for _, d := range decs {
		keys, inline := []string{"k-x", "k-y"}, ""
		if d.id == "e4" {
			keys, inline = []string{"k-x", "k-y2"}, `[`+actions[0][2]+`,{"id":"y","features":{"item":{"price":4.5}}}]`
		}
		for copies := 0; copies < 2; copies++ { // delivered twice: counted once
			if err := b.Append(d.id, d.at, uint64(d.at.UnixMilli()), d.model, "ranker", d.version, "champion",
				[]string{"user^segment"}, []string{d.segment}, []float64{1}, []string{"x", "y"}, keys, []float64{0.5, 0.5},
				d.chosen, uint16(0), d.prob, d.explored, d.window, 0.0, "sum", inline, time.Now().UTC()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	fb, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at)")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		event  string
		after  time.Duration
		reward float64
	}{{"e1", 10 * time.Second, 1}, {"e3", 2 * time.Minute, 1}, {"e5", 5 * time.Second, 1}, {"e6", 5 * time.Second, 1}, {"e7", 5 * time.Second, 0.5}, {"ghost", 0, 1},
		{"p1#hero", 5 * time.Second, 1}, {"p1#side", 5 * time.Second, 0.5}, {"p2#side", 5 * time.Second, 1}} {
		at := h0
		for _, d := range decs {
			if d.id == f.event {
				at = d.at
			}
		}
		at = at.Add(f.after)
		if err := fb.Append(f.event, "f-"+f.event, at, uint64(at.UnixMilli()), f.reward, "click", time.Now().UTC()); err != nil {
			t.Fatal(err)
		}
	}
	if err := fb.Send(); err != nil {
		t.Fatal(err)
	}
	// A decision of a model with a late window: feedback inside its reward
	// window, after it within the late window, and after both.
	late := h0.Add(30 * time.Minute)
	if err := conn.Exec(ctx, "INSERT INTO "+db+`.decisions (event_id, ts, ts_ms, model, kind, version, variant, action_ids, probabilities,
		chosen, chosen_index, chosen_probability, reward_window_s, reward_late_window_s, reward_default, reward_aggregate, ingested_at)
		SELECT 'n1', ?, ?, 'news', 'ranker', 1, 'champion', ['x'], [1.0], 'x', 0, 1.0, 60, 120, 0, 'sum', now()`, late, uint64(late.UnixMilli())); err != nil {
		t.Fatal(err)
	}
	for i, after := range []time.Duration{30 * time.Second, 90 * time.Second, 200 * time.Second} {
		at := late.Add(after)
		if err := conn.Exec(ctx, "INSERT INTO "+db+".feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at) SELECT 'n1', ?, ?, ?, 1, 'click', now()",
			fmt.Sprint("f-n1-", i), at, uint64(at.UnixMilli())); err != nil {
			t.Fatal(err)
		}
	}
	for i, m := range []struct {
		v, prev uint32
		actor   string
		reason  string
	}{{1, 0, "bootstrap", "first"}, {2, 1, "retrain", "better"}} {
		if err := conn.Exec(ctx, "INSERT INTO "+db+".deployments (name, alias, version, previous_version, ts, seq, actor, reason) SELECT 'homepage', 'champion', ?, ?, now(), ?, ?, ?",
			m.v, m.prev, uint64(i+1), m.actor, m.reason); err != nil {
			t.Fatal(err)
		}
	}

	hour := func(t time.Time) string { return t.Format("2006-01-02 15:04:05") }
	want := map[int]string{
		1:  fmt.Sprintf("1\t%s\t4\t0.25\n2\t%s\t4\t0.625", hour(h0), hour(h1)),
		2:  "1\t0.25\n2\t0.75",
		3:  "1\t0.75\n2\t0.25",
		4:  "homepage\t5\t1\t0\t1\nnews\t3\t2\t1\t1\npage\t3\t0\t0\t0",
		5:  "1",
		6:  "a\tx\t3\nb\ty\t3",
		7:  "1\t0.25\n2\t0.25",
		8:  "a\t1\t2\t0.5\na\t2\t2\t0.75\nb\t1\t2\t0\nb\t2\t2\t0.5",
		9:  "1\t0.4375\n2\t0.6875",
		10: fmt.Sprintf("%s\tchampion\t4\n%s\tchampion\t4", hour(h0), hour(h1)),
		11: "1\t0\tbootstrap\tfirst\n2\t1\tretrain\tbetter",
		12: "search\t1\t0",
		13: "x\t8\t" + actions[0][2] + "\ny\t7\t" + actions[1][2],
		14: "kafka\tfeedback\t4102444800000\t1",
		15: "hero\t2\t1\t0.5\nside\t2\t1.5\t0.75",
		16: "2\t1.25",
	}
	doc, err := os.ReadFile("../docs/analytics.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```sql\n(-- Q(\\d+)\\..*?)```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) < 10 {
		t.Fatalf("the guide has %d numbered queries; at least 10 are promised", len(blocks))
	}
	for _, blk := range blocks {
		n, _ := strconv.Atoi(blk[2])
		q := strings.ReplaceAll(blk[1], "flywheel.", db+".")
		t.Run("Q"+blk[2], func(t *testing.T) {
			exp, ok := want[n]
			if !ok {
				t.Fatalf("no expected answer for Q%d", n)
			}
			got, err := queryText(ctx, conn, q)
			if err != nil {
				t.Fatalf("%v\n%s", err, q)
			}
			if got != exp {
				t.Fatalf("got\n%s\nwant\n%s", got, exp)
			}
		})
	}
}

// queryText runs q and renders the rows as tab-separated text.
func queryText(ctx context.Context, conn driver.Conn, q string) (string, error) {
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	types := rows.ColumnTypes()
	var lines []string
	for rows.Next() {
		vals := make([]any, len(types))
		for i, ct := range types {
			vals[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(vals...); err != nil {
			return "", err
		}
		cells := make([]string, len(vals))
		for i, v := range vals {
			switch x := reflect.ValueOf(v).Elem().Interface().(type) {
			case float64:
				cells[i] = strconv.FormatFloat(x, 'f', -1, 64)
			case time.Time:
				cells[i] = x.UTC().Format("2006-01-02 15:04:05")
			default:
				cells[i] = fmt.Sprint(x)
			}
		}
		lines = append(lines, strings.Join(cells, "\t"))
	}
	return strings.Join(lines, "\n"), rows.Err()
}
