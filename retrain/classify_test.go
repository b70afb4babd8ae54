package retrain

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/deploy"
)

// A classifier is retrained from logged predictions and their outcomes,
// judged by log loss, AUC and calibration against the champion, promoted,
// and reproduced bit for bit. The data follow a known logistic model, whose
// own holdout log loss is the bar.
func TestRetrainClassifier(t *testing.T) {
	_, base := testServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, db, reg := testRegistry(t, ctx, base, "rtc")
	mc := flywheel.ModelConfig{Kind: flywheel.KindClassifier, Bits: 16, Interactions: [][]string{{"user", "item"}},
		Reward:  flywheel.RewardConfig{Window: time.Minute},
		Retrain: flywheel.RetrainConfig{Schedule: "@hourly", MinNewExamples: 100, Holdout: 0.3, Passes: 1}}.WithDefaults()
	if err := reg.Bootstrap(ctx, "ctr", mc); err != nil {
		t.Fatal(err)
	}

	// The truth: logit = segment effect + category effect + their interaction.
	rng := rand.New(rand.NewPCG(11, 12))
	seg, cat := [4]float64{-1.5, -0.5, 0.2, 1.0}, [5]float64{-1, -0.3, 0, 0.4, 1.2}
	var inter [4][5]float64
	for i := range inter {
		for j := range inter[i] {
			inter[i][j] = rng.NormFloat64()
		}
	}
	const n = 20000
	truthP := make([]float64, n)
	labels := make([]bool, n)
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".decisions (event_id, ts, ts_ms, model, kind, version, variant, score, reward_window_s, reward_default, reward_aggregate, context_json, ingested_at)")
	if err != nil {
		t.Fatal(err)
	}
	fb, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at)")
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour).UTC()
	for i := 0; i < n; i++ {
		s, c := rng.IntN(4), rng.IntN(5)
		truthP[i] = 1 / (1 + math.Exp(-(seg[s] + cat[c] + inter[s][c])))
		labels[i] = rng.Float64() < truthP[i]
		ts := old.Add(time.Duration(i) * time.Millisecond)
		ctxJSON, _ := json.Marshal(flywheel.Features{"user": {"segment": fmt.Sprint("s", s)}, "item": {"category": fmt.Sprint("c", c)}})
		id := fmt.Sprintf("p-%05d", i)
		if err := b.Append(id, ts, uint64(ts.UnixMilli()), "ctr", "classifier", uint32(1), "champion", 0.5, uint32(60), 0.0, "max", string(ctxJSON), time.Now().UTC()); err != nil {
			t.Fatal(err)
		}
		if labels[i] {
			if err := fb.Append(id, "f"+id, ts, uint64(ts.UnixMilli())+10, 1.0, "conversion", time.Now().UTC()); err != nil {
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

	rt, err := New(Options{Models: map[string]flywheel.ModelConfig{"ctr": mc}, Store: clickhouse.NewTraining(conn, db), Registry: reg, CodeVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := rt.Run(ctx, "ctr", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("run: %s (%s); trained on %d, judged on %d", res.Outcome, res.Reason, res.TrainRows, res.Holdout)
	if res.Outcome != Promoted || res.Classification == nil || res.TrainRows+res.Holdout != n {
		t.Fatalf("run: %+v", res)
	}
	// The true model's log loss on the same holdout (the newest 30%).
	var trueLoss float64
	for i := res.TrainRows; i < n; i++ {
		p := truthP[i]
		if labels[i] {
			trueLoss -= math.Log(p)
		} else {
			trueLoss -= math.Log(1 - p)
		}
	}
	trueLoss /= float64(res.Holdout)
	cand, champ := res.Classification.Candidate, res.Classification.Champion
	t.Logf("holdout log loss: candidate %.4f, true model %.4f, champion (p = 0.5) %.4f; AUC %.3f vs %.3f; ECE %.4f; mean predicted %.3f vs positive rate %.3f",
		cand.LogLoss.Value, trueLoss, champ.LogLoss.Value, cand.AUC, champ.AUC, cand.ECE, cand.MeanPredicted, cand.PositiveRate)
	switch {
	case cand.LogLoss.Value > trueLoss+0.02:
		t.Errorf("candidate log loss %.4f is more than 0.02 above the true model's %.4f", cand.LogLoss.Value, trueLoss)
	case math.Abs(champ.LogLoss.Value-math.Log(2)) > 1e-9 || champ.AUC != 0.5:
		t.Errorf("the all-zero champion predicts 0.5 everywhere: log loss %.6f (want ln 2), AUC %.3f (want 0.5)", champ.LogLoss.Value, champ.AUC)
	case cand.AUC < 0.7:
		t.Errorf("candidate AUC %.3f", cand.AUC)
	case cand.ECE > 0.05:
		t.Errorf("candidate is badly calibrated: ECE %.4f", cand.ECE)
	case res.Classification.LogLossDiff.Upper >= 0:
		t.Errorf("the paired difference's interval %+v does not lie below 0", res.Classification.LogLossDiff)
	}
	rep, err := rt.Reproduce(ctx, "ctr", res.Version)
	if err != nil || !rep.Identical {
		t.Fatalf("reproduction: %+v, %v", rep, err)
	}
	ev, err := rt.Evaluate(ctx, "ctr", 1, old.Add(-time.Minute), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if ev.Classification == nil || ev.Examples != n || !strings.Contains(ev.String(), "log loss") {
		t.Fatalf("evaluation of v1: %+v", ev)
	}
	t.Logf("\n%s", ev)
}

// insertClassified logs n closed classifier decisions of name an hour ago,
// with outcomes from a known logistic model of segment and category.
func insertClassified(t *testing.T, ctx context.Context, conn driver.Conn, db, name string, n int, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 12))
	seg, cat := [4]float64{-1.5, -0.5, 0.2, 1.0}, [5]float64{-1, -0.3, 0, 0.4, 1.2}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".decisions (event_id, ts, ts_ms, model, kind, version, variant, score, reward_window_s, reward_default, reward_aggregate, context_json, ingested_at)")
	if err != nil {
		t.Fatal(err)
	}
	fb, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at)")
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour).UTC()
	for i := 0; i < n; i++ {
		s, c := rng.IntN(4), rng.IntN(5)
		p := 1 / (1 + math.Exp(-(seg[s] + cat[c])))
		ts := old.Add(time.Duration(i) * time.Millisecond)
		ctxJSON, _ := json.Marshal(flywheel.Features{"user": {"segment": fmt.Sprint("s", s)}, "item": {"category": fmt.Sprint("c", c)}})
		id := fmt.Sprintf("%s-%05d", name, i)
		if err := b.Append(id, ts, uint64(ts.UnixMilli()), name, "classifier", uint32(1), "champion", 0.5, uint32(60), 0.0, "max", string(ctxJSON), time.Now().UTC()); err != nil {
			t.Fatal(err)
		}
		if rng.Float64() < p {
			if err := fb.Append(id, "f"+id, ts, uint64(ts.UnixMilli())+10, 1.0, "conversion", time.Now().UTC()); err != nil {
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

// Classifiers retrain on their schedule: the scheduler trains a candidate of
// each, judges it by log loss under the non-inferior rule, and promotes it,
// or, with a canary configured, starts the canary.
func TestScheduledClassifierRetrain(t *testing.T) {
	_, base := testServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, db, reg := testRegistry(t, ctx, base, "rts")
	mc := flywheel.ModelConfig{Kind: flywheel.KindClassifier, Bits: 16,
		Reward:  flywheel.RewardConfig{Window: time.Minute},
		Retrain: flywheel.RetrainConfig{Schedule: "@every 1s", MinNewExamples: 100}}.WithDefaults()
	withCanary := mc
	withCanary.Promote.Canary.Share = 0.2
	models := map[string]flywheel.ModelConfig{"ctr": mc, "cvr": withCanary}
	for name, mc := range models {
		if err := reg.Bootstrap(ctx, name, mc); err != nil {
			t.Fatal(err)
		}
		insertClassified(t, ctx, conn, db, name, 5000, uint64(name[1]))
	}
	rt, err := New(Options{Models: models, Store: clickhouse.NewTraining(conn, db), Registry: reg, CodeVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); rt.Schedule(sctx) }()
	defer func() { stop(); <-done }()
	alias := func(name, alias string) int {
		v, err := reg.Alias(ctx, name, alias)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	waitFor(t, time.Minute, "the scheduled classifier retrains", func() bool {
		return alias("ctr", deploy.Champion) == 2 && alias("cvr", deploy.Canary) == 2
	})
	for _, name := range []string{"ctr", "cvr"} {
		hist, err := reg.History(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s v%d by %s: %s", name, hist[0].Alias, hist[0].Version, hist[0].Actor, hist[0].Reason)
		if hist[0].Actor != "retrain" || !strings.Contains(hist[0].Reason, "log loss") {
			t.Errorf("%s: the last move is not the scheduled retrain's: %+v", name, hist[0])
		}
	}
	v, err := reg.Get(ctx, "ctr", 2)
	if err != nil {
		t.Fatal(err)
	}
	var m struct{ Gate Decision }
	if err := json.Unmarshal(v.Metrics, &m); err != nil || m.Gate.Rule != flywheel.RuleNonInferior || m.Gate.Outcome != Promoted || m.Gate.Anchor != 0 {
		t.Fatalf("ctr v2's gate in its metrics: %+v (%v); want the non-inferior rule, promoted, shown better (its own anchor)", m.Gate, err)
	}
}
