package deploy

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/model"
)

var _ RewardReader = (*clickhouse.Rewards)(nil)

// clock is a settable time for the registry and the judge.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// served inserts n closed decisions of name's version and variant, decided
// evenly over [from, from+span), of which the first round(rate·n) got a
// reward of 1 and the rest none (default 0).
func served(t *testing.T, ctx context.Context, db testDB, name string, version int, variant string, from time.Time, span time.Duration, n int, rate float64) {
	t.Helper()
	prefix := fmt.Sprintf("%s-v%d-%s-%d-", name, version, variant, from.UnixNano())
	step := uint64(span.Milliseconds()) / uint64(n)
	err := db.conn.Exec(ctx, `INSERT INTO `+db.name+`.decisions (event_id, ts, ts_ms, model, kind, version, variant, chosen, reward_window_s, reward_default, reward_aggregate, ingested_at)
		SELECT concat(?, toString(number)), toDateTime(intDiv(? + number * ?, 1000)), ? + number * ?, ?, 'ranker', ?, ?, 'a', 1, 0, 'sum', now() FROM system.numbers LIMIT ?`,
		prefix, uint64(from.UnixMilli()), step, uint64(from.UnixMilli()), step, name, uint32(version), variant, uint64(n))
	if err != nil {
		t.Fatal(err)
	}
	k := uint64(rate*float64(n) + 0.5)
	err = db.conn.Exec(ctx, `INSERT INTO `+db.name+`.feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at)
		SELECT concat(?, toString(number)), concat('f', toString(number)), toDateTime(intDiv(? + number * ?, 1000)), ? + number * ?, 1, 'click', now() FROM system.numbers LIMIT ?`,
		prefix, uint64(from.UnixMilli()), step, uint64(from.UnixMilli()), step, k)
	if err != nil {
		t.Fatal(err)
	}
}

