// Command flywheel runs Flywheel: `flywheel dev` runs the whole loop in one
// process; serve, ingest and retrain run its parts; models, migrate and sim
// are tools. main only wires: every component lives in its own package.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/deploy"
	"github.com/flywheel-dev/flywheel/feedback"
	"github.com/flywheel-dev/flywheel/ingest"
	"github.com/flywheel-dev/flywheel/kafka"
	"github.com/flywheel-dev/flywheel/retrain"
	"github.com/flywheel-dev/flywheel/serve"
	"github.com/flywheel-dev/flywheel/sim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		// No longer caught: a second SIGINT or SIGTERM takes its default
		// action and ends the process at once, whatever shutdown awaits.
		stop()
	}()
	gin.SetMode(gin.ReleaseMode)
	tuneGC(os.Getenv)
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		msg := err.Error()
		if flywheel.ErrorCode(err) != flywheel.EINTERNAL {
			msg = flywheel.ErrorMessage(err)
		}
		fmt.Fprintln(os.Stderr, "flywheel:", msg)
		os.Exit(1)
	}
}

const usage = `usage: flywheel COMMAND [flags]

commands:
  dev        everything in one process (embedded Kafka-protocol broker unless --kafka)
  serve      the HTTP API
  ingest     Kafka → ClickHouse
  retrain    the retrain scheduler; --now --model X runs once;
             --reproduce --model X --version N rebuilds a version and compares
  models     list | show X | promote X --version N | rollback X | history X |
             canary X --version N | canary X --end
  eval       --model X --version N [--window 24h] [--json]: offline evaluation against the champion
  migrate    create or upgrade the ClickHouse schema
  sim        the simulated product app: --url URL --events N [--world NAME] [--json]
  backtest   a simulated world through the learner, schedule and promotion rule in
             virtual time, in process: --world --schedule --rule --margin --exploration
             (lists) [--decisions N] [--json]
  version    print the version

common flags: --config FILE --addr HOST:PORT --kafka BROKERS --clickhouse DSN
`

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return bi.Main.Version + "+" + s.Value[:min(12, len(s.Value))]
			}
		}
		return bi.Main.Version
	}
	return "unknown"
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

// gcPercent is the garbage collector's target unless GOGC says otherwise:
// decoding requests allocates, the live heap is small (tens of MiB), and
// collecting four times less often halves the median latency of /v1/rank
// under load on a 2-core machine. GOMEMLIMIT, when set, still bounds memory.
const gcPercent = 400

func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "version", "--version":
		fmt.Fprintln(stdout, "flywheel", version())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "sim":
		return runSim(ctx, args, stdout, stderr)
	case "backtest":
		return runBacktest(ctx, args, getenv, stdout, stderr)
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", getenv("FLYWHEEL_CONFIG"), "configuration file (YAML)")
	addr := fs.String("addr", "", "HTTP listen address (overrides http.addr)")
	brokers := fs.String("kafka", "", "Kafka brokers, comma separated (overrides kafka.brokers)")
	dsn := fs.String("clickhouse", "", "ClickHouse DSN (overrides clickhouse.dsn)")
	now := fs.Bool("now", false, "retrain: run once now instead of scheduling")
	modelName := fs.String("model", "", "retrain --now: the model")
	ver := fs.Int("version", 0, "models promote: the version")
	asJSON := fs.Bool("json", false, "print JSON")
	endCanary := fs.Bool("end", false, "models canary: end the canary")
	reproduce := fs.Bool("reproduce", false, "retrain: rebuild --model's --version from its manifest and compare the weights")
	window := fs.Duration("window", 24*time.Hour, "eval: judge on the closed examples of this last stretch of time")
	embeddedPort := fs.Int("embedded-kafka-port", 0, "dev: port of the embedded broker (0: any free port)")
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	cfg, err := loadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	if *addr != "" {
		cfg.HTTP.Addr = *addr
	}
	if *brokers != "" {
		cfg.Kafka.Brokers = strings.Split(*brokers, ",")
	}
	if *dsn != "" {
		cfg.ClickHouse.DSN = *dsn
	}
	level, err := cfg.logLevel()
	if err != nil {
		return err
	}
	e := &env{cfg: cfg, log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})), stdout: stdout, stderr: stderr, getenv: getenv, kafkaGiven: *brokers != "" || !cfg.kafkaDefaulted}
	e.cfg.ClickHouse.Log = e.log.With("component", "clickhouse")
	if err := e.check(cmd); err != nil {
		return err
	}
	switch cmd {
	case "dev":
		return e.dev(ctx, *embeddedPort)
	case "serve":
		return e.serve(ctx)
	case "ingest":
		return e.ingest(ctx)
	case "retrain":
		if *reproduce {
			return e.retrainReproduce(ctx, *modelName, *ver, *asJSON)
		}
		if *now {
			return e.retrainNow(ctx, *modelName, *asJSON)
		}
		return e.retrainScheduler(ctx)
	case "eval":
		return e.eval(ctx, *modelName, *ver, *window, *asJSON)
	case "migrate":
		if err := clickhouse.Migrate(ctx, cfg.ClickHouse); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "database %s is at schema version %d\n", cfg.ClickHouse.Database(), clickhouse.SchemaVersion())
		return nil
	case "models":
		return e.models(ctx, rest, *ver, *endCanary, *asJSON)
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

