package serve

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flywheel-dev/flywheel"
)

// Config configures the HTTP API.
type Config struct {
	// Addr is the address the listener given to Run was opened on
	// (http.addr); its host is one of the names an open API answers to
	// (guardOpen). Run does not listen on it: the caller does.
	Addr   string
	Limits flywheel.Limits
	Models map[string]flywheel.ModelConfig
	// AppKeys may rank, predict and send feedback; AdminKeys may do
	// everything. Both empty means no authentication, allowed only with Open.
	AppKeys, AdminKeys []Key
	Open               bool
	// HTTP bounds what one connection may take of the server.
	HTTP HTTPConfig
	// PollInterval is how often the registry is polled for a new champion,
	// as a fallback to model events; default 30s.
	PollInterval time.Duration
	// ShutdownTimeout bounds each step of Run's graceful shutdown: the
	// drain of in-flight requests, then the shipping of what the event
	// logger still has spooled; default 10s.
	ShutdownTimeout time.Duration
	// GuardInterval is how often the error-rate and latency guardrails are
	// checked on this replica; default 10s.
	GuardInterval time.Duration
}

// Registry is where serving finds each model's champion and canary.
type Registry interface {
	// Alias returns the version alias ("champion", "canary") of name points
	// at, 0 if none, without reading any artifact: serving asks it first and
	// fetches an artifact only for a version it does not have.
	Alias(ctx context.Context, name, alias string) (int, error)
	Champion(ctx context.Context, name string) (version int, artifact []byte, err error)
	// Canary returns 0 and no artifact when the model has no canary.
	Canary(ctx context.Context, name string) (version int, artifact []byte, err error)
}

// EventLogger logs what serving answered and the feedback it received. A nil
// error means the events are durably logged. LogDecision must keep neither
// d nor its slices (Actions, RawActions, Probabilities, Ranking) once it
// returns: serving reuses their memory for its next request
// (eventlog.Logger encodes d before it returns); an implementation that
// keeps the decision keeps a copy.
type EventLogger interface {
	LogDecision(ctx context.Context, d *flywheel.Decision) error
	LogFeedback(ctx context.Context, fs []flywheel.Feedback) error
}

// healthChecker is implemented by an EventLogger that can say whether it
// takes events (nil) or not; /readyz reports not ready while it does not.
type healthChecker interface{ Health() error }

// Admin carries out the admin routes. Any field may be nil: that route then
// answers 501.
type Admin struct {
	Promote  func(ctx context.Context, name string, version int, actor, reason string) error
	Rollback func(ctx context.Context, name, actor, reason string) (int, error)
	Retrain  func(ctx context.Context, name string) (any, error)
	// Describe returns the registry's view of name with its latest history
	// alias moves (at most maxHistory).
	Describe func(ctx context.Context, name string, history int) (any, error)
	// Demote takes a live version that breaks its guardrails out of
	// service (ends a canary, rolls back a champion).
	Demote func(ctx context.Context, name string, version int, actor, reason string) error
	// Canary starts (version > 0) or ends (version 0) the canary of name.
	Canary func(ctx context.Context, name string, version int, actor, reason string) error
}

// Server is the HTTP API. Create it with New; it is safe for concurrent use.
type Server struct {
	cfg        Config
	models     map[string]*holder
	registry   Registry
	events     EventLogger
	admin      Admin
	log        *slog.Logger
	now        func() time.Time
	metrics    *metrics
	engine     *gin.Engine
	insights   Insights
	dashboards dashboardCache
	explained  explainCache
	gatherer   prometheus.Gatherer    // this replica's metrics, for the dashboard
	pairs      map[string][][2]string // each model's interactions, for checkCost
	inFlight   atomic.Int64
	buckets    *buckets // nil: no rate limit
	recent     *recentIDs
}

// Options are a Server's dependencies.
type Options struct {
	Registry Registry    // where models are read; required
	Events   EventLogger // where decisions and feedback are logged; required
	// Admin does what the admin routes ask; its nil fields answer 501.
	Admin Admin
	// Registerer takes the metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	Logger     *slog.Logger     // nil discards
	Now        func() time.Time // the clock; nil is time.Now
}

