package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/deploy"
	"github.com/flywheel-dev/flywheel/ingest"
	"github.com/flywheel-dev/flywheel/kafka"
	"github.com/flywheel-dev/flywheel/retrain"
	"github.com/flywheel-dev/flywheel/serve"
)

// command is one command's FlagSet with the flags every command that reads
// the configuration takes (--config, --addr, --kafka, --clickhouse); each
// command adds its own to fs, so a flag of another command is refused.
type command struct {
	fs                         *flag.FlagSet
	getenv                     func(string) string
	stdout, stderr             io.Writer
	config, addr, brokers, dsn *string
}

func newCommand(name string, getenv func(string) string, stdout, stderr io.Writer) *command {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return &command{
		fs: fs, getenv: getenv, stdout: stdout, stderr: stderr,
		config:  fs.String("config", getenv("FLYWHEEL_CONFIG"), "configuration file (YAML)"),
		addr:    fs.String("addr", "", "HTTP listen address (overrides http.addr)"),
		brokers: fs.String("kafka", "", "Kafka brokers, comma separated (overrides kafka.brokers)"),
		dsn:     fs.String("clickhouse", "", "ClickHouse DSN (overrides clickhouse.dsn)"),
	}
}

// parse parses args, where flags and arguments may be interspersed
// (`models promote homepage --version 3`), and returns the arguments.
func (c *command) parse(args []string) ([]string, error) {
	var rest []string
	for {
		if err := c.fs.Parse(args); err != nil {
			return nil, err
		}
		if c.fs.NArg() == 0 {
			return rest, nil
		}
		rest = append(rest, c.fs.Arg(0))
		args = c.fs.Args()[1:]
	}
}

// env loads the configuration, applies the common flags over it and checks
// everything the command will use before it does anything.
func (c *command) env() (*env, error) {
	cfg, err := loadConfig(*c.config, c.getenv)
	if err != nil {
		return nil, err
	}
	if *c.addr != "" {
		cfg.HTTP.Addr = *c.addr
	}
	if *c.brokers != "" {
		cfg.Kafka.Brokers = strings.Split(*c.brokers, ",")
	}
	if *c.dsn != "" {
		cfg.ClickHouse.DSN = *c.dsn
	}
	level, err := cfg.logLevel()
	if err != nil {
		return nil, err
	}
	e := &env{cfg: cfg, log: slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: level})),
		stdout: c.stdout, stderr: c.stderr, getenv: c.getenv, kafkaGiven: *c.brokers != "" || !cfg.kafkaDefaulted}
	e.cfg.ClickHouse.Log = e.log.With("component", "clickhouse")
	if err := e.check(c.fs.Name()); err != nil {
		return nil, err
	}
	return e, nil
}

// env is what every command gets.
type env struct {
	cfg    *Config
	log    *slog.Logger
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	// kafkaGiven is set when --kafka, FLYWHEEL_KAFKA_BROKERS or the file named
	// brokers; dev starts an embedded broker otherwise
	kafkaGiven bool
}

// parts is what the long-running commands share.
type parts struct {
	conn     driver.Conn
	registry *deploy.Registry
	events   deploy.Publisher // the model-events topic; nil without Kafka
	promReg  *prometheus.Registry
	closers  []func()
}

func (p *parts) Close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
}

// claimTopics makes sure the Kafka topics are this installation's (the id
// its ClickHouse database holds), or fails naming the other one.
func (e *env) claimTopics(ctx context.Context, conn driver.Conn) error {
	inst := clickhouse.NewInstallation(conn, e.cfg.ClickHouse.Database(), time.Now)
	id, err := inst.ID(ctx)
	if err != nil {
		return err
	}
	return kafka.Claim(ctx, e.cfg.Kafka, id, e.cfg.ClickHouse.Database(), func(ctx context.Context, owner string) (bool, error) {
		ids, err := inst.IDs(ctx)
		return slices.Contains(ids, owner), err
	})
}