// parts is what the long-running commands share.
type parts struct {
	conn     driver.Conn
	registry *deploy.Registry
	promReg  *prometheus.Registry
	closers  []func()
}

func (p *parts) Close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
}

// connect waits for ClickHouse and Kafka, migrates, makes the topics and
// opens the registry. withEvents adds a model-events publisher.
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
		pub = w
	}
	reg, err := deploy.NewRegistry(clickhouse.NewRegistry(conn, e.cfg.ClickHouse.Database()), pub, e.log, time.Now)
	if err != nil {
		p.Close()
		return nil, err
	}
	p.registry = reg
	for name, mc := range e.cfg.Models {
		if err := reg.Bootstrap(wctx, name, mc); err != nil {
			p.Close()
			return nil, fmt.Errorf("bootstrap %s: %w", name, err)
		}
	}
	return p, nil
}

func (e *env) dev(ctx context.Context, embeddedPort int) error {
	if !e.kafkaGiven {
		b, err := kafka.StartEmbedded(embeddedPort)
		if err != nil {
			return err
		}
		defer b.Close()
		e.cfg.Kafka.Brokers = b.Brokers()
		e.log.Warn("using the EMBEDDED Kafka-protocol broker: in memory, for trying Flywheel out only; pass --kafka to use a real cluster", "brokers", b.Brokers())
	}
	open := e.open()
	if open {
		e.log.Warn("no API keys configured: the API is OPEN to anyone who can reach it (allowed under flywheel dev only)")
	}
	p, err := e.connect(ctx, true)
	if err != nil {
		return err
	}
	defer p.Close()
	rt, err := retrain.New(retrain.Options{Models: e.cfg.Models, Store: clickhouse.NewTraining(p.conn, e.cfg.ClickHouse.Database()),
		Registry: p.registry, CodeVersion: version(), Registerer: p.promReg, Logger: e.log.With("component", "retrain"), Now: time.Now})
	if err != nil {
		return err
	}
	in, err := ingest.New(e.cfg.Ingest, ingest.Options{Kafka: e.cfg.Kafka, Inserts: clickhouse.NewInserts(p.conn, e.cfg.ClickHouse.Database()),
		Registerer: p.promReg, Logger: e.log.With("component", "ingest"), Now: time.Now})
	if err != nil {
		return err
	}
	judge, err := deploy.NewJudge(p.registry, clickhouse.NewRewards(p.conn, e.cfg.ClickHouse.Database()), e.cfg.Models, p.promReg, e.log.With("component", "deploy"), time.Now)
	if err != nil {
		return err
	}
	var el *kafka.Elector
	if e.kafkaGiven {
		// Other dev or retrain processes may share this cluster: elect one
		// scheduler. The embedded broker belongs to this process alone.
		if el, err = kafka.NewElector(e.cfg.Kafka, e.log.With("component", "retrain")); err != nil {
			return err
		}
		rt.ElectWith(el)
		judge.ElectWith(el)
	}
	g, gctx := errgroup.WithContext(ctx)
	if err := e.startServe(gctx, g, p, open, rt); err != nil {
		return err
	}
	if el != nil {
		g.Go(func() error { return el.Run(gctx) })
	}
	g.Go(func() error { return in.Run(gctx) })
	g.Go(func() error { return rt.Schedule(gctx) })
	g.Go(func() error { return judge.Run(gctx, e.cfg.Deploy.CheckInterval) })
	return g.Wait()
}