// New validates cfg and returns a server. It loads no model: Run (or
// SwapAll) does.
func New(cfg Config, o Options) (*Server, error) {
	if o.Registry == nil || o.Events == nil {
		return nil, errors.New("serve: registry and event logger are required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	registry, events, admin, reg, log, now := o.Registry, o.Events, o.Admin, o.Registerer, o.Logger, o.Now
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	s := &Server{cfg: cfg, registry: registry, events: events, admin: admin, log: log, now: now, models: map[string]*holder{},
		pairs: map[string][][2]string{}, buckets: newBuckets(cfg.Limits.RatePerKey, cfg.Limits.Burst),
		recent: newRecentIDs(cfg.Limits.RecentEventIDs)}
	for name, mc := range cfg.Models {
		h := &holder{name: name, cfg: mc}
		var err error
		if h.control, err = s.newControl(h); err != nil {
			return nil, err
		}
		s.models[name] = h
		s.pairs[name] = mc.InteractionPairs()
	}
	m, err := newMetrics(reg, newHealthCollector(s.models, now))
	if err != nil {
		return nil, err
	}
	s.metrics = m
	s.engine = s.routes(reg)
	return s, nil
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return s.engine }

// Shipper is implemented by an EventLogger that ships what it logged in
// the background (eventlog.Logger): Run ships until its context ends, Close
// ships what is left for at most timeout, then closes. Server.Run drives it.
type Shipper interface {
	Run(ctx context.Context) error
	Close(timeout time.Duration) error
}

// Run is the daemon: it loads every model (LoadControls, then SwapAll),
// serves HTTP on ln, polls the registry every PollInterval and checks the
// guardrails every GuardInterval until ctx ends. Model events reach the
// server through OnModelEvent, called by whoever reads them.
//
// When the event logger ships in the background (it has Run and Close, as
// eventlog.Logger does), Run ships with it from the start and owns its
// shutdown order: once ctx ends it stops accepting, lets in-flight requests
// finish (bounded by ShutdownTimeout) while shipping goes on, stops shipping,
// lets the logger ship what is still spooled (bounded by ShutdownTimeout
// again) and closes it. Run closes the logger whatever it returns; the
// caller must not use it afterwards. A failure to ship (the spool cannot be
// read) shuts the server down the same way.
//
// Run returns an error if the HTTP server fails or does not shut down in
// time, if shipping fails, or if the logger fails to close.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	sh, ok := s.events.(Shipper)
	if !ok {
		return s.serveHTTP(ctx, ln)
	}
	// Shipping outlives ctx until in-flight requests are done: what they
	// log is shipped as it comes, and Close has less left to ship.
	shipCtx, stopShipping := context.WithCancel(context.WithoutCancel(ctx))
	defer stopShipping()
	httpCtx, stopHTTP := context.WithCancelCause(ctx)
	defer stopHTTP(nil)
	shipped := make(chan error, 1)
	go func() {
		err := sh.Run(shipCtx)
		if err != nil {
			err = fmt.Errorf("ship events: %w", err)
			stopHTTP(err)
		}
		shipped <- err
	}()
	err := s.serveHTTP(httpCtx, ln) // returns once in-flight requests are done
	stopShipping()
	if serr := <-shipped; serr != nil {
		err = serr // the cause of the shutdown
	}
	if cerr := sh.Close(s.cfg.ShutdownTimeout); cerr != nil && err == nil {
		err = fmt.Errorf("close the event log: %w", cerr)
	}
	return err
}

// serveHTTP is Run without the event logger: it loads the models, serves
// ln until ctx ends, then stops accepting and lets in-flight requests
// finish, bounded by ShutdownTimeout.
func (s *Server) serveHTTP(ctx context.Context, ln net.Listener) error {
	if err := s.LoadControls(ctx); err != nil {
		return err
	}
	s.SwapAll(ctx)
	h := s.cfg.HTTP
	srv := &http.Server{Handler: s.engine, ReadHeaderTimeout: h.ReadHeaderTimeout, ReadTimeout: h.ReadTimeout,
		WriteTimeout: h.WriteTimeout, IdleTimeout: h.IdleTimeout, MaxHeaderBytes: h.MaxHeaderBytes}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	tick := time.NewTicker(s.cfg.PollInterval)
	defer tick.Stop()
	guard := time.NewTicker(s.cfg.GuardInterval)
	defer guard.Stop()
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("http server: %w", err)
		case <-tick.C:
			s.SwapAll(ctx)
		case <-guard.C:
			s.checkGuardrails(ctx)
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				return fmt.Errorf("http shutdown: %w", err)
			}
			return nil
		}
	}
}

