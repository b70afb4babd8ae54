package serve

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/gin-gonic/gin"
	"golang.org/x/sync/singleflight"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/deploy"
	"github.com/flywheel-dev/flywheel/model"
)

// explainer is implemented by a Registry that can explain a version
// (*deploy.Registry, which `flywheel models explain` uses too); without one,
// GET /v1/models/{name}/explain answers 501.
type explainer interface {
	Explain(ctx context.Context, name string, version, top int) (*model.Explanation, error)
}

var _ explainer = (*deploy.Registry)(nil)

// Explanations: at most maxExplainTop weights, defaultExplainTop unless
// ?top= says otherwise, of at most maxExplained versions kept.
const (
	defaultExplainTop = 20
	maxExplainTop     = 200
	maxExplained      = 16
)

// explainCache keeps the explanations of the last versions asked for
// (versions are immutable) and computes each once at a time: explaining
// decodes the whole artifact.
type explainCache struct {
	flight  singleflight.Group
	mu      sync.Mutex
	entries map[string]*model.Explanation
}

func (c *explainCache) get(ctx context.Context, ex explainer, name string, version int) (*model.Explanation, error) {
	key := name + "|" + strconv.Itoa(version)
	c.mu.Lock()
	x, ok := c.entries[key]
	c.mu.Unlock()
	if ok {
		return x, nil
	}
	ch := c.flight.DoChan(key, func() (any, error) {
		// The first asker's leaving does not cut short what others wait for.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dashboardTimeout)
		defer cancel()
		x, err := ex.Explain(cctx, name, version, maxExplainTop)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		if c.entries == nil || len(c.entries) >= maxExplained {
			c.entries = map[string]*model.Explanation{}
		}
		c.entries[key] = x
		c.mu.Unlock()
		return x, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*model.Explanation), nil
	case <-ctx.Done():
		return nil, flywheel.Errorf(flywheel.EUNAVAILABLE, "the request ended before %s v%d was explained", name, version)
	}
}

// explainParams reads ?version=N (default 0: the champion this replica
// serves) and ?top=K (1 to maxExplainTop, default defaultExplainTop).
func explainParams(c *gin.Context) (version, top int, err error) {
	version, top = 0, defaultExplainTop
	if q := c.Query("version"); q != "" {
		if version, err = strconv.Atoi(q); err != nil || version < 1 {
			return 0, 0, flywheel.Errorf(flywheel.EINVALID, "version must be a positive integer; got %.20q", q)
		}
	}
	if q := c.Query("top"); q != "" {
		if top, err = strconv.Atoi(q); err != nil || top < 1 || top > maxExplainTop {
			return 0, 0, flywheel.Errorf(flywheel.EINVALID, "top must be a whole number from 1 to %d; got %.20q", maxExplainTop, q)
		}
	}
	return version, top, nil
}

// handleExplain is GET /v1/models/{name}/explain: what a version learned,
// its top weights by effect with their readable names, as `flywheel models
// explain --json` prints it.
func (s *Server) handleExplain(c *gin.Context) error {
	h, ok := s.models[c.Param("name")]
	if !ok {
		return flywheel.Errorf(flywheel.ENOTFOUND, "model %q is not configured", c.Param("name"))
	}
	ex, ok := s.registry.(explainer)
	if !ok {
		return flywheel.Errorf(flywheel.ENOTIMPLEMENTED, "explanations are not available on this server")
	}
	version, top, err := explainParams(c)
	if err != nil {
		return err
	}
	if version == 0 {
		if version = currentVersion(h.ptr.Load()); version == 0 {
			return flywheel.Errorf(flywheel.EUNAVAILABLE, "model %q is not loaded yet", h.name)
		}
	}
	x, err := s.explained.get(c.Request.Context(), ex, h.name, version)
	if err != nil {
		return fmt.Errorf("explain %s v%d: %w", h.name, version, err)
	}
	out := *x
	out.Top = x.Top[:min(top, len(x.Top))]
	c.JSON(http.StatusOK, &out)
	return nil
}
