package serve

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

// VersionFetcher fetches one registered version of a model. The Registry of
// a server with a control group whose baseline is a version
// (promote.control.policy "version N") must implement it.
type VersionFetcher interface {
	// Artifact returns version's artifact, or an ENOTFOUND error when name
	// has no such version.
	Artifact(ctx context.Context, name string, version int) ([]byte, error)
}

// newControl returns the control group's baseline of h when it is the
// uniform policy, which a model of the configured shape that has learned
// nothing plays (every ranker's version 1), logged as version 1; nil when h
// has no control group or LoadControls loads a version for it. registry
// must be a VersionFetcher for the latter.
func (s *Server) newControl(h *holder) (*live, error) {
	ctl := h.cfg.Promote.Control
	if h.cfg.Kind != flywheel.KindRanker || ctl.Share <= 0 {
		return nil, nil
	}
	if v, _ := ctl.BaselineVersion(); v > 0 {
		if _, ok := s.registry.(VersionFetcher); !ok {
			return nil, fmt.Errorf("models.%s.promote.control.policy %q: the registry cannot fetch a version", h.name, ctl.Policy)
		}
		return nil, nil
	}
	m, err := model.FromConfig(h.cfg)
	if err != nil {
		return nil, fmt.Errorf("models.%s: control group: %w", h.name, err)
	}
	return newLive(1, m, s.now(), false), nil
}

// LoadControls loads every control group's baseline that is a version of
// its model (promote.control.policy "version N") from the registry, checks
// it against the configured shape and warms it up, as a champion is; it
// then serves the control group for the life of the server, whatever the
// champion. A baseline already loaded is not fetched again. It returns an
// error naming models.X.promote.control.policy when the version does not
// exist (ENOTFOUND), cannot be fetched, or is not of the configured kind and
// shape (EINVALID). Call it before Run, which calls it too: it must not run
// while requests are served.
func (s *Server) LoadControls(ctx context.Context) error {
	for _, name := range slices.Sorted(maps.Keys(s.models)) {
		h := s.models[name]
		if v, _ := h.cfg.Promote.Control.BaselineVersion(); h.control == nil && v > 0 && h.cfg.Promote.Control.Share > 0 {
			l, err := s.loadControl(ctx, h, v)
			if err != nil {
				return err
			}
			h.control = l
		}
	}
	return nil
}

// loadControl fetches, decodes and warms up version v of h as its control
// group's baseline.
func (s *Server) loadControl(ctx context.Context, h *holder, v int) (*live, error) {
	field := fmt.Sprintf("models.%s.promote.control.policy %q", h.name, h.cfg.Promote.Control.Policy)
	artifact, err := s.registry.(VersionFetcher).Artifact(ctx, h.name, v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	m, err := model.DecodeAs(artifact, h.shape())
	if err != nil {
		return nil, flywheel.Errorf(flywheel.EINVALID, "%s: version %d is not a %s of the configured shape: %v", field, v, h.cfg.Kind, err)
	}
	warmUp(m)
	s.log.Info("control group's baseline loaded", "model", h.name, "version", v, "share", h.cfg.Promote.Control.Share)
	return newLive(v, m, s.now(), false), nil
}
