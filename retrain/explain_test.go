package retrain

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/deploy"
	"github.com/flywheel-dev/flywheel/model"
	"github.com/flywheel-dev/flywheel/sim"
)

// A version retrained on the simulator's world keeps the names behind its
// hashed features: explaining it lists the true effect, each segment crossed
// with its favourite category, among its largest weights; and reproducing
// it rebuilds the artifact, names included, byte for byte.
func TestRetrainedVersionExplainsItself(t *testing.T) {
	_, base := testServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, db, reg := testRegistry(t, ctx, base, "rtx")
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}},
		Reward:  flywheel.RewardConfig{Window: time.Minute},
		Retrain: flywheel.RetrainConfig{Schedule: "@hourly", MinNewExamples: 100, Passes: 2}}.WithDefaults()
	if err := reg.Bootstrap(ctx, "homepage", mc); err != nil {
		t.Fatal(err)
	}
	world := sim.NewWorld(3)
	rng := rand.New(rand.NewPCG(7, 8))
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".decisions (event_id, ts, ts_ms, model, kind, version, variant, action_ids, action_keys, probabilities, chosen, chosen_index, chosen_probability, reward_window_s, reward_default, reward_aggregate, context_json, actions_json, ingested_at)")
	if err != nil {
		t.Fatal(err)
	}
	fb, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at)")
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour).UTC()
	var acts []flywheel.Action
	for i := 0; i < 4000; i++ {
		ts := old.Add(time.Duration(i) * time.Millisecond)
		userCtx, actions, truth := world.Draw(rng)
		acts = actions
		ids := make([]string, len(actions))
		probs := make([]float64, len(actions))
		for j, a := range actions {
			ids[j], probs[j] = a.ID, 1/float64(len(actions))
		}
		a := rng.IntN(len(actions))
		ctxJSON, _ := json.Marshal(userCtx)
		actJSON, _ := json.Marshal(actions)
		id := fmt.Sprintf("ev-%05d", i)
		if err := b.Append(id, ts, uint64(ts.UnixMilli()), "homepage", "ranker", uint32(1), "champion", ids, itemKeys(world), probs, ids[a], uint16(a), probs[a], uint32(60), 0.0, "sum", string(ctxJSON), string(actJSON), time.Now().UTC()); err != nil {
			t.Fatal(err)
		}
		if rng.Float64() < truth[a] {
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
	for j, a := range acts {
		js, _ := json.Marshal(a)
		if err := ab.Append(itemKeys(world)[j], a.ID, string(js), time.Now().UTC()); err != nil {
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
	if res.Version != 2 {
		t.Fatalf("run: %+v", res)
	}
	x, err := reg.Explain(ctx, "homepage", res.Version, 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", x)
	if !x.Dictionary || x.NameLimit != model.DefaultNames {
		t.Fatalf("v2 has no name dictionary: %+v", x)
	}
	// The truth: segment s clicks far more on items of its favourite
	// category (the one whose click probability has the large bonus).
	favourite := map[string]string{}
	for _, s := range world.Segments {
		for _, it := range world.Items {
			if world.ClickProbability(s, it) > 0.03+0.1*it.Quality+1e-9 {
				favourite[s] = it.Category
			}
		}
	}
	found := 0
	for s, c := range favourite {
		want := "user^segment=" + s + " * item^category=" + c
		for _, e := range x.Top {
			if len(e.Names) > 0 && e.Names[0].Name == want {
				found++
			}
		}
	}
	if found < 4 {
		t.Errorf("%d of the 5 segment × favourite category crosses are among the top 10 effects, want at least 4", found)
	}
	if s := x.String(); !strings.Contains(s, " * item^category=") {
		t.Errorf("no category cross in the output:\n%s", s)
	}
	checkTrainedProfile(t, ctx, reg, res, world)
	rep, err := rt.Reproduce(ctx, "homepage", res.Version)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Identical {
		t.Fatalf("reproduction with the name dictionary: %+v", rep)
	}
}

// checkTrainedProfile checks the feature profile the run stored in the
// version's manifest: the training rows, every user with a segment, every
// decision with the world's categories; the bootstrap version has none.
func checkTrainedProfile(t *testing.T, ctx context.Context, reg *deploy.Registry, res *Result, world *sim.World) {
	t.Helper()
	p, err := reg.FeatureProfile(ctx, "homepage", res.Version)
	if err != nil || p == nil {
		t.Fatalf("v%d's profile: %v, %v", res.Version, p, err)
	}
	if p.Examples != uint64(res.TrainRows) {
		t.Errorf("profiled %d examples, trained on %d", p.Examples, res.TrainRows)
	}
	cats := map[string]bool{}
	for _, it := range world.Items {
		cats[it.Category] = true
	}
	got := map[string]model.ProfiledFeature{}
	for _, f := range p.Features {
		got[f.Key()] = f
	}
	if seg := got["user^segment"]; p.Presence(&seg) != 1 || len(seg.Values) != len(world.Segments) {
		t.Errorf("user^segment: presence %v, values %v", p.Presence(&seg), seg.Values)
	}
	if cat := got["item^category"]; p.Presence(&cat) != 1 || len(cat.Values) != len(cats) {
		t.Errorf("item^category: presence %v, values %v, want %d", p.Presence(&cat), cat.Values, len(cats))
	}
	if boot, err := reg.FeatureProfile(ctx, "homepage", 1); err != nil || boot != nil {
		t.Errorf("the bootstrap version's profile: %v, %v", boot, err)
	}
}