// dashboardHistory is how many alias moves, newest first, the dashboard
// reads: its markers of promotions and rollbacks.
const dashboardHistory = 200

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
			type version struct {
				Version   int       `json:"version"`
				CreatedAt time.Time `json:"created_at"`
				SHA256    string    `json:"sha256"`
				Size      int       `json:"size_bytes"`
			}
			vs := make([]version, len(versions))
			for i, v := range versions {
				vs[i] = version{v.Version, v.CreatedAt, v.SHA256, v.Size}
			}
			out := map[string]any{"overview": o, "deployments": hist, "versions": vs}
			lctx, cancel := context.WithTimeout(ctx, 2*time.Second) // Kafka down must not stall the page
			defer cancel()
			t := e.cfg.Kafka.Topics()
			if lag, err := kafka.GroupLag(lctx, e.cfg.Kafka, e.cfg.Ingest.GroupName(), t.Decisions, t.Feedback); err != nil {
				out["ingest_lag_error"] = err.Error()
			} else {
				out["ingest_lag"] = lag
			}
			return out, nil
		},
		SetReferences: func(ctx context.Context, name string, refs map[string]float64, source string) error {
			return clickhouse.SetReferences(ctx, p.conn, db, name, refs, source, time.Now())
		},
	}
}

func (e *env) serve(ctx context.Context) error {
	p, err := e.connect(ctx, true)
	if err != nil {
		return err
	}
	defer p.Close()
	g, gctx := errgroup.WithContext(ctx)
	if err := e.startServe(gctx, g, p, false, nil); err != nil {
		return err
	}
	return g.Wait()
}

// startServe builds the HTTP API and runs it and its model-event watcher in g.
func (e *env) startServe(ctx context.Context, g *errgroup.Group, p *parts, open bool, rt *retrain.Retrainer) error {
	spoolDir := e.cfg.Serve.SpoolDir
	if spoolDir == "" {
		dir, err := os.MkdirTemp("", "flywheel-spool-")
		if err != nil {
			return err
		}
		spoolDir = dir
		e.log.Warn("serve.spool_dir is not set: spooling in a temporary directory, which does not survive a restart of the machine", "dir", dir)
	}
	logger, err := feedback.NewLogger(e.cfg.Kafka, feedback.SpoolOptions{Dir: spoolDir, MaxBytes: e.cfg.Serve.SpoolMaxBytes}, p.promReg, e.log.With("component", "events"))
	if err != nil {
		return err
	}
	admin := serve.Admin{
		Promote:  p.registry.Promote,
		Rollback: p.registry.Rollback,
		Describe: func(ctx context.Context, name string, history int) (any, error) {
			return describe(ctx, p.registry, name, history)
		},
		Demote: p.registry.Demote,
		Canary: func(ctx context.Context, name string, version int, actor, reason string) error {
			if version == 0 {
				return p.registry.EndCanary(ctx, name, actor, reason)
			}
			return p.registry.StartCanary(ctx, name, version, actor, reason)
		},
	}
	if rt != nil {
		admin.Retrain = func(ctx context.Context, name string) (any, error) { return rt.Run(ctx, name, nil) }
	}
	srv, err := serve.New(e.serveConfig(open), p.registry, logger, admin, p.promReg, e.log.With("component", "serve"), time.Now)
	if err != nil {
		logger.Close(time.Second)
		return err
	}
	srv.SetInsights(e.insights(p))
	ln, err := net.Listen("tcp", e.cfg.HTTP.Addr)
	if err != nil {
		logger.Close(time.Second)
		return fmt.Errorf("listen on %s: %w", e.cfg.HTTP.Addr, err)
	}
	e.log.Info("serving", "addr", "http://"+ln.Addr().String(), "models", len(e.cfg.Models), "spool", spoolDir)
	shipped := make(chan struct{})
	g.Go(func() error {
		defer close(shipped)
		return logger.Run(ctx)
	})
	g.Go(func() error {
		err := srv.Run(ctx, ln) // returns once in-flight requests are done
		<-shipped
		flush := e.cfg.Serve.ShutdownTimeout
		if flush <= 0 {
			flush = 10 * time.Second
		}
		if cerr := logger.Close(flush); cerr != nil && err == nil {
			err = cerr
		}
		return err
	})
	g.Go(func() error {
		return deploy.Watch(ctx, e.cfg.Kafka, e.log, func(ev flywheel.ModelEvent) { srv.OnModelEvent(ctx, ev) })
	})
	return nil
}

