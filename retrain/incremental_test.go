package retrain

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/deploy"
)

func mustManifest(t *testing.T, ctx context.Context, reg *deploy.Registry, version int) Manifest {
	t.Helper()
	v, err := reg.Get(ctx, "homepage", version)
	if err != nil {
		t.Fatal(err)
	}
	var man Manifest
	if err := json.Unmarshal(v.Manifest, &man); err != nil {
		t.Fatal(err)
	}
	return man
}

// mustRun runs a retrain of homepage and wants a candidate registered and
// promoted, so that the next run goes on from it.
func mustRun(t *testing.T, ctx context.Context, rt *Retrainer, what string) *Result {
	t.Helper()
	res, err := rt.Run(ctx, "homepage", nil)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Logf("%s: v%d %s, %s (%s); trained on %d, judged on %d (%s)", what, res.Version, res.Training, res.Outcome, res.FullReason, res.TrainRows, res.Judged, res.Evidence)
	if res.Outcome != Promoted {
		t.Fatalf("%s: %+v; want a promoted candidate", what, res)
	}
	return res
}

// closedAfter counts the closed examples at or after cutoffMs.
func closedAfter(t *testing.T, ctx context.Context, store *clickhouse.Training, cutoffMs uint64) int {
	t.Helper()
	n, _, _, err := store.ClosedSpan(ctx, "homepage", flywheel.KindRanker, cutoffMs, math.MaxUint64)
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// trainedOf is how many examples a candidate judged on evidence (its
// manifest's) learns of a window of old examples its references learned
// and fresh ones after their cutoff: all of them under progressive
// validation; under a holdout the newest fifth of the fresh ones (the
// default holdout) is held out.
func trainedOf(evidence string, old, fresh int) int {
	if evidence == flywheel.EvidenceProgressive {
		return old + fresh
	}
	return old + int(float64(fresh)*(1-0.2))
}

// judgedOf is how many examples a candidate judged on evidence is judged
// on, of fresh ones after its references' cutoff.
func judgedOf(evidence string, fresh int) int {
	if evidence == flywheel.EvidenceProgressive {
		return fresh
	}
	return fresh - int(float64(fresh)*(1-0.2))
}

// An incremental chain: v2 is full (its champion, the bootstrap, learned
// nothing), v3 and v4 go on from their champion's weights and optimizer
// state over the decisions after its cutoff only, and with full_every 3 v5
// is full again. Every version is rebuilt bit for bit, artifact and all.
func TestIncrementalChainReproduced(t *testing.T) {
	_, base := testServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	conn, db, reg := testRegistry(t, ctx, base, "rti")
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Bits: 12, Interactions: [][]string{{"user", "item"}},
		Reward:  flywheel.RewardConfig{Window: time.Minute},
		Retrain: flywheel.RetrainConfig{Schedule: "@hourly", MinNewExamples: 100, Incremental: true, FullEvery: 3}}.WithDefaults()
	if err := reg.Bootstrap(ctx, "homepage", mc); err != nil {
		t.Fatal(err)
	}
	store := clickhouse.NewTraining(conn, db)
	rt, err := New(Options{Models: map[string]flywheel.ModelConfig{"homepage": mc}, Store: store, Registry: reg, CodeVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-time.Hour).UTC()
	t0 := uint64(start.UnixMilli())
	insertLearnable(t, ctx, conn, db, start, 0, 3000)
	res := mustRun(t, ctx, rt, "v2")
	v2 := mustManifest(t, ctx, reg, res.Version)
	// v2's trainer, from zero, cannot score before it has fitted its bins
	// on 4,096 examples, more than the window holds: it is judged on a
	// holdout, and learns 2,400 of the 3,000.
	if v2.Evidence != flywheel.EvidenceHoldout || v2.Training != TrainedFull || !strings.Contains(v2.FullReason, "bootstrap") || v2.TrainRows != 2400 || v2.CutoffMs != t0+2400 || v2.Learned != 2400*uint64(mc.Retrain.Passes) {
		t.Fatalf("v2 judged on %s; its chain: %+v", v2.Evidence, v2.Chain)
	}

	// Each step adds 1,000 decisions. An incremental trainer can score
	// from its first example: the candidate is judged progressively on
	// every decision after the champion's cutoff (v2's holdout and the new
	// ones: 600 + 1,000 for v3, 1,000 for v4) and learns all of them.
	prev := v2
	for i, version := range []int{3, 4} {
		insertLearnable(t, ctx, conn, db, start, 3000+1000*i, 1000)
		fresh := closedAfter(t, ctx, store, prev.CutoffMs)
		res := mustRun(t, ctx, rt, "incremental")
		man := mustManifest(t, ctx, reg, res.Version)
		newClosed, _, _, err := store.ClosedSpan(ctx, "homepage", flywheel.KindRanker, prev.CutoffMs, man.HoldoutFrom-1)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case res.Version != version || man.Training != TrainedIncremental || man.Parent != version-1 || man.Link != version-2:
			t.Fatalf("v%d: %+v; want incremental from v%d, link %d", res.Version, man.Chain, version-1, version-2)
		case man.ParentCutoffMs != prev.CutoffMs || man.DataFromMs < prev.CutoffMs:
			t.Fatalf("v%d learned from %d, its parent's cutoff is %d", version, man.DataFromMs, prev.CutoffMs)
		case man.Evidence != flywheel.EvidenceProgressive || man.EvidenceFromMs != prev.CutoffMs || man.JudgedRows != fresh || res.Judged != fresh:
			t.Fatalf("v%d judged on %s from %d, %d examples; want progressive validation from v%d's cutoff %d on all %d after it", version, man.Evidence, man.EvidenceFromMs, man.JudgedRows, version-1, prev.CutoffMs, fresh)
		case uint64(man.TrainRows) != newClosed || man.TrainRows != trainedOf(man.Evidence, 0, fresh):
			t.Fatalf("v%d learned %d examples; %d closed decisions lie between v%d's cutoff and the holdout (want %d of the %d after it)", version, man.TrainRows, newClosed, version-1, trainedOf(man.Evidence, 0, fresh), fresh)
		case man.Learned != prev.Learned+uint64(man.TrainRows*mc.Retrain.Passes): // every pass counts
			t.Fatalf("v%d learned %d over its chain; want %d + %d × %d passes", version, man.Learned, prev.Learned, man.TrainRows, mc.Retrain.Passes)
		case man.FeatureProfile == nil || man.FeatureProfile.Examples != prev.FeatureProfile.Examples+uint64(man.TrainRows):
			t.Fatalf("v%d's feature profile %+v does not cover its chain: %d + %d rows", version, man.FeatureProfile, prev.FeatureProfile.Examples, man.TrainRows)
		}
		prev = man
	}

	// full_every 3: v5 is the chain's third version after v2, so full.
	insertLearnable(t, ctx, conn, db, start, 5000, 1000)
	fresh := closedAfter(t, ctx, store, prev.CutoffMs)
	res = mustRun(t, ctx, rt, "v5")
	v5 := mustManifest(t, ctx, reg, res.Version)
	// Its trainer, from zero, has fitted its bins on the 5,000 decisions
	// before v4's cutoff by the time it reaches it: progressive.
	if v5.Evidence != flywheel.EvidenceProgressive || v5.JudgedRows != fresh || v5.Training != TrainedFull || !strings.Contains(v5.FullReason, "full_every 3") || v5.Link != 0 || v5.TrainRows != trainedOf(v5.Evidence, 6000-fresh, fresh) || v5.FeatureProfile.Examples != uint64(v5.TrainRows) {
		t.Fatalf("v5 after a chain of three: %+v, %d trained, judged on %s (%d); want full (full_every) over the window, judged progressively on %d", v5.Chain, v5.TrainRows, v5.Evidence, v5.JudgedRows, fresh)
	}
	for v := 2; v <= 5; v++ {
		rep, err := rt.Reproduce(ctx, "homepage", v)
		if err != nil {
			t.Fatalf("reproduce v%d: %v", v, err)
		}
		if !rep.Identical {
			t.Fatalf("reproduce v%d: %+v", v, rep)
		}
		t.Logf("v%d (%s, parent v%d) reproduced bit for bit from %d rows in %s", v, rep.Training, rep.Parent, rep.Rows, rep.Took)
	}
}