// connect waits for ClickHouse, migrates and opens the registry; withKafka
// also waits for Kafka, makes and claims the topics and adds a model-events
// publisher to the registry.
func (e *env) connect(ctx context.Context, withKafka bool) (*parts, error) {
	p := &parts{promReg: prometheus.NewRegistry()}
	p.promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := clickhouse.WaitReady(wctx, e.cfg.ClickHouse); err != nil {
		return nil, err
	}
	if err := clickhouse.Migrate(wctx, e.cfg.ClickHouse); err != nil {
		return nil, err
	}
	conn, err := clickhouse.Open(wctx, e.cfg.ClickHouse)
	if err != nil {
		return nil, err
	}
	p.conn = conn
	p.closers = append(p.closers, func() { conn.Close() })
	var pub deploy.Publisher
	if withKafka {
		if err := kafka.WaitReady(wctx, e.cfg.Kafka); err != nil {
			p.Close()
			return nil, err
		}
		if err := kafka.EnsureTopics(wctx, e.cfg.Kafka); err != nil {
			p.Close()
			return nil, err
		}
		if err := e.claimTopics(wctx, conn); err != nil {
			p.Close()
			return nil, err
		}
		w := kafka.NewEventPublisher(e.cfg.Kafka)
		p.closers = append(p.closers, func() { w.Close() })
		pub, p.events = w, w
	}
	registry, err := deploy.NewRegistry(clickhouse.NewRegistry(conn, e.cfg.ClickHouse.Database()).WithCluster(e.cfg.ClickHouse.Cluster), pub, e.log, time.Now)
	if err != nil {
		p.Close()
		return nil, err
	}
	p.registry = registry
	for name, mc := range e.cfg.Models {
		if err := registry.Bootstrap(wctx, name, mc); err != nil {
			p.Close()
			return nil, fmt.Errorf("bootstrap %s: %w", name, err)
		}
	}
	return p, nil
}

// newRetrainer builds the retrainer of p's registry; promReg, when not nil,
// gets its metrics.
func (e *env) newRetrainer(p *parts, promReg prometheus.Registerer, log *slog.Logger) (*retrain.Retrainer, error) {
	return retrain.New(retrain.Options{Models: e.cfg.Models, Store: clickhouse.NewTraining(p.conn, e.cfg.ClickHouse.Database()),
		Registry: p.registry, CodeVersion: version(), Registerer: promReg, Logger: log, Now: time.Now})
}

// newIngester is the ingest of dev and of `flywheel ingest`, logging to log.
func (e *env) newIngester(p *parts, log *slog.Logger) (*ingest.Ingester, error) {
	return ingest.New(e.cfg.Ingest, ingest.Options{Kafka: e.cfg.Kafka, Inserts: clickhouse.NewInserts(p.conn, e.cfg.ClickHouse.Database()),
		Registerer: p.promReg, Logger: log, Now: time.Now})
}

// offline builds a retrainer for the one-shot commands (no metrics, no
// election).
func (e *env) offline(ctx context.Context) (*parts, *retrain.Retrainer, error) {
	p, err := e.connect(ctx, false)
	if err != nil {
		return nil, nil, err
	}
	rt, err := e.newRetrainer(p, nil, e.log)
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	return p, rt, nil
}

// serveConfig is the HTTP API's configuration; open says whether it may
// run without keys (`flywheel dev`).
func (e *env) serveConfig(open bool) serve.Config {
	h := e.cfg.HTTP
	return serve.Config{
		Addr: h.Addr, Limits: e.cfg.Limits, Models: e.cfg.Models,
		AppKeys: serveKeys(e.cfg.Auth.AppKeys), AdminKeys: serveKeys(e.cfg.Auth.AdminKeys), Open: open,
		HTTP: serve.HTTPConfig{ReadHeaderTimeout: h.ReadHeaderTimeout, ReadTimeout: h.ReadTimeout,
			WriteTimeout: h.WriteTimeout, IdleTimeout: h.IdleTimeout, MaxHeaderBytes: h.MaxHeaderBytes},
		PollInterval: e.cfg.Serve.PollInterval, ShutdownTimeout: e.cfg.Serve.ShutdownTimeout, GuardInterval: e.cfg.Serve.GuardInterval,
	}
}

// dashboardHistory is how many alias moves, newest first, the dashboard
// reads: its markers of promotions and rollbacks.
const dashboardHistory = 200