func (e *env) ingest(ctx context.Context) error {
	p, err := e.connect(ctx, true)
	if err != nil {
		return err
	}
	defer p.Close()
	in, err := ingest.New(e.cfg.Ingest, ingest.Options{Kafka: e.cfg.Kafka, Inserts: clickhouse.NewInserts(p.conn, e.cfg.ClickHouse.Database()),
		Registerer: p.promReg, Logger: e.log, Now: time.Now})
	if err != nil {
		return err
	}
	return in.Run(ctx)
}

func (e *env) retrainScheduler(ctx context.Context) error {
	p, err := e.connect(ctx, true)
	if err != nil {
		return err
	}
	defer p.Close()
	rt, err := retrain.New(retrain.Options{Models: e.cfg.Models, Store: clickhouse.NewTraining(p.conn, e.cfg.ClickHouse.Database()),
		Registry: p.registry, CodeVersion: version(), Registerer: p.promReg, Logger: e.log, Now: time.Now})
	if err != nil {
		return err
	}
	// Several schedulers may run; the election makes each scheduled run happen once.
	el, err := kafka.NewElector(e.cfg.Kafka, e.log)
	if err != nil {
		return err
	}
	rt.ElectWith(el)
	judge, err := deploy.NewJudge(p.registry, clickhouse.NewRewards(p.conn, e.cfg.ClickHouse.Database()), e.cfg.Models, p.promReg, e.log.With("component", "deploy"), time.Now)
	if err != nil {
		return err
	}
	judge.ElectWith(el)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return el.Run(gctx) })
	g.Go(func() error { return rt.Schedule(gctx) })
	g.Go(func() error { return judge.Run(gctx, e.cfg.Deploy.CheckInterval) })
	return g.Wait()
}

func (e *env) retrainNow(ctx context.Context, name string, asJSON bool) error {
	if name == "" {
		return errors.New("retrain --now needs --model NAME")
	}
	p, err := e.connect(ctx, true)
	if err != nil {
		return err
	}
	defer p.Close()
	rt, err := retrain.New(retrain.Options{Models: e.cfg.Models, Store: clickhouse.NewTraining(p.conn, e.cfg.ClickHouse.Database()),
		Registry: p.registry, CodeVersion: version(), Logger: e.log, Now: time.Now})
	if err != nil {
		return err
	}
	start := time.Now()
	res, err := rt.Run(ctx, name, func(step string) {
		fmt.Fprintf(e.stderr, "[%6.1fs] %s\n", time.Since(start).Seconds(), step)
	})
	if res != nil {
		if asJSON {
			_ = json.NewEncoder(e.stdout).Encode(res)
		} else {
			printResult(e.stdout, res)
		}
	}
	return err
}

// offline builds a retrainer for the one-shot commands (no metrics, no
// election).
func (e *env) offline(ctx context.Context) (*parts, *retrain.Retrainer, error) {
	p, err := e.connect(ctx, false)
	if err != nil {
		return nil, nil, err
	}
	rt, err := retrain.New(retrain.Options{Models: e.cfg.Models, Store: clickhouse.NewTraining(p.conn, e.cfg.ClickHouse.Database()),
		Registry: p.registry, CodeVersion: version(), Logger: e.log, Now: time.Now})
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	return p, rt, nil
}

