package serve

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flywheel-dev/flywheel"
)

// versionRegistry is a registry of numbered artifacts whose aliases the test
// moves; it counts alias reads and artifact fetches.
type versionRegistry struct {
	mu        sync.Mutex
	artifacts map[int][]byte
	champion  int
	canary    int
	aliases   int // Alias calls
	fetches   int // artifacts handed out by Champion and Canary
}

func (r *versionRegistry) fake() *fakeRegistry {
	get := func(alias string) func(context.Context, string) (int, []byte, error) {
		return func(context.Context, string) (int, []byte, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			v := r.champion
			if alias == aliasCanary {
				v = r.canary
			}
			if v == 0 {
				if alias == aliasChampion {
					return 0, nil, flywheel.Errorf(flywheel.ENOTFOUND, "no champion")
				}
				return 0, nil, nil
			}
			r.fetches++
			return v, r.artifacts[v], nil
		}
	}
	return &fakeRegistry{champion: get(aliasChampion), canary: get(aliasCanary),
		alias: func(_ context.Context, _, alias string) (int, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.aliases++
			if alias == aliasCanary {
				return r.canary, nil
			}
			return r.champion, nil
		}}
}

func (r *versionRegistry) move(champion, canary int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.champion, r.canary = champion, canary
}

// counts returns the alias reads and artifact fetches since the last call.
func (r *versionRegistry) counts() (aliases, fetches int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	aliases, fetches = r.aliases, r.fetches
	r.aliases, r.fetches = 0, 0
	return aliases, fetches
}

// hostileArtifact is model's 79-byte, well-formed artifact of a fresh ranker
// with bits=28: decoding it allocated 1 GiB.
func hostileArtifact() []byte {
	b := []byte("FWM1")
	b = binary.LittleEndian.AppendUint16(b, 1)
	b = append(b, 0, 28, 0)
	b = append(b, make([]byte, 24+8+2+4)...)
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

func servedVersion(s *Server, name string) int { return currentVersion(s.models[name].ptr.Load()) }

// A version whose shape is not the configured one (kind, bits,
// interactions) is refused before its weights are allocated, logged and
// counted once, and not fetched again; the live version keeps serving, and
// the next good version swaps in.
func TestSwapRefusesAnotherShape(t *testing.T) {
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}}}.WithDefaults()
	other := func(f func(*flywheel.ModelConfig)) []byte {
		c := mc
		f(&c)
		return mustArtifact(t, c)
	}
	reg := &versionRegistry{artifacts: map[int][]byte{
		1: mustArtifact(t, mc),
		2: other(func(c *flywheel.ModelConfig) { c.Bits = 12 }),
		3: other(func(c *flywheel.ModelConfig) { c.Interactions = nil }),
		4: other(func(c *flywheel.ModelConfig) { c.Kind = flywheel.KindClassifier }),
		5: hostileArtifact(),
		6: other(func(c *flywheel.ModelConfig) { c.Interactions = [][]string{{"item", "user"}} }),
		7: other(func(c *flywheel.ModelConfig) {
			c.Exploration = flywheel.Exploration{Policy: flywheel.SquareCB, GammaScale: 10, GammaExponent: 0.5}
		}),
	}, champion: 1}
	var logs bytes.Buffer
	s, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": mc}, Open: true}, Options{Registry: reg.fake(), Events: &fakeEvents{}, Admin: Admin{}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})

	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if v, err := s.Swap(ctx, "homepage"); v != 1 || err != nil {
		t.Fatalf("start: v%d, %v", v, err)
	}
	refused := func() float64 { return testutil.ToFloat64(s.metrics.swaps.WithLabelValues("homepage", "refused")) }
	for v, want := range map[int]string{2: "bits 12, expected 18", 3: "interactions [], expected [[user item]]",
		4: "a classifier, expected a ranker", 5: "bits 28, expected 18", 6: "interactions [[item user]]"} {
		reg.move(v, 0)
		before := refused()
		var live int
		var err error
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		live, err = s.Swap(ctx, "homepage")
		runtime.ReadMemStats(&m1)
		if live != 1 || flywheel.ErrorCode(err) != flywheel.ECONFLICT || !strings.Contains(err.Error(), want) {
			t.Fatalf("v%d: live v%d, error %v; want v1 serving and a conflict naming %q", v, live, err, want)
		}
		if refused() != before+1 || testutil.ToFloat64(s.metrics.refused.WithLabelValues("homepage", aliasChampion)) != float64(v) {
			t.Fatalf("v%d: refusal not counted", v)
		}
		if v == 5 {
			t.Logf("the 79-byte bits=28 artifact refused by Swap for %d bytes allocated", m1.TotalAlloc-m0.TotalAlloc)
			if m1.TotalAlloc-m0.TotalAlloc > 1<<20 {
				t.Errorf("refusing the 79-byte artifact allocated %d bytes", m1.TotalAlloc-m0.TotalAlloc)
			}
		}
		reg.counts()
		for range 3 { // polls and events: the refused version is not fetched again
			s.SwapAll(ctx)
			s.OnModelEvent(ctx, flywheel.ModelEvent{Type: flywheel.EventPromoted, Model: "homepage", Alias: aliasChampion, Version: v})
		}
		if _, fetches := reg.counts(); fetches != 0 || refused() != before+1 {
			t.Fatalf("v%d refused again: %d fetches, %v refusals", v, fetches, refused()-before)
		}
		if servedVersion(s, "homepage") != 1 {
			t.Fatalf("v%d: live version %d", v, servedVersion(s, "homepage"))
		}
	}
	if !strings.Contains(logs.String(), "refused a model version") {
		t.Fatalf("no refusal logged:\n%s", logs.String())
	}
	reg.move(7, 0) // another exploration is the same shape
	if v, err := s.Swap(ctx, "homepage"); v != 7 || err != nil {
		t.Fatalf("v7: v%d, %v", v, err)
	}
	if testutil.ToFloat64(s.metrics.refused.WithLabelValues("homepage", aliasChampion)) != 0 {
		t.Fatal("refused gauge not cleared by a good version")
	}

	// A canary of another shape is refused; the champion serves everything.
	reg.move(7, 2)
	if v, err := s.Swap(ctx, "homepage"); v != 7 || err != nil {
		t.Fatalf("canary refusal broke the champion: v%d, %v", v, err)
	}
	if s.models["homepage"].canary.Load() != nil || testutil.ToFloat64(s.metrics.refused.WithLabelValues("homepage", aliasCanary)) != 2 {
		t.Fatal("a canary of another shape was loaded or not counted")
	}
}

