package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

// profiledRegistry is a fakeRegistry that also keeps feature profiles and
// explains versions, as *deploy.Registry does.
type profiledRegistry struct {
	*fakeRegistry
	profile func(ctx context.Context, name string, version int) (*model.FeatureProfile, error)
	explain func(ctx context.Context, name string, version, top int) (*model.Explanation, error)
}

func (r *profiledRegistry) FeatureProfile(ctx context.Context, name string, version int) (*model.FeatureProfile, error) {
	return r.profile(ctx, name, version)
}

func (r *profiledRegistry) Explain(ctx context.Context, name string, version, top int) (*model.Explanation, error) {
	return r.explain(ctx, name, version, top)
}

// trainingProfile is the profile of n decisions of a user with a segment
// (a, b or c) and an age from 20 to 59 choosing between shoes and books,
// priced 10 and 50.
func trainingProfile(n int) *model.FeatureProfile {
	p := model.NewProfiler()
	for i := 0; i < n; i++ {
		p.Add(flywheel.Features{"user": {"segment": string(rune('a' + i%3)), "age": float64(20 + i%40)}}, []flywheel.Action{
			{ID: "s", Features: flywheel.Features{"item": {"category": "shoes", "price": 10.0}}},
			{ID: "b", Features: flywheel.Features{"item": {"category": "books", "price": 50.0}}}})
	}
	return p.Profile()
}

// healthRow returns the row of feature in r.
func healthRow(t *testing.T, r featureReport, feature string) featureRow {
	t.Helper()
	for _, f := range r.Features {
		if f.Feature == feature {
			return f
		}
	}
	t.Fatalf("no row for %s in %+v", feature, r.Features)
	return featureRow{}
}

func value(p *float64) float64 {
	if p == nil {
		return -1
	}
	return *p
}

// The comparison: a live profile fed one request in healthSampleEvery
// counts presence per decision (a feature of several actions once),
// unseen categorical values and numbers outside training's range, and new
// features up to maxNewFeatures; after a whole window without traffic it
// has nothing left to show.
func TestFeatureHealthComparesWithTraining(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1700000000, 0)
	fh := newFeatureHealth(3, trainingProfile(300), t0)
	for i := 0; i < 40*healthSampleEvery; i++ {
		ctx := flywheel.Features{"user": {"age": 99.0}}
		if i%(4*healthSampleEvery) == 0 { // one sampled request in 4 has a segment, one never seen
			ctx["user"]["segment"] = "z"
		}
		if i >= healthSampleEvery { // after item^tags was added: more new features than are kept
			ctx["new"] = map[string]any{}
			for j := 0; j < maxNewFeatures+3; j++ {
				ctx["new"][fmt.Sprint("f", j)] = true
			}
		}
		fh.observe(t0.Add(time.Second), ctx, []flywheel.Action{
			{ID: "s", Features: flywheel.Features{"item": {"category": "shoes", "price": 10.0}}},
			{ID: "x", Features: flywheel.Features{"item": {"category": "toys", "price": 30.0, "tags": []any{"new"}}}}})
	}
	r := fh.report("homepage", t0.Add(2*time.Second))
	if r.Decisions != 40 || r.Version != 3 || r.Training == nil || r.Training.Examples != 300 {
		t.Fatalf("report: %+v", r)
	}
	seg := healthRow(t, r, "user^segment")
	if value(seg.Presence) != 0.25 || value(seg.TrainingPresence) != 1 || !seg.Missing || value(seg.UnseenRatio) != 1 || seg.TrainingValues != 3 {
		t.Errorf("user^segment: %+v", seg)
	}
	age := healthRow(t, r, "user^age")
	if value(age.Presence) != 1 || value(age.OutOfRangeRatio) != 1 || value(age.Min) != 99 || age.Missing {
		t.Errorf("user^age: %+v", age)
	}
	cat := healthRow(t, r, "item^category")
	if value(cat.Presence) != 1 || cat.Values != 80 || cat.UnseenValues != 40 || value(cat.UnseenRatio) != 0.5 {
		t.Errorf("item^category: %+v", cat)
	}
	price := healthRow(t, r, "item^price")
	if value(price.OutOfRangeRatio) != 0 || value(price.Min) != 10 || value(price.Max) != 30 || price.TrainingRange == nil || price.TrainingRange.Max != 50 {
		t.Errorf("item^price: %+v", price)
	}
	tags := healthRow(t, r, "item^tags")
	if !tags.New || tags.InTraining || value(tags.TrainingPresence) != 0 || value(tags.UnseenRatio) != 1 {
		t.Errorf("item^tags: %+v", tags)
	}
	if len(r.Features) != 4+maxNewFeatures || !r.NewFeaturesTruncated {
		t.Errorf("%d features, new ones truncated %v; want %d, true", len(r.Features), r.NewFeaturesTruncated, 4+maxNewFeatures)
	}
	if later := fh.report("homepage", t0.Add(healthWindow+time.Second)); later.Decisions != 0 || healthRow(t, later, "user^age").Presence != nil {
		t.Errorf("a window later: %+v", later)
	}

	none := newFeatureHealth(1, nil, t0)
	none.observe(t0, flywheel.Features{"user": {"segment": "a", "age": 5.0}}, nil)
	nr := none.report("homepage", t0)
	if row := healthRow(t, nr, "user^age"); nr.Training != nil || row.New || row.TrainingPresence != nil || row.OutOfRangeRatio != nil || value(row.Presence) != 1 {
		t.Errorf("without a training profile: %+v %+v", nr, row)
	}
}