func (e *env) retrainReproduce(ctx context.Context, name string, ver int, asJSON bool) error {
	if name == "" || ver < 1 {
		return errors.New("retrain --reproduce needs --model NAME and --version N")
	}
	p, rt, err := e.offline(ctx)
	if err != nil {
		return err
	}
	defer p.Close()
	rep, err := rt.Reproduce(ctx, name, ver)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(e.stdout).Encode(rep)
	}
	if rep.Identical {
		fmt.Fprintf(e.stdout, "%s v%d reproduced from %d examples: weights identical, bit for bit (%s)\n", name, ver, rep.Rows, rep.Took)
		return nil
	}
	fmt.Fprintf(e.stdout, "%s v%d retrained from %d examples: %d weights differ\n", name, ver, rep.Rows, rep.DifferentCount)
	return fmt.Errorf("%s v%d is not reproducible: %d weights differ", name, ver, rep.DifferentCount)
}

func (e *env) eval(ctx context.Context, name string, ver int, window time.Duration, asJSON bool) error {
	if name == "" || ver < 1 {
		return errors.New("eval needs --model NAME and --version N")
	}
	p, rt, err := e.offline(ctx)
	if err != nil {
		return err
	}
	defer p.Close()
	now := time.Now()
	rep, err := rt.Evaluate(ctx, name, ver, now.Add(-window), now)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(e.stdout).Encode(rep)
	}
	fmt.Fprint(e.stdout, rep.String())
	return nil
}

func printResult(w io.Writer, r *retrain.Result) {
	fmt.Fprintf(w, "model %s: %s (%s)\n  %s\n", r.Model, r.Outcome, r.Took, r.Reason)
	if r.Comparison != nil {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  policy\tIPS\tSNIPS\tDR\tESS\n")
		for _, row := range []struct {
			name string
			ev   retrain.Evaluation
		}{{fmt.Sprintf("candidate v%d", r.Version), r.Comparison.Candidate}, {fmt.Sprintf("champion v%d", r.Champion), r.Comparison.Champion}} {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%.0f\n", row.name, est(row.ev.IPS), est(row.ev.SNIPS), est(row.ev.DR), row.ev.ESS)
		}
		tw.Flush()
		fmt.Fprintf(w, "  trained on %d examples, judged on %d\n", r.TrainRows, r.Holdout)
	}
	if c := r.Classification; c != nil {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  model	log loss	AUC	ECE	mean predicted / positive rate\n")
		for _, row := range []struct {
			name string
			ev   retrain.ClassifierEval
		}{{fmt.Sprintf("candidate v%d", r.Version), c.Candidate}, {fmt.Sprintf("champion v%d", r.Champion), c.Champion}} {
			fmt.Fprintf(tw, "  %s\t%s\t%.4f\t%.4f\t%.4f / %.4f\n", row.name, est(row.ev.LogLoss), row.ev.AUC, row.ev.ECE, row.ev.MeanPredicted, row.ev.PositiveRate)
		}
		tw.Flush()
		fmt.Fprintf(w, "  log loss difference (paired) %s; trained on %d examples, judged on %d\n", est(c.LogLossDiff), r.TrainRows, r.Holdout)
	}
}

func est(e retrain.Estimate) string {
	return fmt.Sprintf("%.4f [%.4f, %.4f]", e.Value, e.Lower, e.Upper)
}

// describe returns the registry's view of name: its champion, its latest
// history versions and alias moves (all of them when history is 0).
func describe(ctx context.Context, reg *deploy.Registry, name string, history int) (any, error) {
	champ, err := reg.Alias(ctx, name, deploy.Champion)
	if err != nil {
		return nil, err
	}
	versions, err := reg.RecentVersions(ctx, name, history)
	if err != nil {
		return nil, err
	}
	hist, err := reg.RecentHistory(ctx, name, history)
	if err != nil {
		return nil, err
	}
	return map[string]any{"champion": champ, "versions": versions, "history": hist}, nil
}

