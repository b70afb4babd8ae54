package serve

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sync/singleflight"

	"github.com/flywheel-dev/flywheel"
)

// The dashboard's static files, embedded: it works offline, with no CDN.
//
//go:embed ui
var uiFiles embed.FS

// Insights answers the dashboard's questions from ClickHouse, the registry
// and Kafka. Either field may be nil: that route then answers 501.
type Insights struct {
	// Dashboard returns the figures of one model over the last window.
	Dashboard func(ctx context.Context, name string, window time.Duration) (any, error)
	// SetReferences stores reference reward rates (random, best known) of a
	// model, which the dashboard draws next to the versions.
	SetReferences func(ctx context.Context, name string, refs map[string]float64, source string) error
}

// SetInsights gives the server what the dashboard's data routes need. Call
// it before Run.
func (s *Server) SetInsights(in Insights) { s.insights = in }

// dashboardTTL is how long one answer of Insights.Dashboard serves every
// open dashboard: each refreshes every 5 s, and the figures come from
// queries over all of a model's examples, which ClickHouse should run once
// however many people watch.
const dashboardTTL = 2 * time.Second

// dashboardTimeout bounds one computation of a dashboard's figures, which
// the first viewer starts and every viewer of the same model and window
// waits for: it is not cut short when that first viewer leaves.
const dashboardTimeout = 30 * time.Second

// dashboardWindows are the windows a dashboard may show: any other asked
// for is snapped to the next one up (to the last beyond it), so that each
// model has at most this many computations in flight and in the cache.
var dashboardWindows = []time.Duration{15 * time.Minute, time.Hour, 6 * time.Hour, 24 * time.Hour, 7 * 24 * time.Hour}

// snapWindow parses a dashboard's window (a Go duration, or whole days like
// 7d) and snaps it to dashboardWindows; it refuses anything below 1m or
// above 90 days.
func snapWindow(w string) (time.Duration, error) {
	d, err := time.ParseDuration(w)
	if days, ok := strings.CutSuffix(w, "d"); ok && err != nil {
		if n, perr := strconv.Atoi(days); perr == nil && n > 0 && n <= 90 {
			d, err = time.Duration(n)*24*time.Hour, nil
		}
	}
	if err != nil || d < time.Minute || d > 90*24*time.Hour {
		return 0, flywheel.Errorf(flywheel.EINVALID, "window must be a duration between 1m and 90d, like 15m, 1h, 6h, 24h or 7d (snapped to one of these); got %.40q", w)
	}
	for _, fixed := range dashboardWindows {
		if d <= fixed {
			return fixed, nil
		}
	}
	return dashboardWindows[len(dashboardWindows)-1], nil
}

// windowName is how a dashboard's window is written back: 15m, 1h, 7d.
func windowName(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return fmt.Sprintf("%dm", d/time.Minute)
}

// dashboardCache holds the last answer of each model and window for
// dashboardTTL, and runs at most one computation of each at a time.
type dashboardCache struct {
	flight  singleflight.Group
	mu      sync.Mutex
	entries map[string]dashboardEntry // at most models × dashboardWindows
}

type dashboardEntry struct {
	at time.Time
	v  any
}

func (c *dashboardCache) get(ctx context.Context, key string, now time.Time, compute func(context.Context) (any, error)) (any, error) {
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok && now.Sub(e.at) < dashboardTTL {
		return e.v, nil
	}
	ch := c.flight.DoChan(key, func() (any, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dashboardTimeout)
		defer cancel()
		v, err := compute(cctx)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		if c.entries == nil {
			c.entries = map[string]dashboardEntry{}
		}
		c.entries[key] = dashboardEntry{now, v}
		c.mu.Unlock()
		return v, nil
	})
	select {
	case r := <-ch:
		return r.Val, r.Err
	case <-ctx.Done():
		return nil, flywheel.Errorf(flywheel.EUNAVAILABLE, "the request ended before the dashboard's figures were ready")
	}
}

// maxHistory bounds the alias moves GET /v1/models/{name} returns
// (?history=N, default defaultHistory).
const (
	maxHistory     = 500
	defaultHistory = 50
)