func register(t *testing.T, ctx context.Context, r *Registry, name string, mc flywheel.ModelConfig) int {
	t.Helper()
	m, err := model.FromConfig(mc)
	if err != nil {
		t.Fatal(err)
	}
	art, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	v, err := r.Register(ctx, name, mc.Kind, art, map[string]any{}, map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func aliases(t *testing.T, ctx context.Context, r *Registry, name string) (champ, canary int) {
	t.Helper()
	champ, err := r.Alias(ctx, name, Champion)
	if err != nil {
		t.Fatal(err)
	}
	if canary, err = r.Alias(ctx, name, Canary); err != nil {
		t.Fatal(err)
	}
	return champ, canary
}

// TestJudge runs every decision the judge makes on real ClickHouse data: a
// good canary promoted at the end of its duration, a bad one rolled back by
// the reward guardrail before it, one without data ended after three
// durations, and a new champion that does worse than the one before rolled
// back.
func TestJudge(t *testing.T) {
	r, pub, db := mustRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	clk := &clock{t: base}
	r.now = clk.now
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}},
		Promote:    flywheel.PromoteConfig{Canary: flywheel.CanaryConfig{Share: 0.3, Duration: 30 * time.Minute, MinDecisions: 200}},
		Guardrails: flywheel.Guardrails{MaxRewardDrop: 0.2}}.WithDefaults()
	names := []string{"good", "bad", "quiet", "worse"}
	models := map[string]flywheel.ModelConfig{}
	for _, n := range names {
		models[n] = mc
		if err := r.Bootstrap(ctx, n, mc); err != nil {
			t.Fatal(err)
		}
		register(t, ctx, r, n, mc)
	}
	j, err := NewJudge(JudgeOptions{Registry: r, Rewards: clickhouse.NewRewards(db.conn, db.name), Models: models, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, at time.Duration, want string) *Verdict {
		t.Helper()
		clk.set(base.Add(at))
		v, err := j.Check(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if v.Action != want {
			t.Fatalf("%s at +%s: %s (%s), want %s", name, at, v.Action, v.Reason, want)
		}
		t.Logf("%s at +%s: %s: %s", name, at, v.Action, v.Reason)
		return v
	}

	// The canaries start at base; champion v1 serves alongside.
	for _, n := range []string{"good", "bad", "quiet"} {
		if err := r.StartCanary(ctx, n, 2, "test", "test"); err != nil {
			t.Fatal(err)
		}
	}
	served(t, ctx, db, "good", 2, flywheel.VariantCanary, base.Add(time.Second), 20*time.Minute, 400, 0.50)
	served(t, ctx, db, "good", 1, flywheel.VariantChampion, base.Add(time.Second), 20*time.Minute, 900, 0.30)
	served(t, ctx, db, "bad", 2, flywheel.VariantCanary, base.Add(time.Second), 20*time.Minute, 400, 0.10)
	served(t, ctx, db, "bad", 1, flywheel.VariantChampion, base.Add(time.Second), 20*time.Minute, 900, 0.30)
	served(t, ctx, db, "quiet", 2, flywheel.VariantCanary, base.Add(time.Second), 20*time.Minute, 20, 0.50)
	served(t, ctx, db, "quiet", 1, flywheel.VariantChampion, base.Add(time.Second), 20*time.Minute, 900, 0.30)

	check("good", 25*time.Minute, ActionWaiting)
	v := check("good", 31*time.Minute, ActionPromoted)
	if v.Subject.Decisions != 400 || v.Subject.RewardRate != 0.5 || v.Reference.Decisions != 900 || v.Reference.RewardRate != 0.3 {
		t.Fatalf("good: online stats %+v vs %+v, want 400 at 0.5 vs 900 at 0.3", *v.Subject, *v.Reference)
	}
	if champ, canary := aliases(t, ctx, r, "good"); champ != 2 || canary != 0 {
		t.Fatalf("good after promotion: champion v%d canary v%d, want v2 and none", champ, canary)
	}

	check("bad", 25*time.Minute, ActionRolledBack) // before the end of its duration
	if champ, canary := aliases(t, ctx, r, "bad"); champ != 1 || canary != 0 {
		t.Fatalf("bad after the guardrail: champion v%d canary v%d, want v1 and none", champ, canary)
	}

	check("quiet", 31*time.Minute, ActionWaiting)
	check("quiet", 91*time.Minute, ActionEnded)
	if champ, canary := aliases(t, ctx, r, "quiet"); champ != 1 || canary != 0 {
		t.Fatalf("quiet: champion v%d canary v%d, want v1 and none", champ, canary)
	}

	// "worse": v1 served until base+40m, then v2 became champion and did worse.
	served(t, ctx, db, "worse", 1, flywheel.VariantChampion, base.Add(10*time.Minute), 30*time.Minute, 600, 0.40)
	clk.set(base.Add(40 * time.Minute))
	if err := r.Promote(ctx, "worse", 2, "test", "test"); err != nil {
		t.Fatal(err)
	}
	served(t, ctx, db, "worse", 2, flywheel.VariantChampion, base.Add(40*time.Minute+time.Second), 20*time.Minute, 600, 0.20)
	check("worse", 70*time.Minute, ActionRolledBack)
	if champ, _ := aliases(t, ctx, r, "worse"); champ != 1 {
		t.Fatalf("worse after the guardrail: champion v%d, want v1", champ)
	}
	check("worse", 75*time.Minute, ActionHealthy) // v1 against v2 before it: better, no flapping
	check("good", 80*time.Minute, ActionHealthy)  // v2 does better than v1 did

	// Every move was published for the serving replicas.
	pub.mu.Lock()
	defer pub.mu.Unlock()
	counts := map[string]int{}
	for _, e := range pub.events {
		counts[e.Model+" "+e.Type]++
	}
	for _, want := range []string{"good " + flywheel.EventPromoted, "good " + flywheel.EventCanaryEnded, "bad " + flywheel.EventCanaryEnded,
		"quiet " + flywheel.EventCanaryEnded, "worse " + flywheel.EventRolledBack} {
		if counts[want] == 0 {
			t.Errorf("no %q model event; got %v", want, counts)
		}
	}
}

// TestDemote takes a live canary and a live champion out of service and
// refuses a version that is not live.
func TestDemote(t *testing.T) {
	r, _, _ := mustRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker}.WithDefaults()
	if err := r.Bootstrap(ctx, "m", mc); err != nil {
		t.Fatal(err)
	}
	register(t, ctx, r, "m", mc)
	register(t, ctx, r, "m", mc)
	if err := r.Promote(ctx, "m", 2, "test", "test"); err != nil {
		t.Fatal(err)
	}
	if err := r.StartCanary(ctx, "m", 3, "test", "test"); err != nil {
		t.Fatal(err)
	}
	if err := r.Demote(ctx, "m", 3, "guardrail", "errors"); err != nil {
		t.Fatal(err)
	}
	if champ, canary := aliases(t, ctx, r, "m"); champ != 2 || canary != 0 {
		t.Fatalf("after demoting the canary: champion v%d canary v%d", champ, canary)
	}
	if err := r.Demote(ctx, "m", 2, "guardrail", "latency"); err != nil {
		t.Fatal(err)
	}
	if champ, _ := aliases(t, ctx, r, "m"); champ != 1 {
		t.Fatalf("after demoting the champion: champion v%d, want v1", champ)
	}
	if err := r.Demote(ctx, "m", 2, "guardrail", "again"); flywheel.ErrorCode(err) != flywheel.ECONFLICT {
		t.Fatalf("demoting a version that is not live: %v, want a conflict", err)
	}
}