// OnModelEvent reacts to a model event: a move of a served model's alias
// swaps it. An event that moves an alias to the version already served
// under it reads nothing from the registry.
func (s *Server) OnModelEvent(ctx context.Context, e flywheel.ModelEvent) {
	if h, ok := s.models[e.Model]; !ok || e.Type == flywheel.EventRegistered || flywheel.IsRetrainEvent(e.Type) || h.unchangedBy(e) {
		return
	}
	if _, err := s.Swap(ctx, e.Model); err != nil {
		s.log.Warn("swap after model event failed", "model", e.Model, "event", e.Type, "err", err)
	}
}

// Roles.
const (
	roleApp   = 1
	roleAdmin = 2
)

// auth returns middleware that admits requests whose bearer key has at
// least the role, once the key's token bucket (the client address's, when
// the API is open or the key is missing or wrong) has a token.
func (s *Server) auth(role int) gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.open() {
			if s.rateLimit(c, "ip:"+remoteIP(c.Request)) {
				c.Next()
			}
			return
		}
		key, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer ")
		have, bucket, actor := 0, "", ""
		if i := keyIndex(key, s.cfg.AdminKeys); ok && i >= 0 {
			have, bucket, actor = roleAdmin, fmt.Sprint("admin#", i), keyActor("admin_keys", i, s.cfg.AdminKeys[i])
		} else if i := keyIndex(key, s.cfg.AppKeys); ok && i >= 0 {
			have, bucket, actor = roleApp, fmt.Sprint("app#", i), keyActor("app_keys", i, s.cfg.AppKeys[i])
		} else {
			bucket = "ip:" + remoteIP(c.Request) // guessing keys is rate limited too
		}
		if !s.rateLimit(c, bucket) {
			return
		}
		switch {
		case !ok || key == "":
			writeError(c, flywheel.Errorf(flywheel.EUNAUTHORIZED, "an Authorization: Bearer key is required"))
			c.Abort()
		case have == 0:
			writeError(c, flywheel.Errorf(flywheel.EUNAUTHORIZED, "the key is not valid"))
			c.Abort()
		case have < role:
			writeError(c, flywheel.Errorf(flywheel.EFORBIDDEN, "this route needs an admin key"))
			c.Abort()
		default:
			c.Set("actor", actor)
			c.Next()
		}
	}
}

// keyActor is what the deployment history records of a key: its label,
// else its place in the configuration; never any part of the key.
func keyActor(field string, i int, k Key) string {
	if k.Label != "" {
		return "api:" + k.Label
	}
	return fmt.Sprintf("api:%s[%d]", field, i)
}

// keyIndex returns the index of key in keys, or -1, comparing every key in
// constant time.
func keyIndex(key string, keys []Key) int {
	found := -1
	for i, k := range keys {
		if subtle.ConstantTimeCompare([]byte(k.Secret), []byte(key)) == 1 {
			found = i
		}
	}
	return found
}