// historyParam reads ?history=N, from 1 to maxHistory.
func historyParam(c *gin.Context) (int, error) {
	h := c.Query("history")
	if h == "" {
		return defaultHistory, nil
	}
	n, err := strconv.Atoi(h)
	if err != nil || n < 1 || n > maxHistory {
		return 0, flywheel.Errorf(flywheel.EINVALID, "history must be a whole number from 1 to %d (alias moves, newest first); got %.20q", maxHistory, h)
	}
	return n, nil
}

func (s *Server) uiRoutes(e *gin.Engine) {
	sub, _ := fs.Sub(uiFiles, "ui")
	files := http.FileServer(http.FS(sub))
	e.GET("/ui", func(c *gin.Context) { c.Redirect(http.StatusFound, "/ui/") })
	e.GET("/ui/*file", func(c *gin.Context) {
		c.Header("Cache-Control", "no-cache")
		c.Header("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:")
		http.StripPrefix("/ui", files).ServeHTTP(c.Writer, c.Request)
	})
}

func (s *Server) handleDashboard(c *gin.Context) error {
	h, ok := s.models[c.Param("name")]
	if !ok {
		return flywheel.Errorf(flywheel.ENOTFOUND, "model %q is not configured", c.Param("name"))
	}
	window := time.Hour
	if w := c.Query("window"); w != "" {
		d, err := snapWindow(w)
		if err != nil {
			return err
		}
		window = d
	}
	out := DashboardResponse{Model: s.info(h), Replica: s.replicaStats(), Window: windowName(window)}
	if s.insights.Dashboard == nil {
		return flywheel.Errorf(flywheel.ENOTIMPLEMENTED, "the dashboard's data is not available on this server")
	}
	d, err := s.dashboards.get(c.Request.Context(), h.name+"|"+windowName(window), s.now(), func(ctx context.Context) (any, error) {
		return s.insights.Dashboard(ctx, h.name, window)
	})
	if err != nil {
		return err
	}
	out.Data = d
	c.JSON(http.StatusOK, out)
	return nil
}

type referencesRequest struct {
	References map[string]float64 `json:"references"`
	Source     string             `json:"source"`
}

func (s *Server) handleReferences(c *gin.Context) error {
	h, ok := s.models[c.Param("name")]
	if !ok {
		return flywheel.Errorf(flywheel.ENOTFOUND, "model %q is not configured", c.Param("name"))
	}
	if s.insights.SetReferences == nil {
		return flywheel.Errorf(flywheel.ENOTIMPLEMENTED, "references are not available on this server")
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	var req referencesRequest
	if err := decodeStrict(body, &req); err != nil {
		return err
	}
	if len(req.References) == 0 || len(req.References) > 16 {
		return flywheel.Errorf(flywheel.EINVALID, "references must name between 1 and 16 reward rates")
	}
	for name, v := range req.References {
		if err := flywheel.ValidateName("references."+name, name); err != nil {
			return err
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return flywheel.Errorf(flywheel.EINVALID, "references.%s is not a finite number", name)
		}
	}
	if len(req.Source) > 256 {
		return flywheel.Errorf(flywheel.EINVALID, "source is longer than 256 bytes")
	}
	if err := s.insights.SetReferences(c.Request.Context(), h.name, req.References, req.Source); err != nil {
		return err
	}
	c.JSON(http.StatusOK, ReferencesResponse{Model: h.name, References: req.References})
	return nil
}

// replicaStats reads this replica's own event-logging metrics.
func (s *Server) replicaStats() ReplicaStats {
	var out ReplicaStats
	if s.gatherer == nil {
		return out
	}
	families, err := s.gatherer.Gather()
	if err != nil {
		return out
	}
	want := map[string]**float64{
		"flywheel_spool_pending_bytes":      &out.SpoolPendingBytes,
		"flywheel_kafka_write_errors_total": &out.KafkaWriteErrors,
		"flywheel_events_refused_total":     &out.EventsRefused,
		"flywheel_spool_replayed_total":     &out.SpoolReplayed,
		"flywheel_events_shipped_total":     &out.EventsShipped,
		"flywheel_guardrail_breaches_total": &out.GuardrailBreaches,
	}
	for _, f := range families {
		field, ok := want[f.GetName()]
		if !ok {
			continue
		}
		v := sumMetric(f)
		*field = &v
	}
	return out
}

func sumMetric(f *dto.MetricFamily) float64 {
	total := 0.0
	for _, m := range f.GetMetric() {
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		}
	}
	return total
}
