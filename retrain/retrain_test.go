package retrain

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/deploy"
	"github.com/flywheel-dev/flywheel/sim"
)

// testRegistry migrates a fresh database named after prefix on base's
// server and returns a connection to it (the database is dropped when the
// test ends) and a registry over it.
func testRegistry(t *testing.T, ctx context.Context, base clickhouse.Config, prefix string) (driver.Conn, string, *deploy.Registry) {
	t.Helper()
	host := base.DSN[len("clickhouse://") : len(base.DSN)-len("/default")]
	ccfg := clickhouse.Config{DSN: fmt.Sprintf("clickhouse://%s/%s_%d", host, prefix, time.Now().UnixNano())}
	if err := clickhouse.Migrate(ctx, ccfg); err != nil {
		t.Fatal(err)
	}
	conn, err := clickhouse.Open(ctx, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	db := ccfg.Database()
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db); conn.Close() })
	// The tests write decisions and feedback directly, as a caught-up
	// ingest would: a feedback watermark past everything leaves closing to
	// the reward windows alone.
	if err := clickhouse.NewInserts(conn, db).WriteWatermark(ctx, clickhouse.Watermark{Stream: clickhouse.StreamFeedback,
		Topic: "test", Partitions: 1, Through: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	reg, err := deploy.NewRegistry(clickhouse.NewRegistry(conn, db), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return conn, db, reg
}

// Retraining reads only decisions whose reward window has closed, and a
// version it registered is rebuilt from its manifest with identical weights.
func TestRetrainMaturityReproduceEvaluate(t *testing.T) {
	_, base := testServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, db, reg := testRegistry(t, ctx, base, "rt")
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}},
		Reward:  flywheel.RewardConfig{Window: time.Minute},
		Retrain: flywheel.RetrainConfig{Schedule: "@hourly", MinNewExamples: 100, Passes: 2}}.WithDefaults()
	if err := reg.Bootstrap(ctx, "homepage", mc); err != nil {
		t.Fatal(err)
	}

	// 3,000 closed decisions (an hour ago, one-minute window) and 500 open
	// ones (now, one-hour window), logged by the uniform policy. Half of
	// them name their actions by key alone, in the actions table; the other
	// half carry their actions' JSON as well.
	world := sim.NewWorld(3)
	rng := rand.New(rand.NewPCG(5, 6))
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".decisions (event_id, ts, ts_ms, model, kind, version, variant, action_ids, action_keys, probabilities, chosen, chosen_index, chosen_probability, reward_window_s, reward_default, reward_aggregate, context_json, actions_json, ingested_at)")
	if err != nil {
		t.Fatal(err)
	}
	fb, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at)")
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour).UTC()
	for i := 0; i < 3500; i++ {
		ts, window := old.Add(time.Duration(i)*time.Millisecond), uint32(60)
		if i >= 3000 {
			ts, window = time.Now().UTC(), 3600
		}
		seg := world.Segments[rng.IntN(len(world.Segments))]
		var actions []flywheel.Action
		var ids []string
		keys := []string{}
		probs := make([]float64, len(world.Items))
		for j, it := range world.Items {
			actions = append(actions, flywheel.Action{ID: it.ID, Features: flywheel.Features{"item": {"id": it.ID, "category": it.Category}}})
			ids = append(ids, it.ID)
			probs[j] = 1 / float64(len(world.Items))
		}
		a := rng.IntN(len(actions))
		ctxJSON, _ := json.Marshal(flywheel.Features{"user": {"segment": seg}})
		actJSON, _ := json.Marshal(actions)
		keys = itemKeys(world) // as ingest writes them: keys always, the JSON too while an action is new
		if i%2 == 1 {
			actJSON = nil
		}
		id := fmt.Sprintf("ev-%05d", i)
		if err := b.Append(id, ts, uint64(ts.UnixMilli()), "homepage", "ranker", uint32(1), "champion", ids, keys, probs, ids[a], uint16(a), probs[a], window, 0.0, "sum", string(ctxJSON), string(actJSON), time.Now().UTC()); err != nil {
			t.Fatal(err)
		}
		if rng.Float64() < world.ClickProbability(seg, world.Items[a]) {
			if err := fb.Append(id, "f"+id, ts, uint64(ts.UnixMilli())+10, 1.0, "click", time.Now().UTC()); err != nil {
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
	ab, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".actions (action_key, action_id, action_json, seen_at)")
	if err != nil {
		t.Fatal(err)
	}
	for j, it := range world.Items {
		js, _ := json.Marshal(flywheel.Action{ID: it.ID, Features: flywheel.Features{"item": {"id": it.ID, "category": it.Category}}})
		if err := ab.Append(itemKeys(world)[j], it.ID, string(js), time.Now().UTC()); err != nil {
			t.Fatal(err)
		}
	}
	if err := ab.Send(); err != nil {
		t.Fatal(err)
	}

	rt, err := New(Options{Models: map[string]flywheel.ModelConfig{"homepage": mc}, Store: clickhouse.NewTraining(conn, db), Registry: reg, CodeVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := rt.Run(ctx, "homepage", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("run: %s (%s); trained on %d, judged on %d", res.Outcome, res.Reason, res.TrainRows, res.Holdout)
	if res.TrainRows+res.Holdout != 3000 {
		t.Fatalf("trained on %d + %d examples; the 3,000 closed ones only were expected", res.TrainRows, res.Holdout)
	}
	if res.Outcome != Promoted || res.Version != 2 {
		t.Fatalf("a model learned from 3,000 uniform logs should beat the uniform policy: %+v", res)
	}
	// Nothing new since: the next run is skipped, and says why.
	if again, _ := rt.Run(ctx, "homepage", nil); again.Outcome != Skipped {
		t.Fatalf("second run: %+v", again)
	}
	rep, err := rt.Reproduce(ctx, "homepage", 2)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Identical || rep.Rows != 3000 {
		t.Fatalf("reproduction: %+v", rep)
	}
	t.Logf("v2 reproduced from %d rows: identical weights (%s)", rep.Rows, rep.Took)
	ev, err := rt.Evaluate(ctx, "homepage", 1, old.Add(-time.Minute), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if ev.Examples != 3000 || ev.Champion != 2 {
		t.Fatalf("evaluation: %d examples against v%d", ev.Examples, ev.Champion)
	}
	t.Logf("\n%s", ev)
}

// itemKeys are the keys of the world's items in the actions table.
func itemKeys(world *sim.World) []string {
	keys := make([]string, len(world.Items))
	for j := range world.Items {
		keys[j] = fmt.Sprintf("%032x", j+1)
	}
	return keys
}

// A retrain run that cannot read the actions its examples name by key fails,
// rather than training on the examples it could read.
func TestRetrainFailsWhenActionsCannotBeRead(t *testing.T) {
	_, base := testServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, db, reg := testRegistry(t, ctx, base, "rta")
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}},
		Reward:  flywheel.RewardConfig{Window: time.Minute},
		Retrain: flywheel.RetrainConfig{Schedule: "@hourly", MinNewExamples: 10, Passes: 1}}.WithDefaults()
	if err := reg.Bootstrap(ctx, "homepage", mc); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour).UTC()
	if err := conn.Exec(ctx, "INSERT INTO "+db+`.decisions (event_id, ts, ts_ms, model, kind, version, variant, action_ids, action_keys, probabilities,
		chosen, chosen_index, chosen_probability, reward_window_s, reward_default, reward_aggregate, context_json, ingested_at)
		SELECT concat('e', toString(number)), ?, ? + number, 'homepage', 'ranker', 1, 'champion', ['a', 'b'], ['k-a', 'k-b'], [0.5, 0.5],
			'a', 0, 0.5, 60, 0, 'sum', '{"user":{"segment":"s"}}', now()
		FROM system.numbers LIMIT 100`, old, uint64(old.UnixMilli())); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, "DROP TABLE "+db+".actions"); err != nil {
		t.Fatal(err)
	}
	rt, err := New(Options{Models: map[string]flywheel.ModelConfig{"homepage": mc}, Store: clickhouse.NewTraining(conn, db), Registry: reg, CodeVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := rt.Run(ctx, "homepage", nil)
	if err == nil || !strings.Contains(err.Error(), "read the actions") {
		t.Fatalf("run with the actions table gone: %+v, %v; want an error reading the actions", res, err)
	}
	if v, _ := reg.Latest(ctx, "homepage"); v != 1 {
		t.Fatalf("latest version %d after a failed run; want 1", v)
	}
	t.Logf("run failed as it should: %v", err)
}

// insertLearnable logs n closed ranker decisions of homepage from start, one
// a millisecond, by the uniform policy over two actions, where the chosen
// action earns 1 when it matches the user's segment.
func insertLearnable(t *testing.T, ctx context.Context, conn driver.Conn, db string, start time.Time, offset, n int) {
	t.Helper()
	from := uint64(start.UnixMilli()) + uint64(offset)
	acts := `[{"id":"a","features":{"item":{"id":"a"}}},{"id":"b","features":{"item":{"id":"b"}}}]`
	if err := conn.Exec(ctx, "INSERT INTO "+db+`.decisions (event_id, ts, ts_ms, model, kind, version, variant, action_ids, action_keys, probabilities,
		chosen, chosen_index, chosen_probability, reward_window_s, reward_default, reward_aggregate, context_json, actions_json, ingested_at)
		SELECT concat('e', toString(? + number)), toDateTime(intDiv(? + number, 1000)), ? + number, 'homepage', 'ranker', 1, 'champion', ['a', 'b'], ['k-a', 'k-b'], [0.5, 0.5],
			if(intHash32(? + number) % 2 = 0, 'a', 'b'), intHash32(? + number) % 2, 0.5, 60, 0, 'sum',
			concat('{"user":{"segment":"s', toString((? + number) % 2), '"}}'), ?, now()
		FROM system.numbers LIMIT ?`, uint64(offset), from, from, uint64(offset), uint64(offset), uint64(offset), acts, uint64(n)); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, "INSERT INTO "+db+`.feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at)
		SELECT concat('e', toString(? + number)), concat('f', toString(? + number)), toDateTime(intDiv(? + number, 1000)), ? + number + 1, 1, 'click', now()
		FROM system.numbers WHERE intHash32(? + number) % 2 = (? + number) % 2 LIMIT ?`,
		uint64(offset), uint64(offset), from, from, uint64(offset), uint64(offset), uint64(n)); err != nil {
		t.Fatal(err)
	}
}

// The holdout never holds an example the champion learned from: when the
// newest holdout share of the window begins before the champion's cutoff
// (here because retrain.holdout grew from 0.2 to 0.5), the holdout is the
// newest share of the examples after the cutoff, and the candidate still
// learns from more data than the champion did.
func TestHoldoutAfterTheChampionsCutoff(t *testing.T) {
	_, base := testServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, db, reg := testRegistry(t, ctx, base, "rth")
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Bits: 12, Interactions: [][]string{{"user", "item"}},
		Reward:  flywheel.RewardConfig{Window: time.Minute},
		Retrain: flywheel.RetrainConfig{Schedule: "@hourly", MinNewExamples: 100, Evidence: flywheel.EvidenceHoldout}}.WithDefaults()
	if err := reg.Bootstrap(ctx, "homepage", mc); err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-time.Hour).UTC()
	insertLearnable(t, ctx, conn, db, start, 0, 3000)
	rt, err := New(Options{Models: map[string]flywheel.ModelConfig{"homepage": mc}, Store: clickhouse.NewTraining(conn, db), Registry: reg, CodeVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := rt.Run(ctx, "homepage", nil)
	if err != nil || res.Outcome != Promoted || res.TrainRows != 2400 {
		t.Fatalf("first run: %+v, %v; want v2 trained on 2,400 and promoted", res, err)
	}
	cutoff := uint64(start.UnixMilli()) + 2400 // v2 learned from the examples before

	insertLearnable(t, ctx, conn, db, start, 3000, 1000)
	mc.Retrain.Holdout = 0.5 // the newest half: from example 2,000 of 4,000, before v2's cutoff
	if rt, err = New(Options{Models: map[string]flywheel.ModelConfig{"homepage": mc}, Store: clickhouse.NewTraining(conn, db), Registry: reg, CodeVersion: "test"}); err != nil {
		t.Fatal(err)
	}
	res, err = rt.Run(ctx, "homepage", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second run: %s (%s); trained on %d, judged on %d", res.Outcome, res.Reason, res.TrainRows, res.Holdout)
	v, err := reg.Get(ctx, "homepage", res.Version)
	if err != nil {
		t.Fatal(err)
	}
	var man Manifest
	if err := json.Unmarshal(v.Manifest, &man); err != nil {
		t.Fatal(err)
	}
	// 1,600 examples after the cutoff: the candidate learns the older half
	// of them, and the newer half judges it.
	if man.HoldoutFrom != cutoff+800 || res.TrainRows != 3200 || res.Holdout != 800 {
		t.Fatalf("holdout from %d (%d after v2's cutoff), %d trained, %d judged; want 800 after the cutoff, 3,200 and 800",
			man.HoldoutFrom, int64(man.HoldoutFrom)-int64(cutoff), res.TrainRows, res.Holdout)
	}
	if rep, err := rt.Reproduce(ctx, "homepage", res.Version); err != nil || !rep.Identical {
		t.Fatalf("reproduction: %+v, %v", rep, err)
	}
}

// A candidate that passed the gate while an operator started a canary (or
// the champion moved) during its training is registered and not deployed:
// it was judged against a version no longer alone in service.
func TestCandidateSupersededByAMoveDuringTraining(t *testing.T) {
	_, base := testServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, db, reg := testRegistry(t, ctx, base, "rts")
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Bits: 12, Interactions: [][]string{{"user", "item"}},
		Reward:  flywheel.RewardConfig{Window: time.Minute},
		Retrain: flywheel.RetrainConfig{Schedule: "@hourly", MinNewExamples: 100},
		Promote: flywheel.PromoteConfig{Canary: flywheel.CanaryConfig{Share: 0.1, Duration: time.Minute}}}.WithDefaults()
	if err := reg.Bootstrap(ctx, "homepage", mc); err != nil {
		t.Fatal(err)
	}
	insertLearnable(t, ctx, conn, db, time.Now().Add(-time.Hour).UTC(), 0, 3000)
	rt, err := New(Options{Models: map[string]flywheel.ModelConfig{"homepage": mc}, Store: clickhouse.NewTraining(conn, db), Registry: reg, CodeVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	// The operator's canary: v1's artifact registered again, started while
	// the run trains (just before it registers its candidate).
	_, art, err := reg.Champion(ctx, "homepage")
	if err != nil {
		t.Fatal(err)
	}
	manual, err := reg.Register(ctx, "homepage", flywheel.KindRanker, art, map[string]any{"test": "manual"}, map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := rt.Run(ctx, "homepage", func(step string) {
		if step == "registering" {
			if err := reg.StartCanary(ctx, "homepage", manual, "test", "an operator's canary"); err != nil {
				t.Error(err)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s", res.Outcome, res.Reason)
	if res.Outcome != Superseded || !strings.Contains(res.Reason, fmt.Sprintf("canary v%d of homepage started", manual)) {
		t.Fatalf("run: %s (%s); want superseded by the canary v%d", res.Outcome, res.Reason, manual)
	}
	if c, _ := reg.Alias(ctx, "homepage", deploy.Canary); c != manual {
		t.Fatalf("canary is v%d, want the operator's v%d", c, manual)
	}
	if ch, _ := reg.Alias(ctx, "homepage", deploy.Champion); ch != 1 {
		t.Fatalf("champion is v%d, want v1", ch)
	}
}