// scored inserts n closed classifier decisions of name's version and
// variant, decided evenly over [from, from+span), each with score, of which
// the first round(rate·n) had a positive outcome.
func scored(t *testing.T, ctx context.Context, db testDB, name string, version int, variant string, from time.Time, span time.Duration, n int, score, rate float64) {
	t.Helper()
	prefix := fmt.Sprintf("%s-v%d-%s-%d-", name, version, variant, from.UnixNano())
	step := uint64(span.Milliseconds()) / uint64(n)
	err := db.conn.Exec(ctx, `INSERT INTO `+db.name+`.decisions (event_id, ts, ts_ms, model, kind, version, variant, score, reward_window_s, reward_default, reward_aggregate, ingested_at)
		SELECT concat(?, toString(number)), toDateTime(intDiv(? + number * ?, 1000)), ? + number * ?, ?, 'classifier', ?, ?, ?, 1, 0, 'max', now() FROM system.numbers LIMIT ?`,
		prefix, uint64(from.UnixMilli()), step, uint64(from.UnixMilli()), step, name, uint32(version), variant, score, uint64(n))
	if err != nil {
		t.Fatal(err)
	}
	k := uint64(rate*float64(n) + 0.5)
	err = db.conn.Exec(ctx, `INSERT INTO `+db.name+`.feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at)
		SELECT concat(?, toString(number)), concat('f', toString(number)), toDateTime(intDiv(? + number * ?, 1000)), ? + number * ?, 1, 'conversion', now() FROM system.numbers LIMIT ?`,
		prefix, uint64(from.UnixMilli()), step, uint64(from.UnixMilli()), step, k)
	if err != nil {
		t.Fatal(err)
	}
}

