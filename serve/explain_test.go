package serve

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

// GET /v1/models/{name}/explain explains the served champion, or the
// version asked for, through the registry (as `flywheel models explain`
// does), computing each version once; its parameters are checked.
func TestServeExplain(t *testing.T) {
	t.Parallel()
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker}.WithDefaults()
	art := trainedArtifact(t, mc)
	var calls atomic.Int64
	reg := &profiledRegistry{
		fakeRegistry: &fakeRegistry{champion: func(context.Context, string) (int, []byte, error) { return 7, art, nil }},
		profile:      func(context.Context, string, int) (*model.FeatureProfile, error) { return nil, nil },
		explain: func(_ context.Context, name string, v, top int) (*model.Explanation, error) {
			calls.Add(1)
			if v != 7 {
				return nil, flywheel.Errorf(flywheel.ENOTFOUND, "model %s has no version %d", name, v)
			}
			x, err := model.Explain(art, top)
			if err != nil {
				return nil, err
			}
			x.Model, x.Version = name, v
			return x, nil
		}}
	s, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": mc}, AppKeys: []Key{{Secret: appKey}}}, Options{Registry: reg, Events: &fakeEvents{}, Admin: Admin{}, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	s.SwapAll(context.Background())
	want, err := model.Explain(art, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/models/homepage/explain?top=3", "/v1/models/homepage/explain?version=7&top=3"} {
		w := do(s, "GET", path, appKey, "")
		if w.Code != 200 {
			t.Fatalf("%s: %d %s", path, w.Code, w.Body)
		}
		var x model.Explanation
		if err := json.Unmarshal(w.Body.Bytes(), &x); err != nil {
			t.Fatal(err)
		}
		if x.Model != "homepage" || x.Version != 7 || len(x.Top) != 3 || x.Top[0].Index != want.Top[0].Index || x.Top[2].Effect != want.Top[2].Effect {
			t.Fatalf("%s: %+v", path, x)
		}
	}
	if w := do(s, "GET", "/v1/models/homepage/explain", appKey, ""); w.Code != 200 || calls.Load() != 1 {
		t.Fatalf("three explanations of v7 asked the registry %d times (want 1): %d", calls.Load(), w.Code)
	}
	for _, c := range []struct {
		path string
		code int
	}{
		{"/v1/models/homepage/explain?version=3", 404},
		{"/v1/models/homepage/explain?version=-1", 400},
		{"/v1/models/homepage/explain?top=0", 400},
		{"/v1/models/homepage/explain?top=abc", 400},
		{"/v1/models/homepage/explain?top=201", 400},
		{"/v1/models/nope/explain", 404},
	} {
		if w := do(s, "GET", c.path, appKey, ""); w.Code != c.code {
			t.Errorf("%s: %d %s, want %d", c.path, w.Code, w.Body, c.code)
		}
	}
	if w := do(s, "GET", "/v1/models/homepage/explain", "", ""); w.Code != 401 {
		t.Errorf("without a key: %d", w.Code)
	}
	if w := do(mustServer(t, &fakeEvents{}, nil, nil), "GET", "/v1/models/homepage/explain", appKey, ""); w.Code != 501 {
		t.Errorf("a registry that cannot explain: %d", w.Code)
	}
}
