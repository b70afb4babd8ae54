package serve

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
)

// However many dashboards refresh, one answer serves them all for
// dashboardTTL; a bad window is refused with the field named; the UI is
// served from the binary.
func TestDashboardRoutes(t *testing.T) {
	t.Parallel()
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker}.WithDefaults()
	art := mustArtifact(t, mc)
	reg := &fakeRegistry{champion: func(context.Context, string) (int, []byte, error) { return 1, art, nil }}
	now := time.Unix(1700000000, 0)
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	s, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": mc}, Open: true}, Options{Registry: reg, Events: &fakeEvents{}, Admin: Admin{}, Now: func() time.Time { return time.Unix(0, clock.Load()) }})

	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	s.SetInsights(Insights{Dashboard: func(_ context.Context, name string, window time.Duration) (any, error) {
		calls.Add(1)
		return map[string]any{"model": name, "window": window.String()}, nil
	}})
	s.SwapAll(context.Background())
	for i := 0; i < 5; i++ {
		if w := do(s, "GET", "/v1/models/homepage/dashboard?window=15m", "", ""); w.Code != 200 || !strings.Contains(w.Body.String(), `"window":"15m0s"`) {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("5 refreshes within %v computed the figures %d times, want 1", dashboardTTL, n)
	}
	clock.Add(int64(dashboardTTL))
	do(s, "GET", "/v1/models/homepage/dashboard?window=15m", "", "")
	if n := calls.Load(); n != 2 {
		t.Fatalf("after %v: %d computations, want 2", dashboardTTL, n)
	}
	if w := do(s, "GET", "/v1/models/homepage/dashboard?window=2s", "", ""); w.Code != 400 || !strings.Contains(w.Body.String(), "window") {
		t.Fatalf("a 2s window: %d %s", w.Code, w.Body)
	}
	if w := do(s, "GET", "/ui/", "", ""); w.Code != 200 || !strings.Contains(w.Body.String(), "<title>Flywheel</title>") {
		t.Fatalf("/ui/: %d", w.Code)
	}
	if w := do(s, "GET", "/ui/app.js", "", ""); w.Code != 200 || !strings.Contains(w.Header().Get("Content-Type"), "javascript") {
		t.Fatalf("/ui/app.js: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
}