// Model events are compared with what is served before anything is read:
// one naming the live version reads nothing, a stale one only the alias, and
// an artifact is fetched only for a version that is not here yet (a promoted
// canary is not fetched again). Polls read aliases, not artifacts.
func TestModelEventsFetchOnlyWhatChanges(t *testing.T) {
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Promote: flywheel.PromoteConfig{Canary: flywheel.CanaryConfig{Share: 0.2}}}.WithDefaults()
	art := mustArtifact(t, mc)
	reg := &versionRegistry{artifacts: map[int][]byte{1: art, 2: art, 3: art}, champion: 1}
	s, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": mc}, Open: true}, Options{Registry: reg.fake(), Events: &fakeEvents{}, Admin: Admin{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s.SwapAll(ctx)
	if _, f := reg.counts(); f != 1 || servedVersion(s, "homepage") != 1 {
		t.Fatalf("start: %d fetches, v%d", f, servedVersion(s, "homepage"))
	}
	ev := func(typ, alias string, v int) flywheel.ModelEvent {
		return flywheel.ModelEvent{Type: typ, Model: "homepage", Alias: alias, Version: v}
	}
	for _, step := range []struct {
		name              string
		champion, canary  int // the registry's aliases
		do                func()
		aliases, fetches  int
		served, canaryVer int
	}{
		{"event for the live champion", 1, 0, func() { s.OnModelEvent(ctx, ev(flywheel.EventPromoted, aliasChampion, 1)) }, 0, 0, 1, 0},
		{"registered", 1, 0, func() { s.OnModelEvent(ctx, ev(flywheel.EventRegistered, "", 2)) }, 0, 0, 1, 0},
		{"another model", 1, 0, func() {
			s.OnModelEvent(ctx, flywheel.ModelEvent{Type: flywheel.EventPromoted, Model: "ctr", Alias: aliasChampion, Version: 9})
		}, 0, 0, 1, 0},
		{"poll, nothing moved", 1, 0, func() { s.SwapAll(ctx) }, 2, 0, 1, 0},
		{"promoted v2", 2, 0, func() { s.OnModelEvent(ctx, ev(flywheel.EventPromoted, aliasChampion, 2)) }, 2, 1, 2, 0},
		{"the same event again", 2, 0, func() { s.OnModelEvent(ctx, ev(flywheel.EventPromoted, aliasChampion, 2)) }, 0, 0, 2, 0},
		{"a stale event", 2, 0, func() { s.OnModelEvent(ctx, ev(flywheel.EventPromoted, aliasChampion, 1)) }, 2, 0, 2, 0},
		{"canary ended, none running", 2, 0, func() { s.OnModelEvent(ctx, ev(flywheel.EventCanaryEnded, aliasCanary, 0)) }, 0, 0, 2, 0},
		{"canary v3 started", 2, 3, func() { s.OnModelEvent(ctx, ev(flywheel.EventCanaryStarted, aliasCanary, 3)) }, 2, 1, 2, 3},
		{"the canary event again", 2, 3, func() { s.OnModelEvent(ctx, ev(flywheel.EventCanaryStarted, aliasCanary, 3)) }, 0, 0, 2, 3},
		{"canary v3 promoted", 3, 0, func() { s.OnModelEvent(ctx, ev(flywheel.EventPromoted, aliasChampion, 3)) }, 2, 0, 3, 0},
		{"then its canary ended", 3, 0, func() { s.OnModelEvent(ctx, ev(flywheel.EventCanaryEnded, aliasCanary, 0)) }, 0, 0, 3, 0},
		{"rolled back to v2", 2, 0, func() { s.OnModelEvent(ctx, ev(flywheel.EventRolledBack, aliasChampion, 2)) }, 2, 1, 2, 0},
		{"poll after all that", 2, 0, func() { s.SwapAll(ctx) }, 2, 0, 2, 0},
	} {
		reg.move(step.champion, step.canary)
		step.do()
		a, f := reg.counts()
		if a != step.aliases || f != step.fetches || servedVersion(s, "homepage") != step.served || currentVersion(s.models["homepage"].canary.Load()) != step.canaryVer {
			t.Fatalf("%s: %d alias reads and %d fetches, serving v%d canary v%d; want %d, %d, v%d, v%d", step.name, a, f,
				servedVersion(s, "homepage"), currentVersion(s.models["homepage"].canary.Load()), step.aliases, step.fetches, step.served, step.canaryVer)
		}
	}
}
