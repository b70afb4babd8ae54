package serve

import (
	"context"
	"errors"
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

// The registry aliases serving follows (deploy.Champion, deploy.Canary).
const (
	aliasChampion = "champion"
	aliasCanary   = "canary"
)

// holder is the live model of one name: its champion and, while a canary
// runs, the canary.
type holder struct {
	name   string
	cfg    flywheel.ModelConfig
	ptr    atomic.Pointer[live]
	canary atomic.Pointer[live]
	// health is the live feature profile while the champion in ptr
	// serves (health.go); replaced with it.
	health atomic.Pointer[featureHealth]
	// control is the control group's baseline (promote.control), nil
	// without one; set once, in New or, for a version, LoadControls.
	control *live
	mu      sync.Mutex // serialises swaps of this name; readers never take it
	// refused is, per alias, the last version this replica refused to load
	// and why (guarded by mu): versions are immutable, so it is not fetched
	// again unless its alias moves away and back after a restart.
	refused map[string]refusal
}

type refusal struct {
	version int
	err     error
}

// shape is the model shape the configuration fixes: a version of another
// kind, bits or interactions is refused before its weights are allocated.
func (h *holder) shape() model.Config {
	return model.Config{Kind: h.cfg.Kind, Bits: h.cfg.Bits, Interactions: h.cfg.InteractionPairs()}
}

// unchangedBy reports whether model event e changes nothing here: it moves an
// alias to the version this replica already serves under that alias (or
// ends a canary that is not running). Such an event needs no registry read.
func (h *holder) unchangedBy(e flywheel.ModelEvent) bool {
	switch e.Alias {
	case aliasChampion:
		return e.Version != 0 && e.Version == currentVersion(h.ptr.Load())
	case aliasCanary:
		return e.Version == currentVersion(h.canary.Load())
	}
	return false
}

// Swap loads the champion of name from the registry if it differs from the
// live version: it reads which version the alias points at first, and
// fetches the artifact only when that version is neither live nor already
// refused (a promoted canary is reused without a fetch). A new version is
// decoded, checked against the configured shape (kind, bits, interactions)
// and warmed up here, off the request path, then stored; a refused one is
// logged once and counted, and the live one keeps serving. It is the one
// function every reload trigger (model event, poll, start-up) goes through,
// and records the outcome in metrics. It returns the live version after the
// call, and an error if the champion could not be looked up or was refused
// (ECONFLICT for a shape other than the configured one). It is safe for
// concurrent use.
func (s *Server) Swap(ctx context.Context, name string) (int, error) {
	h, ok := s.models[name]
	if !ok {
		return 0, flywheel.Errorf(flywheel.ENOTFOUND, "model %s is not configured here", name)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	start := time.Now()
	cur := h.ptr.Load()
	v, err := s.registry.Alias(ctx, name, aliasChampion)
	if err == nil && v == 0 {
		err = flywheel.Errorf(flywheel.ENOTFOUND, "model %s has no champion", name)
	}
	if err != nil {
		s.metrics.swaps.WithLabelValues(name, "error").Inc()
		return currentVersion(cur), fmt.Errorf("look up champion of %s: %w", name, err)
	}
	canary := h.canary.Load()
	s.swapCanary(ctx, h)
	if cur != nil && cur.version == v {
		h.clearRefusal(s, aliasChampion)
		return v, nil
	}
	if r, ok := h.refused[aliasChampion]; ok && r.version == v {
		return currentVersion(cur), r.err
	}
	var m *model.Model
	if canary != nil && canary.version == v {
		m = canary.model // the canary became the champion: fetched, checked and warmed up already
	} else {
		var artifact []byte
		v, artifact, err = s.registry.Champion(ctx, name)
		if err != nil {
			s.metrics.swaps.WithLabelValues(name, "error").Inc()
			return currentVersion(cur), fmt.Errorf("fetch champion of %s: %w", name, err)
		}
		if cur != nil && cur.version == v { // moved back in the meantime
			return v, nil
		}
		if m, err = s.load(h, aliasChampion, v, artifact, currentVersion(cur)); err != nil {
			return currentVersion(cur), err
		}
	}
	h.clearRefusal(s, aliasChampion)
	h.health.Store(s.newHealth(ctx, h, v))
	h.ptr.Store(newLive(v, m, s.now(), cur != nil))
	s.metrics.swaps.WithLabelValues(name, "swapped").Inc()
	s.metrics.swapSeconds.WithLabelValues(name).Observe(time.Since(start).Seconds())
	s.metrics.version.WithLabelValues(name).Set(float64(v))
	s.log.Info("model swapped in", "model", name, "version", v, "previous", currentVersion(cur), "took", time.Since(start))
	return v, nil
}

// load decodes, checks and warms up version v of h's alias. A version that
// is corrupt or of another shape is refused: logged, counted, remembered
// (so that polls and events do not fetch it again) and returned as an error.
func (s *Server) load(h *holder, alias string, v int, artifact []byte, live int) (*model.Model, error) {
	m, err := model.DecodeAs(artifact, h.shape())
	if err == nil {
		warmUp(m)
		return m, nil
	}
	s.metrics.swaps.WithLabelValues(h.name, "refused").Inc()
	s.metrics.refused.WithLabelValues(h.name, alias).Set(float64(v))
	s.log.Error("refused a model version; the live one keeps serving", "model", h.name, "alias", alias, "version", v, "live", live, "err", err)
	if errors.Is(err, model.ErrShape) {
		err = flywheel.Errorf(flywheel.ECONFLICT, "%s v%d (%s) does not have the configured shape, so v%d keeps serving: %v", h.name, v, alias, live, err)
	} else {
		err = fmt.Errorf("decode %s v%d: %w", h.name, v, err)
	}
	if h.refused == nil {
		h.refused = map[string]refusal{}
	}
	h.refused[alias] = refusal{version: v, err: err}
	return nil, err
}

// clearRefusal forgets alias's refused version once the alias has moved to
// a version that loads. The caller holds h.mu.
func (h *holder) clearRefusal(s *Server, alias string) {
	if _, ok := h.refused[alias]; ok {
		delete(h.refused, alias)
		s.metrics.refused.WithLabelValues(h.name, alias).Set(0)
	}
}

// swapCanary loads the canary of h if it changed, or drops it when the
// canary ended; like Swap, it fetches an artifact only for a version neither
// live nor refused. Errors are logged; the champion keeps serving all
// traffic. The caller holds h.mu.
func (s *Server) swapCanary(ctx context.Context, h *holder) {
	cur := h.canary.Load()
	v, err := s.registry.Alias(ctx, h.name, aliasCanary)
	if err != nil {
		s.log.Warn("look up canary failed", "model", h.name, "err", err)
		return
	}
	if v == 0 || (cur != nil && cur.version == v) {
		h.clearRefusal(s, aliasCanary)
		if v == 0 && cur != nil {
			h.canary.Store(nil)
			s.log.Info("canary ended", "model", h.name, "version", cur.version)
		}
		return
	}
	if r, ok := h.refused[aliasCanary]; ok && r.version == v {
		return
	}
	v, artifact, err := s.registry.Canary(ctx, h.name)
	if err != nil {
		s.log.Warn("fetch canary failed", "model", h.name, "err", err)
		return
	}
	if v == 0 || (cur != nil && cur.version == v) { // moved in the meantime; the next trigger sees it
		return
	}
	m, err := s.load(h, aliasCanary, v, artifact, currentVersion(h.ptr.Load()))
	if err != nil {
		return
	}
	h.clearRefusal(s, aliasCanary)
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
