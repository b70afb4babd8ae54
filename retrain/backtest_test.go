package retrain

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/sim"
)

// backtestModel is the homepage ranker of the docs with a fast schedule.
func backtestModel() flywheel.ModelConfig {
	return flywheel.ModelConfig{
		Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}},
		Reward:  flywheel.RewardConfig{Window: 5 * time.Second},
		Retrain: flywheel.RetrainConfig{Schedule: "@every 10s"},
	}
}

// A small backtest of the default world, through the real learner and gate:
// the loop turns (at least two promotions), the last window earns far more
// than random choice, and the same seed gives the same result.
func TestBacktestPromotesAndLearns(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o := BacktestOptions{Model: backtestModel(), World: sim.NewWorld(1), Decisions: 16000, Every: 4000, Seed: 7}
	res, err := Backtest(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Runs {
		t.Logf("decision %5d: %s v%d (champion v%d): %s", r.Decision, r.Outcome, r.Version, r.Champion, r.Reason)
	}
	for _, w := range res.Windows {
		t.Logf("%5d–%5d: reward %.3f (observed %.3f), random %.3f, oracle %.3f, versions %v", w.From, w.To, w.Reward, w.Observed, w.Random, w.Oracle, w.Versions)
	}
	if res.Promotions < 2 {
		t.Errorf("%d promotions, want at least 2", res.Promotions)
	}
	if len(res.Windows) != 4 || res.Windows[3].To != 16000 {
		t.Fatalf("windows %+v", res.Windows)
	}
	last := res.Windows[3]
	if last.Reward < last.Random+0.5*(last.Oracle-last.Random) {
		t.Errorf("final window: reward %.3f, random %.3f, oracle %.3f: not clearly above random", last.Reward, last.Random, last.Oracle)
	}
	again, err := Backtest(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(res)
	b, _ := json.Marshal(again)
	if string(a) != string(b) {
		t.Errorf("the same seed gave another result:\n%s\n%s", a, b)
	}
}

// The shop world also turns, and a bad option is refused before anything
// is played.
func TestBacktestShopAndOptions(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Backtest(ctx, BacktestOptions{Model: backtestModel(), World: sim.NewShop(1), Decisions: 16000, Every: 4000})
	if err != nil {
		t.Fatal(err)
	}
	last := res.Windows[len(res.Windows)-1]
	for _, r := range res.Runs {
		t.Logf("decision %5d: %s v%d: %s", r.Decision, r.Outcome, r.Version, r.Reason)
	}
	t.Logf("shop: %d promotions, final reward %.3f, random %.3f, oracle %.3f", res.Promotions, last.Reward, last.Random, last.Oracle)
	if res.Promotions < 1 || last.Reward < last.Random+0.02 {
		t.Errorf("shop: %d promotions, final reward %.3f against random %.3f", res.Promotions, last.Reward, last.Random)
	}
	bad := backtestModel()
	bad.Retrain.Schedule = "every now and then"
	for name, o := range map[string]BacktestOptions{
		"no world":     {Model: backtestModel(), Decisions: 10},
		"no decisions": {Model: backtestModel(), World: sim.NewWorld(1)},
		"bad schedule": {Model: bad, World: sim.NewWorld(1), Decisions: 10},
		"bad rate":     {Model: backtestModel(), World: sim.NewWorld(1), Decisions: 10, Rate: -1},
		"bad lag":      {Model: backtestModel(), World: sim.NewWorld(1), Decisions: 10, IngestLag: -time.Second},
	} {
		if _, err := Backtest(ctx, o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// With promote.canary, a candidate the gate passes serves the canary's
// share while the runs wait, and the canary judge's rule promotes it (or
// ends it) once it has served its duration with enough closed decisions.
func TestBacktestCanary(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mc := backtestModel()
	mc.Promote.Canary.Share, mc.Promote.Canary.Duration, mc.Promote.Canary.MinDecisions = 0.3, 30*time.Second, 200
	res, err := Backtest(ctx, BacktestOptions{Model: mc, World: sim.NewWorld(1), Decisions: 12000, Every: 2000, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	canaried, judged, waited := 0, 0, 0
	var started, promotedAt int
	for _, r := range res.Runs {
		t.Logf("decision %5d: %s v%d (champion v%d): %s", r.Decision, r.Outcome, r.Version, r.Champion, r.Reason)
		switch {
		case r.Outcome == Canaried:
			canaried++
			if started == 0 {
				started = r.Decision
			}
		case strings.HasPrefix(r.Reason, "canary judge: ") && r.Outcome == Promoted:
			judged++
			if promotedAt == 0 {
				promotedAt = r.Decision
			}
		case strings.Contains(r.Reason, "is being judged"):
			waited++
		}
	}
	if canaried == 0 || judged == 0 || waited == 0 || res.Promotions != judged {
		t.Fatalf("%d canaries, %d promoted by the judge, %d runs waited, %d promotions: want canaries the judge promotes, and runs waiting meanwhile",
			canaried, judged, waited, res.Promotions)
	}
	// 30 virtual seconds at 100 decisions a second, then closing: not before.
	if promotedAt-started < 3000 {
		t.Errorf("canary started at decision %d and was promoted at %d, before its duration", started, promotedAt)
	}
	var both bool
	for _, w := range res.Windows {
		both = both || len(w.Versions) >= 2
	}
	if !both {
		t.Errorf("no window was served by two versions at once: %+v", res.Windows)
	}
}

// A decision closes IngestLag after its reward window: a lag longer than
// the whole run leaves every run without new examples (skipped), and a
// short one delays the first run that has enough.
func TestBacktestIngestLag(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first := func(lag time.Duration) (*BacktestResult, int) {
		t.Helper()
		res, err := Backtest(ctx, BacktestOptions{Model: backtestModel(), World: sim.NewWorld(1), Decisions: 6000, Every: 2000, Seed: 3, IngestLag: lag})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res.Runs {
			if r.Outcome != Skipped {
				return res, r.Decision
			}
		}
		return res, -1
	}
	_, none := first(0)
	_, lagged := first(15 * time.Second)
	res, never := first(time.Hour)
	t.Logf("first run with new examples at decision %d without lag, %d with 15 s, %d with an hour", none, lagged, never)
	if none < 0 || lagged <= none || never != -1 || res.Promotions != 0 {
		t.Errorf("first run that was not skipped: %d, %d with a 15 s lag, %d with an hour's (%d promotions); want later with the lag, none with an hour's",
			none, lagged, never, res.Promotions)
	}
}

// An incremental candidate goes on from the champion's artifact and state
// over what it has not learned: with one pass over a window that holds
// every decision, that is, bit for bit, the full retrain, so the two serve
// the same and the gate decides the same. (Only without numeric bins: a
// chain keeps the bins its full retrain fitted, where every full retrain
// fits them again on its own window.)
func TestBacktestIncrementalMatchesFull(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	play := func(incremental bool) *BacktestResult {
		mc := backtestModel()
		noBins := 0
		mc.NumericBins = &noBins
		mc.Retrain.Incremental, mc.Retrain.Passes = incremental, 1 // with two passes, a full retrain relearns the old rows twice
		res, err := Backtest(ctx, BacktestOptions{Model: mc, World: sim.NewWorld(2), Decisions: 6000, Every: 2000})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	full, inc := play(false), play(true)
	n := 0
	for i, r := range inc.Runs {
		if r.Training == TrainedIncremental {
			n++
			if r.TrainRows >= full.Runs[i].TrainRows {
				t.Errorf("run %d: incremental learned %d rows, full %d", i, r.TrainRows, full.Runs[i].TrainRows)
			}
		}
		if r.Outcome != full.Runs[i].Outcome || r.Reason != full.Runs[i].Reason {
			t.Errorf("run %d: incremental %s (%s), full %s (%s)", i, r.Outcome, r.Reason, full.Runs[i].Outcome, full.Runs[i].Reason)
		}
	}
	a, _ := json.Marshal(full.Windows)
	b, _ := json.Marshal(inc.Windows)
	if n == 0 || string(a) != string(b) {
		t.Errorf("%d incremental runs; windows full %s, incremental %s", n, a, b)
	}
}

// Every candidate a backtest trains is scored against the world's truth on
// one fixed sample of requests: the first learned version is far better
// than the bootstrap one, a champion's value is the one it was promoted
// with, and the counts of worse promotions and better rejections are those
// of the runs.
func TestBacktestScoresTheGateAgainstTheTruth(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mc := backtestModel()
	res, err := Backtest(ctx, BacktestOptions{Model: mc, World: sim.NewShop(3), Decisions: 16000, Every: 4000, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	margin := mc.WithDefaults().Promote.Margin
	value := map[int]float64{}
	worse, beyond, better, scored := 0, 0, 0, 0
	for _, r := range res.Runs {
		t.Logf("decision %5d: %s v%d (champion v%d): true %.4f vs %.4f", r.Decision, r.Outcome, r.Version, r.Champion, r.CandidateValue, r.ChampionValue)
		if r.Outcome == Skipped {
			if r.CandidateValue != 0 {
				t.Errorf("a skipped run has a true value %v", r.CandidateValue)
			}
			continue
		}
		scored++
		if !(r.CandidateValue > 0 && r.ChampionValue > 0) {
			t.Fatalf("run at %d: true values %v and %v", r.Decision, r.CandidateValue, r.ChampionValue)
		}
		if v, ok := value[r.Champion]; ok && v != r.ChampionValue {
			t.Errorf("champion v%d valued %v, promoted with %v", r.Champion, r.ChampionValue, v)
		}
		if r.Champion == 1 {
			value[1] = r.ChampionValue
		}
		switch r.Outcome {
		case Promoted:
			value[r.Version] = r.CandidateValue
			if r.CandidateValue < r.ChampionValue {
				worse++
			}
			if r.CandidateValue < r.ChampionValue*(1-margin) {
				beyond++
			}
		case Rejected:
			if r.CandidateValue > r.ChampionValue*(1+margin) {
				better++
			}
		}
	}
	if scored < 3 {
		t.Fatalf("%d runs trained a candidate", scored)
	}
	var first BacktestRun
	for _, r := range res.Runs {
		if r.Outcome != Skipped {
			first = r
			break
		}
	}
	if first.Champion != 1 || first.CandidateValue < first.ChampionValue+0.05 {
		t.Errorf("the first candidate is worth %.4f against the bootstrap version's %.4f", first.CandidateValue, first.ChampionValue)
	}
	if res.WorsePromotions != worse || res.WorseBeyondMargin != beyond || res.BetterBeyondMarginOut != better {
		t.Errorf("counts %d, %d, %d; the runs say %d, %d, %d", res.WorsePromotions, res.WorseBeyondMargin, res.BetterBeyondMarginOut, worse, beyond, better)
	}
}

// Progressive validation (the default) judges a candidate on every example
// since its champion's cutoff and holds none out: the first run after the
// bootstrap version, whose trainer has too few examples before the cutoff
// to fit its bins on, falls back to a holdout; the later runs hold nothing
// out, and while one champion stays, each next candidate is judged on more.
// Under evidence: holdout every run is judged on its holdout.
func TestBacktestProgressiveEvidence(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := func(evidence string) []BacktestRun {
		mc := backtestModel()
		mc.Retrain.Evidence = evidence
		res, err := Backtest(ctx, BacktestOptions{Model: mc, World: sim.NewShop(3), Decisions: 20000, Every: 5000, Seed: 3})
		if err != nil {
			t.Fatal(err)
		}
		var out []BacktestRun
		for _, r := range res.Runs {
			if r.Outcome != Skipped && r.TrainRows > 0 {
				t.Logf("%s: decision %5d: %s v%d (champion v%d): trained on %d, held out %d, judged on %d; true %.3f vs %.3f: %.120s", evidence, r.Decision, r.Outcome, r.Version, r.Champion, r.TrainRows, r.HoldoutRows, r.JudgedRows, r.CandidateValue, r.ChampionValue, r.Reason)
				out = append(out, r)
			}
		}
		if len(out) < 3 {
			t.Fatalf("%s: %d runs trained a candidate; want 3 or more", evidence, len(out))
		}
		return out
	}
	prog := run(flywheel.EvidenceProgressive)
	grew := false
	for i, r := range prog {
		if r.Champion == 1 { // the bootstrap version: nothing before its cutoff
			if r.HoldoutRows == 0 || r.JudgedRows != r.HoldoutRows {
				t.Errorf("run at decision %d against the bootstrap version: held out %d, judged on %d; want judged on its holdout", r.Decision, r.HoldoutRows, r.JudgedRows)
			}
			continue
		}
		if r.HoldoutRows != 0 || r.JudgedRows == 0 {
			t.Errorf("run at decision %d: held out %d, judged on %d; want none held out, judged progressively", r.Decision, r.HoldoutRows, r.JudgedRows)
		}
		if i == 0 {
			continue
		}
		if prev := prog[i-1]; prev.Champion == r.Champion {
			if r.JudgedRows <= prev.JudgedRows {
				t.Errorf("champion v%d stayed from decision %d to %d, but the evidence went from %d to %d examples", r.Champion, prev.Decision, r.Decision, prev.JudgedRows, r.JudgedRows)
			}
			grew = true
		}
	}
	if !grew {
		t.Log("no champion stayed over two progressive runs: the growth of the evidence was not observed")
	}
	for _, r := range run(flywheel.EvidenceHoldout) {
		if r.HoldoutRows == 0 || r.JudgedRows != r.HoldoutRows {
			t.Errorf("evidence holdout: run at decision %d held out %d, judged on %d", r.Decision, r.HoldoutRows, r.JudgedRows)
		}
	}
}
