package clickhouse

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flywheel-dev/flywheel"
)

// TestDashboardLiftAndSlots: the dashboard's lift over the control group
// (imported decisions in neither arm) and a page model's reward by slot and
// by page, from decisions and feedback on the real server.
func TestDashboardLiftAndSlots(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := newClosedDB(t, ctx)
	conn, db, now := c.conn, c.db, c.now
	decide := func(id, model, variant string, version uint32, reward float64) {
		t.Helper()
		c.decide(id, model, variant, version)
		if reward != 0 {
			c.feedback(id, "f-"+id, "", reward)
		}
	}
	// Treated: 6 of 10 rewarded (v2 champion and canary together);
	// control: 2 of 10; imported: 5 of 5, counted in neither.
	for i := 0; i < 10; i++ {
		variant := "champion"
		if i%3 == 0 {
			variant = "canary"
		}
		decide(fmt.Sprintf("t%d", i), "m", variant, 2, float64(boolInt(i < 6)))
		decide(fmt.Sprintf("c%d", i), "m", flywheel.VariantControl, 1, float64(boolInt(i < 2)))
	}
	for i := 0; i < 5; i++ {
		decide(fmt.Sprintf("i%d", i), "m", flywheel.VariantImported, 0, 1)
	}
	// Pages of two slots: hero rewarded 1 and 0, side 1 and 1.
	decide("p1#hero", "page", "champion", 1, 1)
	decide("p1#side", "page", "champion", 1, 1)
	decide("p2#hero", "page", "champion", 1, 0)
	decide("p2#side", "page", "champion", 1, 1)
	c.closeAll()

	o, err := Insights(ctx, conn, db, "m", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if o.Lift == nil || o.Lift.Total == nil {
		t.Fatalf("no lift over the control group: %+v", o.Lift)
	}
	l := *o.Lift.Total
	vt, vc := 0.6*0.4*10/9, 0.2*0.8*10/9 // sample variances
	half := flywheel.TwoSidedZ(0.95) * math.Sqrt(vt/10+vc/10)
	if l.Treated != 10 || l.Control != 10 || math.Abs(l.Lift-0.4) > 1e-9 || math.Abs(l.Lower-(0.4-half)) > 1e-9 ||
		math.Abs(l.Upper-(0.4+half)) > 1e-9 || math.Abs(l.Relative-2) > 1e-9 {
		t.Errorf("lift over the window = %+v, want treated 10, control 10, lift 0.4 ± %.4f, relative 2", l, half)
	}
	if len(o.Lift.Points) != 1 || o.Lift.Points[0].Lift != l.Lift {
		t.Errorf("lift over time = %+v, want one bucket with the window's lift", o.Lift.Points)
	}
	if o.Slots != nil {
		t.Errorf("a model without pages has slots: %+v", o.Slots)
	}

	p, err := Insights(ctx, conn, db, "page", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if p.Lift != nil {
		t.Errorf("a model without a control group has a lift: %+v", p.Lift)
	}
	got := map[string]string{}
	for _, s := range p.Slots {
		got[s.Slot] = fmt.Sprintf("%d %.2f %d", s.Decisions, s.RewardRate, len(s.Points))
	}
	want := map[string]string{"hero": "2 0.50 1", "side": "2 1.00 1", "": "2 1.50 1"}
	if fmt.Sprint(got) != fmt.Sprint(want) || len(p.Slots) != 3 || p.Slots[2].Slot != "" {
		t.Errorf("slots (decisions, reward rate, points) = %v in order %+v, want %v with the page last", got, p.Slots, want)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestFeedbackNamingItsModel: two models' decisions under one event id do
// not share feedback that names its model; feedback naming none counts for
// both, in the view and in the product's bounded read.
func TestFeedbackNamingItsModel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := newClosedDB(t, ctx)
	conn, db := c.conn, c.db
	c.decide("dup", "a", "champion", 1)
	c.decide("dup", "b", "champion", 1)
	c.feedback("dup", "f-a", "a", 1)
	c.feedback("dup", "f-any", "", 0.5)
	c.closeAll()
	read := func(sql string, args ...any) string {
		t.Helper()
		rows, err := conn.Query(ctx, sql, args...)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var model string
			var n uint64
			var r float64
			if err := rows.Scan(&model, &n, &r); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("%s %d %g", model, n, r))
		}
		return fmt.Sprint(out)
	}
	if got, want := read("SELECT model, feedback_count, reward FROM "+db+".examples ORDER BY model"), "[a 2 1.5 b 1 0.5]"; got != want {
		t.Errorf("the examples view: %s, want %s", got, want)
	}
	for _, m := range []string{"a", "b"} {
		got := read(expand("SELECT model, feedback_count, reward FROM {examples}", db), examplesArgs(m, 0, math.MaxUint64, math.MaxUint64)...)
		if want := map[string]string{"a": "[a 2 1.5]", "b": "[b 1 0.5]"}[m]; got != want {
			t.Errorf("the bounded read of %s: %s, want %s", m, got, want)
		}
	}
}

// closedDB is a migrated database on the real server whose decisions are
// made half an hour ago (reward window 60 s, sum, default 0) and whose
// feedback comes 5 s after; closeAll says ingest has caught up to now.
type closedDB struct {
	t       *testing.T
	ctx     context.Context
	conn    driver.Conn
	db      string
	now, at time.Time
}

func newClosedDB(t *testing.T, ctx context.Context) *closedDB {
	t.Helper()
	cfg := testConfig(t)
	if err := Migrate(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	return &closedDB{t: t, ctx: ctx, conn: mustOpen(t, ctx, cfg), db: cfg.Database(), now: now, at: now.Add(-30 * time.Minute)}
}

func (c *closedDB) decide(id, model, variant string, version uint32) {
	c.t.Helper()
	if err := c.conn.Exec(c.ctx, "INSERT INTO "+c.db+`.decisions (event_id, ts, ts_ms, model, kind, version, variant, chosen, reward_window_s, reward_default, reward_aggregate, ingested_at)
		SELECT ?, ?, ?, ?, 'ranker', ?, ?, 'a', 60, 0, 'sum', now()`, id, c.at, uint64(c.at.UnixMilli()), model, version, variant); err != nil {
		c.t.Fatal(err)
	}
}

// feedback writes feedback fid on event id naming model ("" for none).
func (c *closedDB) feedback(id, fid, model string, reward float64) {
	c.t.Helper()
	fts := c.at.Add(5 * time.Second)
	if err := c.conn.Exec(c.ctx, "INSERT INTO "+c.db+`.feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at, model) SELECT ?, ?, ?, ?, ?, '', now(), ?`,
		id, fid, fts, uint64(fts.UnixMilli()), reward, model); err != nil {
		c.t.Fatal(err)
	}
}

func (c *closedDB) closeAll() { mustIngestThrough(c.t, c.ctx, c.conn, c.db, c.now) }
