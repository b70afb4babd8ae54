package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/deploy"
	"github.com/flywheel-dev/flywheel/internal/testenv"
	"github.com/flywheel-dev/flywheel/kafka"
	"github.com/flywheel-dev/flywheel/model"
	"github.com/flywheel-dev/flywheel/retrain"
	"github.com/flywheel-dev/flywheel/sim"
)

const (
	e2eAppKey   = "e2e-app-key-0123456789"
	e2eAdminKey = "e2e-admin-key-0123456789"
)

// replicaState is what one serving replica serves.
type replicaState struct{ live, canary int }

// observer polls serving replicas and the model-events topic and records
// every change of what each replica serves and when each event arrived.
type observer struct {
	mu     sync.Mutex
	moves  map[string][]observedState // replica url → its changes, in order
	events []observedEvent
}

type observedState struct {
	at time.Time
	st replicaState
}

type observedEvent struct {
	at time.Time
	e  flywheel.ModelEvent
}

func (o *observer) poll(ctx context.Context, urls []string) {
	for ctx.Err() == nil {
		for _, u := range urls {
			st, ok := servedState(u)
			if !ok {
				continue
			}
			o.mu.Lock()
			if m := o.moves[u]; len(m) == 0 || m[len(m)-1].st != st {
				o.moves[u] = append(m, observedState{time.Now(), st})
			}
			o.mu.Unlock()
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func servedState(url string) (replicaState, bool) {
	req, _ := http.NewRequest(http.MethodGet, url+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer "+e2eAppKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return replicaState{}, false
	}
	defer resp.Body.Close()
	var out struct {
		Models []struct {
			Name    string `json:"name"`
			Version int    `json:"live_version"`
			Canary  int    `json:"canary_version"`
		} `json:"models"`
	}
	if json.NewDecoder(resp.Body).Decode(&out) != nil {
		return replicaState{}, false
	}
	for _, m := range out.Models {
		if m.Name == "homepage" {
			return replicaState{m.Version, m.Canary}, true
		}
	}
	return replicaState{}, false
}

// converged waits until every replica has moved to st since the time given
// and returns how long after the model event of type typ for version (the
// first one since then) the slowest replica got there.
func (o *observer) converged(t *testing.T, ctx context.Context, urls []string, since time.Time, st replicaState, typ string, version int) time.Duration {
	t.Helper()
	var lag time.Duration
	waitFor(t, ctx, fmt.Sprintf("every replica to serve %+v", st), func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		var ev time.Time
		for _, e := range o.events {
			if e.at.After(since) && e.e.Type == typ && e.e.Version == version {
				ev = e.at
				break
			}
		}
		if ev.IsZero() {
			return false
		}
		lag = 0
		for _, u := range urls {
			var at time.Time
			for _, m := range o.moves[u] {
				if m.st == st && m.at.After(since) {
					at = m.at
					break
				}
			}
			if at.IsZero() {
				return false
			}
			lag = max(lag, at.Sub(ev))
		}
		return true
	})
	return lag
}

// drive sends simulated traffic to the replicas in turn, in rounds of n
// events, until done says so.
func drive(t *testing.T, ctx context.Context, urls []string, n int, done func() bool) (rounds []*sim.Result) {
	t.Helper()
	for i := 0; !done(); i++ {
		if ctx.Err() != nil {
			t.Fatalf("timed out driving traffic after %d rounds", i)
		}
		res, err := sim.Run(ctx, sim.Config{URL: urls[i%len(urls)], Events: n, Concurrency: 4, Seed: 7, APIKey: e2eAppKey})
		if err != nil {
			t.Fatal(err)
		}
		if res.Errors != 0 {
			t.Fatalf("round %d: %d failed requests, the first: %s", i, res.Errors, res.FirstError)
		}
		rounds = append(rounds, res)
	}
	return rounds
}

// TestDeployCanaryGuardrailAndReplicas runs `flywheel dev` and a second
// serving replica (`flywheel serve`) on the real broker and server and
// checks, with the simulator driving both: a good candidate goes canary →
// champion on its own; a candidate with its weights negated is rejected by
// the gate, and when forced into canary it is rolled back by the reward
// guardrail while the champion keeps serving every request; both replicas
// follow every move within a second of its model event; a rollback serves
// the previous version's exact artifact.
func TestDeployCanaryGuardrailAndReplicas(t *testing.T) {
	kafkaAddr, chAddr := services(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	suffix := time.Now().UnixNano()
	db := fmt.Sprintf("deploy_%d", suffix)
	addrA, addrB := testenv.FreeAddr(t), testenv.FreeAddr(t)
	urls := []string{"http://" + addrA, "http://" + addrB}
	cfgText := fmt.Sprintf(`
kafka: {brokers: [%q], topic_prefix: "deploy%d.", partitions: 4}
clickhouse: {dsn: "clickhouse://%s/%s"}
auth: {app_keys: [%q], admin_keys: [%q]}
ingest: {batch_wait: 200ms}
serve: {poll_interval: 1m, guard_interval: 1s}
deploy: {check_interval: 500ms}
models:
  homepage:
    kind: ranker
    interactions: [[user, item]]
    exploration: {policy: epsilon-greedy, epsilon: 0.1}
    reward: {window: 1s, default: 0, aggregate: sum}
    retrain: {schedule: "@every 2s", window: 1h, holdout: 0.3, min_new_examples: 1000, passes: 2}
    promote:
      policy: auto
      estimator: snips
      rule: superior               # only clearly better candidates: the loop stays quiet while the test forces a bad canary
      min_improvement: 0.05
      canary: {share: 0.5, duration: 4s, min_decisions: 150}
    guardrails: {max_reward_drop: 0.3}
`, kafkaAddr, suffix, chAddr, db, e2eAppKey, e2eAdminKey)
	cfgPath := filepath.Join(t.TempDir(), "flywheel.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(cfgPath, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	mc := cfg.Models["homepage"]

	// Watch model events from the start, as the replicas do.
	obs := &observer{moves: map[string][]observedState{}}
	if err := kafka.EnsureTopics(ctx, cfg.Kafka); err != nil {
		t.Fatal(err)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go deploy.Watch(watchCtx, cfg.Kafka, nil, func(e flywheel.ModelEvent) {
		obs.mu.Lock()
		obs.events = append(obs.events, observedEvent{time.Now(), e})
		obs.mu.Unlock()
	})

	defer inProcess(t, ctx, "flywheel dev", "dev", "--config", cfgPath, "--addr", addrA)()
	waitReady(t, ctx, urls[0])
	defer inProcess(t, ctx, "flywheel serve", "serve", "--config", cfgPath, "--addr", addrB)()
	waitReady(t, ctx, urls[1])
	go obs.poll(watchCtx, urls)

	conn := testDB(t, ctx, chAddr, db)
	reg, err := deploy.NewRegistry(clickhouse.NewRegistry(conn, db), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	aliases := func() (champ, canary int) {
		champ, _ = reg.Alias(ctx, "homepage", deploy.Champion)
		canary, _ = reg.Alias(ctx, "homepage", deploy.Canary)
		return champ, canary
	}

	// 1. A good candidate: v1 is uniformly random; retraining finds a better
	// one, which starts as a canary and becomes champion on its own.
	start := time.Now()
	first := drive(t, ctx, urls, 2000, func() bool { _, c := aliases(); return c >= 2 })
	_, good := aliases()
	canaryAt := time.Since(start)
	lag := obs.converged(t, ctx, urls, start, replicaState{1, good}, flywheel.EventCanaryStarted, good)
	t.Logf("good candidate v%d became the canary %.1fs after traffic began (%d rounds); both replicas served it %.0f ms after the event",
		good, canaryAt.Seconds(), len(first), lag.Seconds()*1000)
	if lag > time.Second {
		t.Errorf("a replica took %v to start the canary", lag)
	}
	canaryStart := time.Now()
	during := drive(t, ctx, urls, 500, func() bool { c, _ := aliases(); return c == good })
	lag = obs.converged(t, ctx, urls, start, replicaState{good, 0}, flywheel.EventPromoted, good)
	t.Logf("canary v%d promoted by the judge %.1fs after it started (%d rounds of 500); both replicas served it %.0f ms after the event",
		good, time.Since(canaryStart).Seconds(), len(during), lag.Seconds()*1000)
	if lag > time.Second {
		t.Errorf("a replica took %v to serve the promoted version", lag)
	}
	hist, err := reg.History(ctx, "homepage")
	if err != nil {
		t.Fatal(err)
	}
	if hist[0].Alias != deploy.Canary || hist[1].Alias != deploy.Champion || hist[1].Version != good || hist[1].Actor != "canary" {
		t.Fatalf("the last moves are not the judge's promotion: %+v", hist[:2])
	}
	t.Logf("judge: %s", hist[1].Reason)
	var byVariant = map[string]sim.VersionResult{}
	for _, r := range during {
		for _, v := range r.Versions {
			acc := byVariant[fmt.Sprint(v.Version)]
			acc.Version = v.Version
			acc.RewardRate = (acc.RewardRate*float64(acc.Decisions) + v.RewardRate*float64(v.Decisions)) / float64(acc.Decisions+v.Decisions)
			acc.Decisions += v.Decisions
			byVariant[fmt.Sprint(v.Version)] = acc
		}
	}
	t.Logf("while the canary ran, as the simulator saw it: %+v", byVariant)

	// 2. A bad candidate: the champion with its weights negated. The gate
	// rejects it on the logged data.
	v, err := reg.Get(ctx, "homepage", good)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Decode(v.Artifact)
	if err != nil {
		t.Fatal(err)
	}
	neg := m.Clone()
	for i, w := range neg.Weights() {
		neg.Weights()[i] = -w
	}
	negArt, err := neg.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	bad, err := reg.Register(ctx, "homepage", flywheel.KindRanker, negArt, map[string]any{"test": "weights of v" + fmt.Sprint(good) + " negated"}, map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := retrain.New(retrain.Options{Models: cfg.Models, Store: clickhouse.NewTraining(conn, db), Registry: reg, CodeVersion: "test", Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := rt.Evaluate(ctx, "homepage", bad, time.Now().Add(-time.Hour), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, rule := range []string{flywheel.RuleNonInferior, flywheel.RuleSuperior} { // the default rule, and this test's
		gmc := mc
		gmc.Promote.Rule = rule
		outcome, reason := retrain.Gate(gmc, rep.Comparison, rep.Champion)
		t.Logf("%s gate on v%d (negated v%d) over %d examples: %s: %s", rule, bad, good, rep.Examples, outcome, reason)
		if outcome != retrain.Rejected {
			t.Fatalf("the %s gate let the negated model through: %s", rule, reason)
		}
	}

	// Forced into canary through the admin API of the second replica, it is
	// rolled back by the reward guardrail; the champion serves throughout.
	forced := time.Now()
	code, body, err := postJSON(urls[1]+"/v1/models/homepage/canary", e2eAdminKey, map[string]any{"version": bad, "reason": "test: forcing a bad canary"})
	if err != nil || code != http.StatusOK {
		t.Fatalf("forcing the canary: %d %s %v", code, body, err)
	}
	lag = obs.converged(t, ctx, urls, forced, replicaState{good, bad}, flywheel.EventCanaryStarted, bad)
	t.Logf("forced canary v%d served by both replicas %.0f ms after its event", bad, lag.Seconds()*1000)
	if lag > time.Second {
		t.Errorf("a replica took %v to start the forced canary", lag)
	}
	badRounds := drive(t, ctx, urls, 500, func() bool { _, c := aliases(); return c == 0 })
	lag = obs.converged(t, ctx, urls, forced, replicaState{good, 0}, flywheel.EventCanaryEnded, 0)
	hist, _ = reg.History(ctx, "homepage")
	t.Logf("bad canary ended %.1fs after it was forced (%d rounds of 500); replicas back on v%d alone %.0f ms after the event; %s: %s",
		time.Since(forced).Seconds(), len(badRounds), good, lag.Seconds()*1000, hist[0].Actor, hist[0].Reason)
	if hist[0].Actor != "guardrail" || !strings.Contains(hist[0].Reason, "max_reward_drop") {
		t.Fatalf("the bad canary was not ended by the reward guardrail: %+v", hist[0])
	}
	if champ, _ := aliases(); champ != good {
		t.Fatalf("champion is v%d after the bad canary, want v%d", champ, good)
	}
	for _, r := range badRounds {
		for _, v := range r.Versions {
			if v.Version != good && v.Version != bad {
				t.Fatalf("version %d served during the bad canary", v.Version)
			}
		}
	}

	// 3. A manual rollback through the API serves v1's exact artifact again
	// on both replicas.
	rolled := time.Now()
	code, body, err = postJSON(urls[0]+"/v1/models/homepage/rollback", e2eAdminKey, map[string]any{})
	if err != nil || code != http.StatusOK {
		t.Fatalf("rollback: %d %s %v", code, body, err)
	}
	lag = obs.converged(t, ctx, urls, rolled, replicaState{1, 0}, flywheel.EventRolledBack, 1)
	t.Logf("rollback to v1 served by both replicas %.0f ms after its event", lag.Seconds()*1000)
	if lag > time.Second {
		t.Errorf("a replica took %v to roll back", lag)
	}
	v1, err := reg.Get(ctx, "homepage", 1)
	if err != nil {
		t.Fatal(err)
	}
	_, art, err := reg.Champion(ctx, "homepage")
	if err != nil || string(art) != string(v1.Artifact) {
		t.Fatalf("the rolled-back champion's artifact differs from v1's (%v)", err)
	}
}
