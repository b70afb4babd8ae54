package main

import (
	"bytes"
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

// `flywheel models explain` reads a version from the registry: the
// bootstrap version, trained before names were kept, by hashed indices and
// saying so; a version trained with names by its features and crosses, as
// a table or JSON.
func TestModelsExplain(t *testing.T) {
	t.Parallel()
	_, chAddr := services(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := fmt.Sprintf("explain_%d", time.Now().UnixNano())
	dsn := fmt.Sprintf("clickhouse://%s/%s", chAddr, db)
	noenv := func(string) string { return "" }
	var out, errs bytes.Buffer
	if err := run(ctx, []string{"models", "explain", "homepage", "--clickhouse", dsn}, noenv, &out, &errs); err != nil {
		t.Fatalf("%v\n%s", err, errs.String())
	}
	conn := testDB(t, ctx, chAddr, db)
	if s := out.String(); !strings.Contains(s, "homepage v1:") || !strings.Contains(s, "trained before names were kept") {
		t.Fatalf("the bootstrap version explained as:\n%s", s)
	}

	// A version trained on the simulator's world with names, registered as
	// retraining registers it.
	cfg, err := loadConfig("", noenv)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.FromConfig(cfg.Models["homepage"])
	if err != nil {
		t.Fatal(err)
	}
	tr := model.NewTrainer(m, model.TrainConfig{Names: model.DefaultNames})
	world, rng := sim.NewWorld(1), rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 5000; i++ {
		userCtx, actions, truth := world.Draw(rng)
		a := rng.IntN(len(actions))
		ex := flywheel.Example{EventID: fmt.Sprint(i), Context: userCtx, Actions: actions, ChosenIndex: a, Probabilities: make([]float64, len(actions))}
		for j := range ex.Probabilities {
			ex.Probabilities[j] = 1 / float64(len(actions))
		}
		if rng.Float64() < truth[a] {
			ex.Reward = 1
		}
		if err := tr.LearnRanker(&ex); err != nil {
			t.Fatal(err)
		}
	}
	art, err := tr.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	reg, err := deploy.NewRegistry(clickhouse.NewRegistry(conn, db), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := reg.Register(ctx, "homepage", flywheel.KindRanker, art, map[string]any{}, map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run(ctx, []string{"models", "explain", "homepage", "--version", fmt.Sprint(v), "--top", "8", "--clickhouse", dsn}, noenv, &out, &errs); err != nil {
		t.Fatalf("%v\n%s", err, errs.String())
	}
	t.Logf("\n%s", out.String())
	if s := out.String(); !strings.Contains(s, fmt.Sprintf("homepage v%d:", v)) || !strings.Contains(s, "user^segment=") || !strings.Contains(s, " * item^") {
		t.Fatalf("v%d explained without its names:\n%s", v, s)
	}
	out.Reset()
	if err := run(ctx, []string{"models", "--json", "explain", "homepage", "--version", fmt.Sprint(v), "--clickhouse", dsn}, noenv, &out, &errs); err != nil {
		t.Fatalf("flags before explain: %v\n%s", err, errs.String())
	}
	var x model.Explanation
	if err := json.Unmarshal(out.Bytes(), &x); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !x.Dictionary || x.Version != v || len(x.Top) != defaultExplainTop || len(x.Top[0].Names) == 0 {
		t.Fatalf("JSON: %+v", x)
	}

	// One logged decision, its scores by the trained version in named terms.
	userCtx, actions, _ := world.Draw(rng)
	ids, keys, probs := make([]string, len(actions)), make([]string, len(actions)), make([]float64, len(actions))
	for j, a := range actions {
		ids[j], keys[j], probs[j] = a.ID, fmt.Sprintf("%032x", j+1), 1/float64(len(actions))
	}
	ctxJSON, _ := json.Marshal(userCtx)
	actJSON, _ := json.Marshal(actions)
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".decisions (event_id, ts, ts_ms, model, kind, version, variant, action_ids, action_keys, probabilities, chosen, chosen_index, chosen_probability, reward_window_s, reward_default, reward_aggregate, context_json, actions_json, ingested_at)")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if err := b.Append("ev-explain", now, uint64(now.UnixMilli()), "homepage", "ranker", uint32(1), "champion", ids, keys, probs, ids[3], uint16(3), probs[3], uint32(60), 0.0, "sum", string(ctxJSON), string(actJSON), now); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run(ctx, []string{"eval", "--explain", "ev-explain", "--model", "homepage", "--version", fmt.Sprint(v), "--clickhouse", dsn}, noenv, &out, &errs); err != nil {
		t.Fatalf("%v\n%s", err, errs.String())
	}
	t.Logf("\n%s", out.String())
	seg := userCtx["user"]["segment"].(string)
	for _, want := range []string{"logged by v1, chose " + ids[3] + "; scored by v" + fmt.Sprint(v), "* " + ids[3], "user^segment=" + seg + " * item^category=", model.BiasName} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("eval --explain lacks %q", want)
		}
	}
	if err := run(ctx, []string{"eval", "--explain", "ev-none", "--model", "homepage", "--clickhouse", dsn}, noenv, &out, &errs); err == nil || !strings.Contains(err.Error(), "no decision") {
		t.Errorf("an unknown event: %v", err)
	}
}
