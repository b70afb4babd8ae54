package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
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
	s, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": mc}, AppKeys: []Key{{Secret: appKey}}}, Options{Registry: reg, Events: ev, Admin: Admin{}, Registerer: prometheus.NewRegistry()})

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

// A control group whose baseline is "version N" is served by registry
// version N of the model, whatever the champion: answered and logged as
// version N, variant control, with the exact probabilities of that
// version's policy.
func TestControlGroupOfAVersion(t *testing.T) {
	t.Parallel()
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Exploration: flywheel.Exploration{Policy: flywheel.EpsilonGreedy, Epsilon: 0.1}}.WithDefaults()
	versions := map[int][]byte{
		1: mustArtifact(t, mc),                              // learned nothing
		2: trainedFor(t, mc, []float64{0.8, 0.5, 0.3, 0.1}), // a first
		3: trainedFor(t, mc, []float64{0.1, 0.3, 0.5, 0.8}), // d first: the champion
		4: mustArtifact(t, flywheel.ModelConfig{Kind: flywheel.KindClassifier}.WithDefaults()),
	}
	actions := `[{"id": "a", "features": {"item": {"id": "a"}}}, {"id": "b", "features": {"item": {"id": "b"}}},
		{"id": "c", "features": {"item": {"id": "c"}}}, {"id": "d", "features": {"item": {"id": "d"}}}]`
	var acts []flywheel.Action
	if err := json.Unmarshal([]byte(actions), &acts); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprint("version ", n), func(t *testing.T) {
			t.Parallel()
			c := mc
			c.Promote.Control = flywheel.ControlConfig{Share: 0.3, Policy: fmt.Sprint("version ", n)}
			reg := &fakeRegistry{champion: func(context.Context, string) (int, []byte, error) { return 3, versions[3], nil }, versions: versions}
			ev := &fakeEvents{}
			s, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": c}, AppKeys: []Key{{Secret: appKey}}}, Options{Registry: reg, Events: ev, Admin: Admin{}, Registerer: prometheus.NewRegistry()})

			if err != nil {
				t.Fatal(err)
			}
			if err := s.LoadControls(context.Background()); err != nil {
				t.Fatal(err)
			}
			s.SwapAll(context.Background())
			baseline, err := model.Decode(versions[n])
			if err != nil {
				t.Fatal(err)
			}
			served := map[string]int{}
			for i := range 400 {
				w := do(s, "POST", "/v1/rank", appKey, fmt.Sprintf(`{"model": "homepage", "context": {"user": {"id": "u%d"}}, "actions": %s}`, i, actions))
				if w.Code != 200 {
					t.Fatalf("rank: %d %s", w.Code, w.Body)
				}
				var resp rankResponse
				if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
					t.Fatal(err)
				}
				d := ev.decisions[len(ev.decisions)-1]
				served[fmt.Sprintf("%s v%d", resp.Variant, resp.ModelVersion)]++
				if resp.Variant != flywheel.VariantControl {
					continue
				}
				var want model.Ranking
				rec, err := d.Record()
				if err != nil {
					t.Fatal(err)
				}
				var ctx flywheel.Features
				if err := json.Unmarshal(rec.Context, &ctx); err != nil || ctx["user"]["id"] != fmt.Sprintf("u%d", i) {
					t.Fatalf("logged context %s: %v", rec.Context, err)
				}
				if err := baseline.Rank(d.EventID, ctx, acts, &want); err != nil {
					t.Fatal(err)
				}
				if d.Version != n || d.Variant != flywheel.VariantControl || !slices.Equal(d.Probabilities, want.Probabilities) || d.ChosenIndex != want.Chosen {
					t.Fatalf("control logged version %d %s, probabilities %v, chosen %d; version %d gives %v, chosen %d",
						d.Version, d.Variant, d.Probabilities, d.ChosenIndex, n, want.Probabilities, want.Chosen)
				}
			}
			if len(served) != 2 || served[fmt.Sprintf("control v%d", n)] < 60 || served["champion v3"] < 200 {
				t.Fatalf("served %v, want about 30%% control v%d and the rest champion v3", served, n)
			}
			t.Logf("served %v", served)
		})
	}
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			policy, code, want string
		}{
			{"version 5", flywheel.ENOTFOUND, `models.homepage.promote.control.policy "version 5": flywheel error: code=not_found message=model homepage has no version 5`},
			{"version 4", flywheel.EINVALID, `models.homepage.promote.control.policy "version 4": version 4 is not a ranker of the configured shape`},
		} {
			c := mc
			c.Promote.Control = flywheel.ControlConfig{Share: 0.1, Policy: tc.policy}
			reg := &fakeRegistry{champion: func(context.Context, string) (int, []byte, error) { return 3, versions[3], nil }, versions: versions}
			s, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": c}, AppKeys: []Key{{Secret: appKey}}}, Options{Registry: reg, Events: &fakeEvents{}, Admin: Admin{}, Registerer: prometheus.NewRegistry()})

			if err != nil {
				t.Fatal(err)
			}
			if err := s.LoadControls(context.Background()); err == nil || flywheel.ErrorCode(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: LoadControls returned %v, want a %s error containing %q", tc.policy, err, tc.code, tc.want)
			}
		}
		// A registry that cannot fetch a version is refused up front.
		c := mc
		c.Promote.Control = flywheel.ControlConfig{Share: 0.1, Policy: "version 2"}
		reg := struct{ Registry }{&fakeRegistry{champion: func(context.Context, string) (int, []byte, error) { return 3, versions[3], nil }}}
		_, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": c}, AppKeys: []Key{{Secret: appKey}}}, Options{Registry: reg, Events: &fakeEvents{}, Admin: Admin{}, Registerer: prometheus.NewRegistry()})

		if err == nil || !strings.Contains(err.Error(), `models.homepage.promote.control.policy "version 2"`) {
			t.Errorf("New with a registry that cannot fetch versions: %v", err)
		}
	})
}
