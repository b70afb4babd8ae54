package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-dev/flywheel"
)

// The control group is a stable share of users, served the uniform policy
// whatever version is live, answered and logged as variant "control" with
// its exact probabilities; the canary's users are others.
func TestControlGroup(t *testing.T) {
	t.Parallel()
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Exploration: flywheel.Exploration{Policy: flywheel.EpsilonGreedy, Epsilon: 0.1},
		Promote: flywheel.PromoteConfig{Control: flywheel.ControlConfig{Share: 0.2}, Canary: flywheel.CanaryConfig{Share: 0.3}}}.WithDefaults()
	champ, canary := trainedArtifact(t, mc), trainedArtifact(t, mc)
	reg := &fakeRegistry{
		champion: func(context.Context, string) (int, []byte, error) { return 4, champ, nil },
		canary:   func(context.Context, string) (int, []byte, error) { return 5, canary, nil },
	}
	ev := &fakeEvents{}
	s, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": mc}, AppKeys: []Key{{Secret: appKey}}},
		reg, ev, Admin{}, prometheus.NewRegistry(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SwapAll(context.Background())
	const users = 3000
	count := map[string]int{}
	variantOf := map[string]string{}
	for i := 0; i < 2*users; i++ {
		user := fmt.Sprint("u", i%users)
		w := do(s, "POST", "/v1/rank", appKey, `{"model": "homepage", "context": {"user": {"id": "`+user+`"}},
			"actions": [{"id": "a", "features": {"item": {"id": "a"}}}, {"id": "b", "features": {"item": {"id": "b"}}},
			            {"id": "c", "features": {"item": {"id": "c"}}}, {"id": "d", "features": {"item": {"id": "d"}}}]}`)
		if w.Code != 200 {
			t.Fatalf("rank: %d %s", w.Code, w.Body)
		}
		var resp rankResponse
		if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
		if v, ok := variantOf[user]; ok && v != resp.Variant {
			t.Fatalf("user %s served by %s, then by %s", user, v, resp.Variant)
		}
		variantOf[user] = resp.Variant
		d := ev.decisions[len(ev.decisions)-1]
		switch resp.Variant {
		case flywheel.VariantControl:
			if resp.ModelVersion != 1 || d.Version != 1 || d.Variant != flywheel.VariantControl {
				t.Fatalf("control answered version %d, logged %d %s", resp.ModelVersion, d.Version, d.Variant)
			}
			for _, p := range d.Probabilities {
				if p != 0.25 {
					t.Fatalf("control logged probabilities %v, want uniform", d.Probabilities)
				}
			}
		case flywheel.VariantCanary:
			if resp.ModelVersion != 5 {
				t.Fatalf("canary answered version %d", resp.ModelVersion)
			}
		case flywheel.VariantChampion:
			if resp.ModelVersion != 4 || d.Probabilities[0] < 0.5 {
				t.Fatalf("champion answered version %d with %v", resp.ModelVersion, d.Probabilities)
			}
		}
	}
	for _, v := range variantOf {
		count[v]++
	}
	for v, want := range map[string]float64{flywheel.VariantControl: 0.2, flywheel.VariantCanary: 0.3, flywheel.VariantChampion: 0.5} {
		got := float64(count[v]) / users
		if sd := math.Sqrt(want * (1 - want) / users); math.Abs(got-want) > 4.5*sd {
			t.Errorf("%s serves %.3f of users, want %.2f", v, got, want)
		}
	}
	t.Logf("users by variant: %v", count)
}
