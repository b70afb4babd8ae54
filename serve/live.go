package serve

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

// live is one loaded version of one model. It is read-only once stored.
type live struct {
	version  int
	model    *model.Model
	loadedAt time.Time
	win      atomic.Pointer[window] // requests since the last guardrail check
	// replaced is set when this version replaced another one here (not at
	// start-up): only then is a champion watched by the guardrails.
	replaced bool
}

func newLive(version int, m *model.Model, at time.Time, replaced bool) *live {
	l := &live{version: version, model: m, loadedAt: at, replaced: replaced}
	l.win.Store(&window{})
	return l
}

// holder is the live model of one name: its champion and, while a canary
// runs, the canary.
type holder struct {
	name   string
	cfg    flywheel.ModelConfig
	ptr    atomic.Pointer[live]
	canary atomic.Pointer[live]
	mu     sync.Mutex // serialises swaps of this name; readers never take it
}

// Swap loads the champion of name from the registry if it differs from the
// live version: it is decoded, checked and warmed up here, off the request
// path, then stored. It is the one function every reload trigger (model
// event, poll, start-up) goes through, and records the outcome in metrics.
// It returns the live version after the call.
func (s *Server) Swap(ctx context.Context, name string) (int, error) {
	h, ok := s.models[name]
	if !ok {
		return 0, flywheel.Errorf(flywheel.ENOTFOUND, "model %s is not configured here", name)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	start := time.Now()
	cur := h.ptr.Load()
	v, artifact, err := s.registry.Champion(ctx, name)
	if err != nil {
		s.metrics.swaps.WithLabelValues(name, "error").Inc()
		return currentVersion(cur), fmt.Errorf("look up champion of %s: %w", name, err)
	}
	s.swapCanary(ctx, h)
	if cur != nil && cur.version == v {
		return v, nil
	}
	m, err := model.Decode(artifact)
	if err != nil {
		s.metrics.swaps.WithLabelValues(name, "refused").Inc()
		s.log.Error("refused a model version; the live one keeps serving", "model", name, "version", v, "live", currentVersion(cur), "err", err)
		return currentVersion(cur), fmt.Errorf("decode %s v%d: %w", name, v, err)
	}
	if m.Config().Kind != h.cfg.Kind {
		s.metrics.swaps.WithLabelValues(name, "refused").Inc()
		return currentVersion(cur), fmt.Errorf("%s v%d is a %s, configured as a %s", name, v, m.Config().Kind, h.cfg.Kind)
	}
	warmUp(m)
	h.ptr.Store(newLive(v, m, s.now(), cur != nil))
	s.metrics.swaps.WithLabelValues(name, "swapped").Inc()
	s.metrics.swapSeconds.WithLabelValues(name).Observe(time.Since(start).Seconds())
	s.metrics.version.WithLabelValues(name).Set(float64(v))
	s.log.Info("model swapped in", "model", name, "version", v, "previous", currentVersion(cur), "took", time.Since(start))
	return v, nil
}

// swapCanary loads the canary of h if it changed, or drops it when the
// canary ended. Errors are logged; the champion keeps serving all traffic.
func (s *Server) swapCanary(ctx context.Context, h *holder) {
	cur := h.canary.Load()
	v, artifact, err := s.registry.Canary(ctx, h.name)
	if err != nil {
		s.log.Warn("look up canary failed", "model", h.name, "err", err)
		return
	}
	if v == 0 {
		if cur != nil {
			h.canary.Store(nil)
			s.log.Info("canary ended", "model", h.name, "version", cur.version)
		}
		return
	}
	if cur != nil && cur.version == v {
		return
	}
	m, err := model.Decode(artifact)
	if err != nil || m.Config().Kind != h.cfg.Kind {
		s.metrics.swaps.WithLabelValues(h.name, "refused").Inc()
		s.log.Error("refused a canary version", "model", h.name, "version", v, "err", err)
		return
	}
	warmUp(m)
	h.canary.Store(newLive(v, m, s.now(), true))
	s.metrics.swaps.WithLabelValues(h.name, "swapped").Inc()
	s.log.Info("canary swapped in", "model", h.name, "version", v, "share", h.cfg.Promote.Canary.Share)
}

func currentVersion(l *live) int {
	if l == nil {
		return 0
	}
	return l.version
}

// warmUp runs the model once so that its pages are touched before the first
// real request.
func warmUp(m *model.Model) {
	ctx := flywheel.Features{"warmup": {"x": "y"}}
	if m.Config().Kind == flywheel.KindRanker {
		var r model.Ranking
		_ = m.Rank("warmup", ctx, []flywheel.Action{{ID: "a"}, {ID: "b"}}, &r)
		return
	}
	_ = m.Predict(ctx)
}

// SwapAll swaps every configured model; errors are logged.
func (s *Server) SwapAll(ctx context.Context) {
	for name := range s.models {
		if _, err := s.Swap(ctx, name); err != nil {
			s.log.Warn("model swap failed", "model", name, "err", err)
		}
	}
}

// Ready reports whether every configured model is loaded.
func (s *Server) Ready() bool {
	for _, h := range s.models {
		if h.ptr.Load() == nil {
			return false
		}
	}
	return true
}