// A canary whose offline evidence was inconclusive (the retrain gate says so
// in its metrics) is promoted only when live traffic shows it not worse than
// the champion beyond promote.margin, while one that passed the gate is
// promoted unless it is worse; a classifier's canary is judged by the log
// loss of the scores it served.
func TestJudgeInconclusiveAndClassifierCanaries(t *testing.T) {
	r, _, db := mustRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	clk := &clock{t: base}
	r.now = clk.now
	ranker := flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}},
		Promote:    flywheel.PromoteConfig{Canary: flywheel.CanaryConfig{Share: 0.3, Duration: 30 * time.Minute, MinDecisions: 200}},
		Guardrails: flywheel.Guardrails{MaxRewardDrop: 0.2}}.WithDefaults()
	classifier := ranker
	classifier.Kind = flywheel.KindClassifier
	inconclusive := map[string]any{"gate": map[string]any{"outcome": Inconclusive}}
	models := map[string]flywheel.ModelConfig{}
	for _, m := range []struct {
		name    string
		mc      flywheel.ModelConfig
		metrics map[string]any
	}{
		{"unsure-better", ranker, inconclusive}, {"unsure-equal", ranker, inconclusive}, {"sure-equal", ranker, map[string]any{}},
		{"unsure-worse", ranker, inconclusive}, {"ctr-better", classifier, inconclusive}, {"ctr-worse", classifier, map[string]any{}},
	} {
		models[m.name] = m.mc
		if err := r.Bootstrap(ctx, m.name, m.mc); err != nil {
			t.Fatal(err)
		}
		art, err := mustArtifact(t, m.mc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Register(ctx, m.name, m.mc.Kind, art, map[string]any{}, m.metrics); err != nil {
			t.Fatal(err)
		}
		if err := r.StartCanary(ctx, m.name, 2, "retrain", "test"); err != nil {
			t.Fatal(err)
		}
	}
	at := base.Add(time.Second)
	served(t, ctx, db, "unsure-better", 2, flywheel.VariantCanary, at, 20*time.Minute, 400, 0.50)
	served(t, ctx, db, "unsure-better", 1, flywheel.VariantChampion, at, 20*time.Minute, 900, 0.30)
	served(t, ctx, db, "unsure-equal", 2, flywheel.VariantCanary, at, 20*time.Minute, 400, 0.30)
	served(t, ctx, db, "unsure-equal", 1, flywheel.VariantChampion, at, 20*time.Minute, 900, 0.30)
	served(t, ctx, db, "sure-equal", 2, flywheel.VariantCanary, at, 20*time.Minute, 400, 0.30)
	served(t, ctx, db, "sure-equal", 1, flywheel.VariantChampion, at, 20*time.Minute, 900, 0.30)
	served(t, ctx, db, "unsure-worse", 2, flywheel.VariantCanary, at, 20*time.Minute, 900, 0.25)
	served(t, ctx, db, "unsure-worse", 1, flywheel.VariantChampion, at, 20*time.Minute, 900, 0.30)
	scored(t, ctx, db, "ctr-better", 2, flywheel.VariantCanary, at, 20*time.Minute, 400, 0.3, 0.3)   // log loss 0.611
	scored(t, ctx, db, "ctr-better", 1, flywheel.VariantChampion, at, 20*time.Minute, 900, 0.5, 0.3) // ln 2
	scored(t, ctx, db, "ctr-worse", 2, flywheel.VariantCanary, at, 20*time.Minute, 400, 0.9, 0.3)    // 1.643
	scored(t, ctx, db, "ctr-worse", 1, flywheel.VariantChampion, at, 20*time.Minute, 900, 0.5, 0.3)

	j, err := NewJudge(JudgeOptions{Registry: r, Rewards: clickhouse.NewRewards(db.conn, db.name), Models: models, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		at    time.Duration
		want  string
		champ int // after the check
	}{
		{"unsure-better", 31 * time.Minute, ActionPromoted, 2},
		{"unsure-equal", 31 * time.Minute, ActionWaiting, 1}, // not shown within the margin: more time
		{"unsure-equal", 91 * time.Minute, ActionEnded, 1},   // still not, after three durations
		{"sure-equal", 31 * time.Minute, ActionPromoted, 2},  // passed the gate, and not worse online
		{"unsure-worse", 31 * time.Minute, ActionEnded, 1},
		{"ctr-worse", 25 * time.Minute, ActionRolledBack, 1}, // the guardrail, on log loss
		{"ctr-better", 31 * time.Minute, ActionPromoted, 2},
	} {
		clk.set(base.Add(tc.at))
		v, err := j.Check(ctx, tc.name)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s at +%s: %s: %s", tc.name, tc.at, v.Action, v.Reason)
		if v.Action != tc.want {
			t.Fatalf("%s at +%s: %s, want %s", tc.name, tc.at, v.Action, tc.want)
		}
		if champ, _ := aliases(t, ctx, r, tc.name); champ != tc.champ {
			t.Fatalf("%s: champion v%d, want v%d", tc.name, champ, tc.champ)
		}
	}
}

func mustArtifact(t *testing.T, mc flywheel.ModelConfig) ([]byte, error) {
	t.Helper()
	m, err := model.FromConfig(mc)
	if err != nil {
		return nil, err
	}
	return m.MarshalBinary()
}
