package serve

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
)

func TestWindowP99(t *testing.T) {
	t.Parallel()
	var w window
	for i := 0; i < 990; i++ {
		w.record(false, time.Millisecond)
	}
	for i := 0; i < 10; i++ {
		w.record(true, 200*time.Millisecond)
	}
	if p := w.p99(); p < time.Millisecond || p > 1415*time.Microsecond {
		t.Fatalf("p99 of 990 × 1ms and 10 × 200ms: %v, want within one bucket above 1ms", p)
	}
	w.record(false, 200*time.Millisecond)
	if p := w.p99(); p < 200*time.Millisecond || p > 283*time.Millisecond {
		t.Fatalf("p99 with 11 of 1001 at 200ms: %v, want within one bucket above 200ms", p)
	}
	g := flywheel.Guardrails{MaxErrorRate: 0.02, MaxP99Ms: 500, MinRequests: 2000}
	if why := breach(g, &w); why != "" {
		t.Fatalf("fewer requests than min_requests breached: %s", why)
	}
	g.MinRequests = 100
	if why := breach(g, &w); why != "" {
		t.Fatalf("1%% errors against a 2%% bound breached: %s", why)
	}
	g.MaxErrorRate = 0.005
	if why := breach(g, &w); !strings.Contains(why, "max_error_rate") {
		t.Fatalf("1%% errors against a 0.5%% bound: %q", why)
	}
}

// versionEvents fails or delays the decisions of one version, as a broken
// or slow model version would.
type versionEvents struct {
	fakeEvents
	bad   int
	fail  bool
	delay time.Duration
}

func (v *versionEvents) LogDecision(ctx context.Context, d *flywheel.Decision) error {
	if d.Version == v.bad {
		time.Sleep(v.delay)
		if v.fail {
			return errors.New("scoring failed")
		}
	}
	return v.fakeEvents.LogDecision(ctx, d)
}

// TestGuardrailsDemoteABadCanary sends traffic to a champion and a canary
// whose requests fail (or are slow), and checks that the guardrail check
// demotes the canary, only it, with the reason, and that the champion then
// serves everyone.
func TestGuardrailsDemoteABadCanary(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		events *versionEvents
		guard  flywheel.Guardrails
		want   string
	}{
		{"errors", &versionEvents{bad: 2, fail: true}, flywheel.Guardrails{MaxErrorRate: 0.05, MinRequests: 20}, "max_error_rate"},
		{"latency", &versionEvents{bad: 2, delay: 30 * time.Millisecond}, flywheel.Guardrails{MaxP99Ms: 20, MinRequests: 20}, "max_p99_ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Guardrails: tc.guard,
				Promote: flywheel.PromoteConfig{Canary: flywheel.CanaryConfig{Share: 0.5}}}.WithDefaults()
			art := mustArtifact(t, mc)
			var mu sync.Mutex
			canary := 2
			var demoted []string
			reg := &fakeRegistry{
				champion: func(context.Context, string) (int, []byte, error) { return 1, art, nil },
				canary: func(context.Context, string) (int, []byte, error) {
					mu.Lock()
					defer mu.Unlock()
					if canary == 0 {
						return 0, nil, nil
					}
					return canary, art, nil
				},
			}
			admin := Admin{Demote: func(_ context.Context, name string, version int, actor, reason string) error {
				mu.Lock()
				defer mu.Unlock()
				demoted = append(demoted, fmt.Sprintf("%s v%d by %s: %s", name, version, actor, reason))
				if version == canary {
					canary = 0
				}
				return nil
			}}
			s, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": mc}, Open: true}, Options{Registry: reg, Events: tc.events, Admin: admin})
			if err != nil {
				t.Fatal(err)
			}
			s.SwapAll(context.Background())
			codes := map[string]int{}
			for u := 0; u < 80; u++ {
				w := do(s, "POST", "/v1/rank", "", fmt.Sprintf(`{"model": "homepage", "context": {"user": {"id": "u%d"}}, "actions": [{"id": "a"}, {"id": "b"}]}`, u))
				codes[fmt.Sprint(w.Code)]++
			}
			s.checkGuardrails(context.Background())
			mu.Lock()
			got := append([]string(nil), demoted...)
			mu.Unlock()
			if len(got) != 1 || !strings.HasPrefix(got[0], "homepage v2 by guardrail") || !strings.Contains(got[0], tc.want) {
				t.Fatalf("answers %v; demotions %q, want one of v2 naming %s", codes, got, tc.want)
			}
			t.Logf("answers %v; %s", codes, got[0])
			if s.models["homepage"].canary.Load() != nil {
				t.Fatal("the demoted canary still serves")
			}
			for u := 0; u < 20; u++ {
				if w := do(s, "POST", "/v1/rank", "", fmt.Sprintf(`{"model": "homepage", "context": {"user": {"id": "u%d"}}, "actions": [{"id": "a"}]}`, u)); w.Code != 200 || !strings.Contains(w.Body.String(), `"model_version":1`) {
					t.Fatalf("after the demotion: %d %s", w.Code, w.Body)
				}
			}
			s.checkGuardrails(context.Background()) // the champion, loaded at start, is not watched
			mu.Lock()
			defer mu.Unlock()
			if len(demoted) != 1 {
				t.Fatalf("demotions after the second check: %q", demoted)
			}
		})
	}
}