// dashboardVersion is one version as the dashboard lists it: no manifest,
// no metrics.
type dashboardVersion struct {
	Version   int       `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	SHA256    string    `json:"sha256"`
	Size      int       `json:"size_bytes"`
}

// dashboardData is the "data" of GET /v1/models/{name}/dashboard. Exactly
// one of IngestLag and IngestLagError is set. The fields are in the order
// of their JSON names, the order the map this replaced was encoded in.
type dashboardData struct {
	Deployments    []deploy.Deployment  `json:"deployments"`
	IngestLag      map[string]int64     `json:"ingest_lag,omitempty"`
	IngestLagError string               `json:"ingest_lag_error,omitempty"`
	Overview       *clickhouse.Overview `json:"overview"`
	Versions       []dashboardVersion   `json:"versions"`
}

// insights answers the dashboard from ClickHouse, the registry and Kafka.
func (e *env) insights(p *parts) serve.Insights {
	db := e.cfg.ClickHouse.Database()
	return serve.Insights{
		Dashboard: func(ctx context.Context, name string, window time.Duration) (any, error) {
			o, err := clickhouse.Insights(ctx, p.conn, db, name, window, time.Now())
			if err != nil {
				return nil, err
			}
			hist, err := p.registry.RecentHistory(ctx, name, dashboardHistory)
			if err != nil {
				return nil, err
			}
			versions, err := p.registry.RecentVersions(ctx, name, dashboardHistory)
			if err != nil {
				return nil, err
			}
			out := &dashboardData{Overview: o, Deployments: hist, Versions: make([]dashboardVersion, len(versions))}
			for i, v := range versions {
				out.Versions[i] = dashboardVersion{v.Version, v.CreatedAt, v.SHA256, v.Size}
			}
			lctx, cancel := context.WithTimeout(ctx, 2*time.Second) // Kafka down must not stall the page
			defer cancel()
			t := e.cfg.Kafka.Topics()
			if lag, err := kafka.GroupLag(lctx, e.cfg.Kafka, e.cfg.Ingest.GroupName(), t.Decisions, t.Feedback); err != nil {
				out.IngestLagError = err.Error()
			} else {
				out.IngestLag = lag
			}
			return out, nil
		},
		SetReferences: func(ctx context.Context, name string, refs map[string]float64, source string) error {
			return clickhouse.SetReferences(ctx, p.conn, db, name, refs, source, time.Now())
		},
	}
}

// modelDetails is the registry's view of a model: the "details" of GET
// /v1/models/{name} and what `models show` prints. The fields are in the
// order of their JSON names, the order the map this replaced was encoded in.
type modelDetails struct {
	Champion int                 `json:"champion"`
	History  []deploy.Deployment `json:"history"`
	Versions []deploy.Version    `json:"versions"`
	// Control is the lift over the control group (promote.control) in the
	// last 24 hours of closed decisions; absent without a control group or
	// before both sides have two closed decisions.
	Control *deploy.ControlLift `json:"control,omitempty"`
}

// liftWindow is the span of closed decisions describe measures the lift
// over the control group on.
const liftWindow = 24 * time.Hour

// describe returns the registry's view of name: its champion, its latest
// history versions and alias moves (all of them when history is 0).
func describe(ctx context.Context, registry *deploy.Registry, name string, history int) (*modelDetails, error) {
	champ, err := registry.Alias(ctx, name, deploy.Champion)
	if err != nil {
		return nil, err
	}
	versions, err := registry.RecentVersions(ctx, name, history)
	if err != nil {
		return nil, err
	}
	hist, err := registry.RecentHistory(ctx, name, history)
	if err != nil {
		return nil, err
	}
	return &modelDetails{Champion: champ, History: hist, Versions: versions}, nil
}

// describeWithLift is describe with, for a model with a control group, its
// lift over the control in the last liftWindow.
func (e *env) describeWithLift(ctx context.Context, p *parts, name string, history int) (*modelDetails, error) {
	d, err := describe(ctx, p.registry, name, history)
	if err != nil {
		return nil, err
	}
	mc := e.cfg.Models[name]
	if mc.Promote.Control.Share <= 0 {
		return d, nil
	}
	to := uint64(time.Now().UnixMilli())
	from := to - uint64(liftWindow/time.Millisecond)
	rows, err := clickhouse.NewRewards(p.conn, e.cfg.ClickHouse.Database()).Online(ctx, name, from, to)
	if err != nil {
		return nil, err
	}
	d.Control = deploy.Lift(rows, mc.Promote.Confidence, from, to)
	return d, nil
}