// A change of shape (here bits) makes the next candidate a full retrain
// with the reason in its manifest, although incremental training is on;
// and retrain.warm_start, the older name, turns incremental training on.
func TestShapeChangeForcesFullRetrain(t *testing.T) {
	_, base := testServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, db, reg := testRegistry(t, ctx, base, "rts")
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Bits: 12, Interactions: [][]string{{"user", "item"}},
		Reward:  flywheel.RewardConfig{Window: time.Minute},
		Retrain: flywheel.RetrainConfig{Schedule: "@hourly", MinNewExamples: 100, WarmStart: true}}.WithDefaults()
	if err := reg.Bootstrap(ctx, "homepage", mc); err != nil {
		t.Fatal(err)
	}
	store := clickhouse.NewTraining(conn, db)
	newRetrainer := func(mc flywheel.ModelConfig) *Retrainer {
		rt, err := New(Options{Models: map[string]flywheel.ModelConfig{"homepage": mc}, Store: store, Registry: reg, CodeVersion: "test"})
		if err != nil {
			t.Fatal(err)
		}
		return rt
	}
	start := time.Now().Add(-time.Hour).UTC()
	insertLearnable(t, ctx, conn, db, start, 0, 3000)
	mustRun(t, ctx, newRetrainer(mc), "v2")
	insertLearnable(t, ctx, conn, db, start, 3000, 1000)
	if res := mustRun(t, ctx, newRetrainer(mc), "v3"); res.Training != TrainedIncremental {
		t.Fatalf("v3 with warm_start: %s (%s); want incremental", res.Training, res.FullReason)
	}

	insertLearnable(t, ctx, conn, db, start, 4000, 1000)
	v3, err := reg.Latest(ctx, "homepage")
	if err != nil {
		t.Fatal(err)
	}
	fresh := closedAfter(t, ctx, store, mustManifest(t, ctx, reg, v3).CutoffMs)
	mc.Bits = 13
	res := mustRun(t, ctx, newRetrainer(mc), "v4, bits 12 -> 13")
	man := mustManifest(t, ctx, reg, res.Version)
	if man.Training != TrainedFull || !strings.Contains(man.FullReason, "shape changed") || !strings.Contains(man.FullReason, "bits 12, expected 13") || man.Parent != 0 {
		t.Fatalf("v4 after bits changed: %+v; want full, for the shape", man.Chain)
	}
	if want := trainedOf(man.Evidence, 5000-fresh, fresh); man.TrainRows != want {
		t.Fatalf("v4 learned %d examples; a full retrain learns the window's %d before the holdout (the newest fifth of the %d after v3's cutoff)", man.TrainRows, want, fresh)
	}
	rt := newRetrainer(mc)
	for v := 3; v <= 4; v++ {
		if rep, err := rt.Reproduce(ctx, "homepage", v); err != nil || !rep.Identical {
			t.Fatalf("reproduce v%d: %+v, %v", v, rep, err)
		}
	}
}
