package retrain

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
)

// insertExamples logs exs as closed decisions of homepage (one-minute
// reward window) with a click feedback for each reward of 1, as ingest
// writes them.
func insertExamples(t *testing.T, ctx context.Context, conn driver.Conn, db string, exs []flywheel.Example) {
	t.Helper()
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".decisions (event_id, ts, ts_ms, model, kind, version, variant, action_ids, action_keys, probabilities, chosen, chosen_index, chosen_probability, reward_window_s, reward_default, reward_aggregate, context_json, actions_json, ingested_at)")
	if err != nil {
		t.Fatal(err)
	}
	fb, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at)")
	if err != nil {
		t.Fatal(err)
	}
	for _, ex := range exs {
		ids, keys := make([]string, len(ex.Actions)), make([]string, len(ex.Actions))
		for j, a := range ex.Actions {
			ids[j], keys[j] = a.ID, "k-"+a.ID
		}
		ctxJSON, _ := json.Marshal(ex.Context)
		actJSON, _ := json.Marshal(ex.Actions)
		ts, ms := ex.Time.UTC(), uint64(ex.Time.UnixMilli())
		k := ex.ChosenIndex
		if err := b.Append(ex.EventID, ts, ms, "homepage", "ranker", uint32(ex.Version), "champion", ids, keys, ex.Probabilities, ids[k], uint16(k),
			ex.Probabilities[k], uint32(60), 0.0, "sum", string(ctxJSON), string(actJSON), time.Now().UTC()); err != nil {
			t.Fatal(err)
		}
		if ex.Reward == 1 {
			if err := fb.Append(ex.EventID, "f-"+ex.EventID, ts, ms+10, 1.0, "click", time.Now().UTC()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	if err := fb.Send(); err != nil {
		t.Fatal(err)
	}
}

// lastRunComparison returns the comparison the last run of homepage
// recorded in retrain_runs.
func lastRunComparison(t *testing.T, ctx context.Context, conn driver.Conn, db string) Comparison {
	t.Helper()
	var js string
	if err := conn.QueryRow(ctx, "SELECT comparison FROM "+db+".retrain_runs WHERE model = 'homepage' ORDER BY started_ms DESC LIMIT 1").Scan(&js); err != nil {
		t.Fatal(err)
	}
	var c Comparison
	if err := json.Unmarshal([]byte(js), &c); err != nil {
		t.Fatalf("retrain_runs.comparison %s: %v", js, err)
	}
	return c
}

// A candidate learned from uniformly logged pages of three slots beats the
// uniform v1 on the page and on every slot: it is promoted on the page's
// evidence, and the per-slot figures are in the result, in the run's
// record and in the offline evaluation.
func TestGatePromotesABetterPage(t *testing.T) {
	_, base := testServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, db, reg := testRegistry(t, ctx, base, "rtpg")
	mc := pageModelConfig()
	mc.Reward.Window, mc.Retrain.Schedule, mc.Retrain.MinNewExamples = time.Minute, "@hourly", 100
	if err := reg.Bootstrap(ctx, "homepage", mc); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour)
	insertExamples(t, ctx, conn, db, pageLog{corr: 0.05}.draw(rand.New(rand.NewPCG(11, 1)), 2500, t0, "p"))
	rt, err := New(Options{Models: map[string]flywheel.ModelConfig{"homepage": mc}, Store: clickhouse.NewTraining(conn, db), Registry: reg, CodeVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := rt.Run(ctx, "homepage", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("run: %s (%s); trained on %d, judged on %d", res.Outcome, res.Reason, res.TrainRows, res.Holdout)
	if res.Outcome != Promoted || res.Comparison == nil || res.Comparison.Page == nil || res.Gate == nil {
		t.Fatalf("run: %+v; want promoted on the page's evidence", res)
	}
	cmp := *res.Comparison
	t.Logf("\n%s", cmp.SlotsTable("snips", res.Version, res.Champion))
	if res.Gate.Champion.Metric != "page snips estimate" || len(res.Gate.Slots) != 3 {
		t.Fatalf("gate judged %q with %d slots; want the page's snips estimate and 3 slots", res.Gate.Champion.Metric, len(res.Gate.Slots))
	}
	if len(cmp.Slots) != 3 || cmp.Page.Candidate.N*3 != res.Holdout {
		t.Fatalf("%d slots, %d pages of %d holdout decisions", len(cmp.Slots), cmp.Page.Candidate.N, res.Holdout)
	}
	sum := 0.0
	for _, sl := range cmp.Slots {
		d := sl.DiffSNIPS
		sum += d.Value
		if d.Lower <= 0 || sl.Candidate.N != cmp.Page.Candidate.N {
			t.Errorf("slot %s: %d decisions, gain %+v; want every page's, and shown better", sl.Slot, sl.Candidate.N, d)
		}
	}
	if p := cmp.Page.DiffSNIPS; p.Lower <= 0 || p.Value-sum > 1e-9 || sum-p.Value > 1e-9 {
		t.Errorf("page gain %+v; want the sum of the slots' (%.6f), shown better", p, sum)
	}
	rec := lastRunComparison(t, ctx, conn, db)
	if len(rec.Slots) != 3 || rec.Page == nil || rec.Page.DiffSNIPS != cmp.Page.DiffSNIPS || rec.Slots[0].Slot != "footer" {
		t.Fatalf("retrain_runs.comparison holds slots %+v and page %+v", rec.Slots, rec.Page)
	}
	rep, err := rt.Evaluate(ctx, "homepage", 1, t0.Add(-time.Minute), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	out := rep.String()
	t.Logf("eval v1:\n%s", out)
	for _, want := range []string{"per slot and for the page, by snips", "hero", "side", "footer", "2500 pages"} {
		if !strings.Contains(out, want) {
			t.Errorf("eval's report has no %q", want)
		}
	}
}

// A candidate better on two slots and clearly worse on the third is
// rejected, naming the slot, although its page is better: the world's taste
// for the footer turned around when the holdout began (the candidate learned
// the old one), and the champion, trained here on another log, knows the
// footer's new taste and gets the hero's and the side's wrong.
func TestGateRejectsAPageWorseOnOneSlot(t *testing.T) {
	_, base := testServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, db, reg := testRegistry(t, ctx, base, "rtps")
	mc := pageModelConfig()
	mc.Reward.Window, mc.Retrain.Schedule, mc.Retrain.MinNewExamples = time.Minute, "@hourly", 100
	if err := reg.Bootstrap(ctx, "homepage", mc); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(12, 1))
	t0 := time.Now().Add(-time.Hour)
	champ := trainOn(t, mc, pageLog{inverted: map[string]bool{"hero": true, "side": true}}.draw(rng, 3000, t0, "c"))
	art, err := champ.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	v, err := reg.Register(ctx, "homepage", flywheel.KindRanker, art, map[string]any{"test": "trained by the test"}, map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Promote(ctx, "homepage", v, "test", "a champion good on the footer only"); err != nil {
		t.Fatal(err)
	}
	// 2,000 pages of the old footer taste, then the 500 of the holdout (the
	// newest fifth) of the new one.
	insertExamples(t, ctx, conn, db, pageLog{inverted: map[string]bool{"footer": true}}.draw(rng, 2000, t0, "old"))
	insertExamples(t, ctx, conn, db, pageLog{}.draw(rng, 500, t0.Add(10*time.Minute), "new"))
	rt, err := New(Options{Models: map[string]flywheel.ModelConfig{"homepage": mc}, Store: clickhouse.NewTraining(conn, db), Registry: reg, CodeVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := rt.Run(ctx, "homepage", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("run: %s (%s); trained on %d, judged on %d", res.Outcome, res.Reason, res.TrainRows, res.Holdout)
	if res.Comparison == nil || res.Comparison.Page == nil || res.Gate == nil || res.Holdout != 1500 {
		t.Fatalf("run: %+v; want a comparison of the 500 newest pages", res)
	}
	t.Logf("\n%s", res.Comparison.SlotsTable("snips", res.Version, res.Champion))
	if res.Outcome != Rejected || !strings.HasPrefix(res.Reason, "slot footer is clearly worse") {
		t.Fatalf("outcome %s (%s); want rejected for the footer", res.Outcome, res.Reason)
	}
	// The page alone would have passed: the footer's rule rejected it.
	if page := Decide(mc.Promote, res.Gate.Champion, nil); page.Outcome != Promoted || res.Gate.Champion.Gain.Lower <= 0 {
		t.Fatalf("the page alone: %s (%s); want promoted, shown better", page.Outcome, page.Reason)
	}
	for _, sl := range res.Gate.Slots {
		if want := sl.Slot == "footer"; sl.Worse != want || !sl.Judged || (!want && sl.Gain.Lower <= 0) {
			t.Errorf("slot %s: %+v; want judged, and only the footer worse, the others better", sl.Slot, sl)
		}
	}
	if rec := lastRunComparison(t, ctx, conn, db); len(rec.Slots) != 3 || rec.Page == nil {
		t.Fatalf("retrain_runs.comparison holds slots %+v and page %+v", rec.Slots, rec.Page)
	}
	if c, _ := reg.Alias(ctx, "homepage", "champion"); c != v {
		t.Fatalf("champion is v%d, want v%d still", c, v)
	}
}