// A swap carries the live presence over to the new version's profile (the
// product's traffic did not change), and starts again what is judged
// against training: a feature missing before the swap is still reported
// missing at once, not after another window of traffic.
func TestFeatureHealthCarriesPresenceAcrossASwap(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1700000000, 0)
	old := newFeatureHealth(3, trainingProfile(300), t0)
	for i := 0; i < 40*healthSampleEvery; i++ {
		old.observe(t0, flywheel.Features{"user": {"age": 99.0}, "extra": {"f": true}}, nil)
	}
	fh := newFeatureHealth(4, trainingProfile(500), t0)
	fh.carry(old, t0.Add(time.Second))
	r := fh.report("homepage", t0.Add(time.Second))
	if r.Decisions != 40 || r.Version != 4 || r.Training.Examples != 500 {
		t.Fatalf("report after the swap: %+v", r)
	}
	if seg := healthRow(t, r, "user^segment"); value(seg.Presence) != 0 || !seg.Missing {
		t.Errorf("user^segment, missing before the swap: %+v", seg)
	}
	if age := healthRow(t, r, "user^age"); value(age.Presence) != 1 || age.OutOfRangeRatio != nil || age.Missing {
		t.Errorf("user^age after the swap: present in every decision, nothing yet judged against the new training: %+v", age)
	}
	if f := healthRow(t, r, "extra^f"); !f.New || value(f.Presence) != 1 {
		t.Errorf("a feature new to training, carried: %+v", f)
	}
	fh.observe(t0.Add(2*time.Second), flywheel.Features{"user": {"age": 99.0}}, nil)
	if age := healthRow(t, fh.report("homepage", t0.Add(2*time.Second)), "user^age"); value(age.OutOfRangeRatio) != 1 {
		t.Errorf("user^age after traffic to the new version: %+v", age)
	}
}