func (s *Server) routes(reg prometheus.Registerer) *gin.Engine {
	e := gin.New()
	e.Use(s.recoverer(), s.observe(), s.limitInFlight(), s.guardOpen())
	e.HandleMethodNotAllowed = true
	e.NoRoute(func(c *gin.Context) {
		writeError(c, flywheel.Errorf(flywheel.ENOTFOUND, "no route %s %s", c.Request.Method, c.Request.URL.Path))
	})
	e.NoMethod(func(c *gin.Context) {
		c.JSON(http.StatusMethodNotAllowed, errorBody(flywheel.Errorf("method_not_allowed", "%s is not allowed on %s", c.Request.Method, c.Request.URL.Path)))
	})
	app, admin := s.auth(roleApp), s.auth(roleAdmin)
	v1 := e.Group("/v1")
	v1.POST("/rank", app, handle(s.handleRank))
	v1.POST("/predict", app, handle(s.handlePredict))
	v1.POST("/feedback", app, handle(s.handleFeedback))
	v1.POST("/events/:event_id/activate", app, handle(s.handleActivate))
	v1.GET("/models", app, handle(s.handleModels))
	v1.GET("/models/:name", app, handle(s.handleModel))
	v1.POST("/models/:name/promote", admin, handle(s.handlePromote))
	v1.POST("/models/:name/rollback", admin, handle(s.handleRollback))
	v1.POST("/models/:name/retrain", admin, handle(s.handleRetrain))
	v1.POST("/models/:name/canary", admin, handle(s.handleCanary))
	v1.DELETE("/models/:name/canary", admin, handle(s.handleCanary))
	v1.GET("/models/:name/dashboard", app, handle(s.handleDashboard))
	v1.GET("/models/:name/features", app, handle(s.handleFeatures))
	v1.GET("/models/:name/explain", app, handle(s.handleExplain))
	v1.PUT("/models/:name/references", admin, handle(s.handleReferences))
	s.uiRoutes(e)
	e.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, StatusResponse{Status: "ok"}) })
	e.GET("/readyz", func(c *gin.Context) {
		if !s.Ready() {
			writeError(c, flywheel.Errorf(flywheel.EUNAVAILABLE, "not every configured model is loaded yet"))
			return
		}
		if h, ok := s.events.(healthChecker); ok {
			if err := h.Health(); err != nil { // the event spool takes no writes: requests would get 503
				s.log.Warn("not ready: the event spool takes no writes", "err", err)
				writeError(c, flywheel.Errorf(flywheel.EUNAVAILABLE, "the event spool takes no writes (full or failing disk)"))
				return
			}
		}
		c.JSON(http.StatusOK, StatusResponse{Status: "ready"})
	})
	gatherer, _ := reg.(prometheus.Gatherer)
	if gatherer == nil {
		gatherer = prometheus.NewRegistry()
	}
	s.gatherer = gatherer
	e.GET("/metrics", gin.WrapH(promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})))
	e.GET("/openapi.json", func(c *gin.Context) { c.Data(http.StatusOK, "application/json", openAPI) })
	return e
}

func (s *Server) recoverer() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("panic in handler", "path", c.FullPath(), "panic", r)
				s.metrics.panics.Inc()
				if !c.Writer.Written() {
					writeError(c, fmt.Errorf("panic: %v", r))
				}
				c.Abort()
			}
		}()
		c.Next()
	}
}

func (s *Server) observe() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		model, _ := c.Get("model")
		name, _ := model.(string)
		took := time.Since(start)
		status := c.Writer.Status()
		s.metrics.latency.WithLabelValues(route, name, strconv.Itoa(status)).Observe(took.Seconds())
		if code, ok := c.Get(errorCodeKey); ok {
			s.metrics.errors.WithLabelValues(code.(string)).Inc()
		}
		for _, err := range c.Errors {
			// The cause of a 5xx answer: logged here, once, and never
			// shown to the client.
			s.log.Error("request failed", "method", c.Request.Method, "route", route, "model", name,
				"status", status, "took", took, "err", err.Err)
		}
		if l, ok := c.Get("live"); ok {
			l.(*live).win.Load().record(c.Writer.Status() >= 500, took)
		}
	}
}