func (e *env) models(ctx context.Context, args []string, ver int, end, asJSON bool) error {
	if len(args) == 0 {
		return errors.New("models: list | show NAME | promote NAME --version N | rollback NAME | history NAME | canary NAME (--version N | --end)")
	}
	// Only moves are published to Kafka; reading needs ClickHouse alone.
	p, err := e.connect(ctx, args[0] == "promote" || args[0] == "rollback" || args[0] == "canary")
	if err != nil {
		return err
	}
	defer p.Close()
	sub := args[0]
	name := ""
	if len(args) > 1 {
		name = args[1]
	}
	need := func() error {
		if name == "" {
			return fmt.Errorf("models %s needs a model name", sub)
		}
		return nil
	}
	out := func(v any) error {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	actor := "cli"
	if u := e.getenv("USER"); u != "" {
		actor += ":" + u
	}
	switch sub {
	case "list":
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "MODEL\tKIND\tCHAMPION\tLATEST")
		for name, mc := range e.cfg.Models {
			c, _ := p.registry.Alias(ctx, name, deploy.Champion)
			l, _ := p.registry.Latest(ctx, name)
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", name, mc.Kind, c, l)
		}
		return tw.Flush()
	case "show":
		if err := need(); err != nil {
			return err
		}
		d, err := describe(ctx, p.registry, name, 0)
		if err != nil {
			return err
		}
		return out(d)
	case "history":
		if err := need(); err != nil {
			return err
		}
		h, err := p.registry.History(ctx, name)
		if err != nil {
			return err
		}
		if asJSON {
			return out(h)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tALIAS\tVERSION\tFROM\tACTOR\tREASON")
		for _, d := range h {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", d.Time.Format(time.RFC3339), d.Alias, d.Version, d.PreviousVersion, d.Actor, d.Reason)
		}
		return tw.Flush()
	case "promote":
		if err := need(); err != nil {
			return err
		}
		if ver < 1 {
			return errors.New("models promote needs --version N")
		}
		if err := p.registry.Promote(ctx, name, ver, actor, "manual promotion from the CLI"); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s: champion is now v%d\n", name, ver)
		return nil
	case "canary":
		if err := need(); err != nil {
			return err
		}
		if end {
			if err := p.registry.EndCanary(ctx, name, actor, "ended from the CLI"); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s: canary ended\n", name)
			return nil
		}
		if ver < 1 {
			return errors.New("models canary needs --version N or --end")
		}
		if err := p.registry.StartCanary(ctx, name, ver, actor, "started from the CLI"); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s: v%d is the canary, with promote.canary.share of traffic\n", name, ver)
		return nil
	case "rollback":
		if err := need(); err != nil {
			return err
		}
		v, err := p.registry.Rollback(ctx, name, actor, "manual rollback from the CLI")
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s: champion is now v%d\n", name, v)
		return nil
	}
	return fmt.Errorf("models: unknown subcommand %q", sub)
}

func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:8080", "Flywheel's base URL")
	events := fs.Int("events", 1000, "decisions to ask for")
	model := fs.String("model", "homepage", "ranker to call")
	conc := fs.Int("concurrency", 4, "parallel simulated users")
	rate := fs.Float64("rate", 0, "events per second (0: as fast as possible)")
	seed := fs.Uint64("seed", 1, "seed of the ground truth")
	world := fs.String("world", sim.Default, "the simulated product: "+strings.Join(sim.Worlds(), ", "))
	key := fs.String("key", "", "app API key")
	asJSON := fs.Bool("json", false, "print one JSON line")
	refs := fs.Bool("references", true, "store the random and oracle reward rates as the model's references (drawn by the dashboard; needs an admin --key when the API has keys)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	res, err := sim.Run(ctx, sim.Config{URL: strings.TrimRight(*url, "/"), Model: *model, Events: *events, Concurrency: *conc, Rate: *rate, Seed: *seed, World: *world, APIKey: *key, PublishReferences: *refs})
	if err != nil {
		return err
	}
	if res.ReferencesError != "" {
		fmt.Fprintf(stderr, "sim: the references were not stored: %s\n", res.ReferencesError)
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	printSim(stdout, res)
	return nil
}

func printSim(w io.Writer, r *sim.Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\tdecisions\treward rate\t± s.e.\t")
	for _, v := range r.Versions {
		fmt.Fprintf(tw, "model v%d\t%d\t%.3f\t%.3f\t\n", v.Version, v.Decisions, v.RewardRate, v.StdErr)
	}
	fmt.Fprintf(tw, "random (same contexts)\t%d\t%.3f\t\t\n", r.Events, r.RandomRewardRate)
	fmt.Fprintf(tw, "oracle (same contexts)\t%d\t%.3f\t\t\n", r.Events, r.OracleRewardRate)
	tw.Flush()
	if r.Errors > 0 {
		fmt.Fprintf(w, "%d requests failed\n", r.Errors)
	}
}