// A server whose product release stops sending user^segment: the endpoint
// and the metrics show its presence fall to 0 against training's 1, once
// the window has moved past the requests that had it; values never seen in
// training are counted. A new champion starts a new live profile.
func TestServeFeatureHealth(t *testing.T) {
	t.Parallel()
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}}}.WithDefaults()
	art := mustArtifact(t, mc)
	var version atomic.Int64
	version.Store(3)
	reg := &profiledRegistry{
		fakeRegistry: &fakeRegistry{champion: func(context.Context, string) (int, []byte, error) { return int(version.Load()), art, nil }},
		profile: func(_ context.Context, name string, v int) (*model.FeatureProfile, error) {
			if v == 3 {
				return trainingProfile(500), nil
			}
			return nil, errors.New("manifest unreadable")
		}}
	var clock atomic.Int64
	clock.Store(time.Unix(1700000000, 0).UnixNano())
	prom := prometheus.NewRegistry()
	s, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": mc}, AppKeys: []Key{{Secret: appKey}}}, Options{Registry: reg, Events: &fakeEvents{}, Admin: Admin{}, Registerer: prom, Now: func() time.Time { return time.Unix(0, clock.Load()) }})

	if err != nil {
		t.Fatal(err)
	}
	if w := do(s, "GET", "/v1/models/homepage/features", appKey, ""); w.Code != 503 {
		t.Fatalf("before the first swap: %d %s", w.Code, w.Body)
	}
	s.SwapAll(context.Background())
	rank := func(n int, user, toy string) {
		t.Helper()
		for i := 0; i < n; i++ {
			body := fmt.Sprintf(`{"model": "homepage", "context": {"user": %s}, "actions": [
				{"id": "s", "features": {"item": {"category": "shoes", "price": 10}}},
				{"id": "x", "features": {"item": {"category": %q, "price": 50}}}]}`, user, toy)
			if w := do(s, "POST", "/v1/rank", appKey, body); w.Code != 200 {
				t.Fatalf("rank: %d %s", w.Code, w.Body)
			}
		}
	}
	features := func() featureReport {
		t.Helper()
		w := do(s, "GET", "/v1/models/homepage/features", appKey, "")
		if w.Code != 200 {
			t.Fatalf("features: %d %s", w.Code, w.Body)
		}
		var r featureReport
		if err := json.Unmarshal(w.Body.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	rank(100, `{"segment": "b", "age": 30}`, "books")
	if seg := healthRow(t, features(), "user^segment"); value(seg.Presence) != 1 || seg.Missing || value(seg.UnseenRatio) != 0 {
		t.Fatalf("while the release sends user^segment: %+v", seg)
	}

	clock.Add(int64(healthWindow)) // the release that stops sending it
	rank(100, `{"age": 30}`, "toys")
	r := features()
	if r.Decisions != 100/healthSampleEvery {
		t.Errorf("%d decisions sampled of 100, want %d", r.Decisions, 100/healthSampleEvery)
	}
	seg := healthRow(t, r, "user^segment")
	if value(seg.Presence) != 0 || value(seg.TrainingPresence) != 1 || !seg.Missing {
		t.Errorf("user^segment after the release: %+v", seg)
	}
	if cat := healthRow(t, r, "item^category"); value(cat.UnseenRatio) != 0.5 || cat.UnseenValues != uint64(r.Decisions) {
		t.Errorf("item^category: %+v", cat)
	}
	if age := healthRow(t, r, "user^age"); value(age.Presence) != 1 || value(age.OutOfRangeRatio) != 0 || age.Missing {
		t.Errorf("user^age: %+v", age)
	}
	for _, m := range []struct {
		name, feature string
		want          float64
	}{
		{"flywheel_feature_presence_ratio", "user^segment", 0},
		{"flywheel_feature_presence_training_ratio", "user^segment", 1},
		{"flywheel_feature_presence_ratio", "user^age", 1},
		{"flywheel_feature_unseen_value_ratio", "item^category", 0.5},
		{"flywheel_feature_out_of_range_ratio", "item^price", 0},
	} {
		if got := gaugeOf(t, prom, m.name, m.feature); got != m.want {
			t.Errorf("%s{feature=%q} = %v, want %v", m.name, m.feature, got, m.want)
		}
	}
	if w := do(s, "GET", "/metrics", "", ""); !strings.Contains(w.Body.String(), `flywheel_feature_decisions_sampled{model="homepage"} 25`) {
		t.Errorf("/metrics lacks the sampled decisions:\n%s", w.Body)
	}

	version.Store(4) // a champion whose profile cannot be read still serves
	s.SwapAll(context.Background())
	// The traffic's presence carries over the swap; nothing is compared.
	if r := features(); r.Version != 4 || r.Training != nil || r.Decisions != 100/healthSampleEvery ||
		value(healthRow(t, r, "user^age").Presence) != 1 || healthRow(t, r, "user^age").Missing {
		t.Errorf("after the swap to v4: %+v", r)
	}
	if w := do(s, "GET", "/v1/models/nope/features", appKey, ""); w.Code != 404 {
		t.Errorf("an unknown model: %d", w.Code)
	}
}

// gaugeOf returns the value of gauge name of model homepage and feature
// from reg, failing when there is none.
func gaugeOf(t *testing.T, reg *prometheus.Registry, name, feature string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["model"] == "homepage" && labels["feature"] == feature {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no %s{feature=%q}", name, feature)
	return 0
}

// BenchmarkFeatureHealthObserve is the cost per request of profiling
// requests of a context and 20 actions: one in healthSampleEvery takes the
// lock and walks the features, the others count themselves.
func BenchmarkFeatureHealthObserve(b *testing.B) {
	fh := newFeatureHealth(1, trainingProfile(300), time.Unix(1700000000, 0))
	ctx := flywheel.Features{"user": {"segment": "a", "age": 31.0, "tags": []any{"x", "y"}}}
	acts := make([]flywheel.Action, 20)
	for i := range acts {
		acts[i] = flywheel.Action{ID: fmt.Sprint(i), Features: flywheel.Features{"item": {"category": "shoes", "price": float64(i)}}}
	}
	now := time.Unix(1700000001, 0)
	b.ReportAllocs()
	for b.Loop() {
		fh.observe(now, ctx, acts)
	}
}
