// Command loop is the Flywheel side of the loop benchmark (make bench,
// BENCH_ONLY=loop): it runs `flywheel dev` against the real Kafka and
// ClickHouse (a database and a topic prefix of its own) with the documented
// model defaults except a fast retrain schedule and a short reward window,
// lets the simulator drive it through one world, and prints one JSON line:
// the simulator's reward figures per window of decisions and per served
// version (with the random and oracle policies on the same contexts), every
// retrain run's outcome, and every promotion with the exact expected reward
// of both versions' policies (exploration included) on the same fresh draws
// from the world, so that a promotion of a worse candidate shows. vw.py
// --window runs Vowpal Wabbit online on the same world's stream.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/deploy"
	"github.com/flywheel-dev/flywheel/model"
	"github.com/flywheel-dev/flywheel/sim"
)

// Options are the run's settings.
type Options struct {
	Binary       string
	Kafka        string
	ClickHouse   string // host:port
	World        string
	Events       int
	Rate         float64
	Concurrency  int
	Seed         uint64
	Schedule     string
	RewardWindow time.Duration
	Window       int
	EvalDraws    int
	Tail         time.Duration
	Log          string
	Keep         bool
	Margin       float64
}

// Promotion is one move of the champion alias.
type Promotion struct {
	From   int    `json:"from"`
	To     int    `json:"to"`
	Reason string `json:"reason"`
	Actor  string `json:"actor"`
	// FromValue and ToValue are the exact expected rewards of the two
	// versions' policies on the same fresh contexts; Diff is ToValue −
	// FromValue and DiffStdErr its paired standard error.
	FromValue  float64 `json:"from_value"`
	ToValue    float64 `json:"to_value"`
	Diff       float64 `json:"diff"`
	DiffStdErr float64 `json:"diff_std_err"`
	// Worse: the promoted version's value is lower by more than two
	// standard errors; WorseBeyondMargin: lower by more than the promotion
	// rule's margin (a share of the champion's value) and two standard
	// errors, which the non-inferiority rule is meant to refuse.
	Worse             bool `json:"worse"`
	WorseBeyondMargin bool `json:"worse_beyond_margin"`
}

// Report is the program's output.
type Report struct {
	World       string         `json:"world"`
	Database    string         `json:"database"`
	Config      string         `json:"config"`
	Events      int            `json:"events"`
	Rate        float64        `json:"rate"`
	Seconds     float64        `json:"seconds"`
	Sim         *sim.Result    `json:"sim"`
	RetrainRuns map[string]int `json:"retrain_runs"`
	// NotPromoted are the retrain runs that neither promoted nor skipped,
	// with their reasons.
	NotPromoted  []RetrainRun   `json:"not_promoted"`
	Versions     []VersionValue `json:"versions"`
	Promotions   []Promotion    `json:"promotions"`
	WorsePromote int            `json:"worse_promotions"`
	// WorseBeyondMargin counts the promotions worse beyond Margin.
	WorseBeyondMargin int     `json:"worse_beyond_margin_promotions"`
	Margin            float64 `json:"margin"`
	EvalDraws         int     `json:"eval_draws"`
}

// RetrainRun is one row of the retrain_runs table.
type RetrainRun struct {
	Outcome  string `json:"outcome"`
	Reason   string `json:"reason"`
	Version  int    `json:"version"`
	Champion int    `json:"champion"`
}

// VersionValue is one registered version's exact expected reward on the
// evaluation draws.
type VersionValue struct {
	Version int     `json:"version"`
	Value   float64 `json:"value"`
}

func main() {
	var o Options
	flag.StringVar(&o.Binary, "flywheel", "", "the flywheel binary")
	flag.StringVar(&o.Kafka, "kafka", "127.0.0.1:9092", "Kafka brokers")
	flag.StringVar(&o.ClickHouse, "clickhouse", "127.0.0.1:9000", "ClickHouse native address")
	flag.StringVar(&o.World, "world", sim.Default, "simulated world")
	flag.IntVar(&o.Events, "events", 40000, "decisions")
	flag.Float64Var(&o.Rate, "rate", 200, "decisions per second")
	flag.IntVar(&o.Concurrency, "concurrency", 4, "simulated users in parallel")
	flag.Uint64Var(&o.Seed, "seed", 1, "the world's seed")
	flag.StringVar(&o.Schedule, "schedule", "@every 20s", "retrain schedule")
	flag.DurationVar(&o.RewardWindow, "reward-window", 5*time.Second, "reward window")
	flag.IntVar(&o.Window, "window", 10000, "decisions per reported window")
	flag.IntVar(&o.EvalDraws, "eval-draws", 20000, "fresh contexts on which each version's policy is valued")
	flag.DurationVar(&o.Tail, "tail", 0, "keep the loop running this long after the simulator ends (to see late retrains)")
	flag.StringVar(&o.Log, "log", "", "file for flywheel dev's output (default: discarded)")
	flag.BoolVar(&o.Keep, "keep", false, "keep the ClickHouse database")
	flag.Float64Var(&o.Margin, "margin", 0.05, "the promotion rule's margin (promote.margin, its documented default) for worse_beyond_margin")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	rep, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loop:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(rep)
}

func run(ctx context.Context, o Options) (*Report, error) {
	if o.Binary == "" {
		return nil, fmt.Errorf("-flywheel is required")
	}
	world, err := sim.NewEnv(o.World, o.Seed)
	if err != nil {
		return nil, err
	}
	suffix := time.Now().UnixNano()
	db := fmt.Sprintf("bench_loop_%s_%d", world.Name(), suffix)
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	url := "http://" + addr
	// The documented defaults (flywheel.example.yaml) but the schedule and
	// the reward window; the ranker's interaction is spelled out because a
	// model named in the file has none by default.
	cfg := fmt.Sprintf(`http: {addr: %q}
kafka: {brokers: [%q], topic_prefix: "benchloop%d."}
clickhouse: {dsn: "clickhouse://%s/%s"}
models:
  homepage:
    kind: ranker
    interactions: [[user, item]]
    reward: {window: %s}
    retrain: {schedule: %q}
`, addr, o.Kafka, suffix, o.ClickHouse, db, o.RewardWindow, o.Schedule)
	dir, err := os.MkdirTemp("", "bench-loop")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cfgPath := filepath.Join(dir, "flywheel.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}

	cmd := exec.Command(o.Binary, "dev", "--config", cfgPath, "--kafka", o.Kafka)
	cmd.Dir = dir // its spool directory, if relative, goes with the temp dir
	if o.Log != "" {
		f, err := os.Create(o.Log)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start flywheel dev: %w", err)
	}
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	if err := waitReady(ctx, url, exited); err != nil {
		return nil, fmt.Errorf("%w (exit: %v)", err, exitErr)
	}

	start := time.Now()
	res, err := sim.Run(ctx, sim.Config{URL: url, Events: o.Events, Concurrency: o.Concurrency, Rate: o.Rate,
		Seed: o.Seed, World: o.World, Window: o.Window, PublishReferences: true})
	if err != nil {
		return nil, fmt.Errorf("simulator: %w", err)
	}
	secs := time.Since(start).Seconds()
	if o.Tail > 0 {
		time.Sleep(o.Tail)
	}
	stop()
	stopped = true
	res.EventIDs = nil

	conn, err := clickhouse.Open(ctx, clickhouse.Config{DSN: fmt.Sprintf("clickhouse://%s/%s", o.ClickHouse, db)})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if !o.Keep {
		defer conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
	}
	rep := &Report{World: world.Name(), Database: db, Config: cfg, Events: o.Events, Rate: o.Rate, Seconds: secs,
		Sim: res, RetrainRuns: map[string]int{}, Promotions: []Promotion{}, EvalDraws: o.EvalDraws, Margin: o.Margin}

	rows, err := conn.Query(ctx, "SELECT outcome, reason, version, champion FROM "+db+".retrain_runs WHERE model = 'homepage' ORDER BY started_ms")
	if err != nil {
		return nil, fmt.Errorf("retrain runs: %w", err)
	}
	for rows.Next() {
		var r RetrainRun
		var v, c uint32
		if err := rows.Scan(&r.Outcome, &r.Reason, &v, &c); err != nil {
			return nil, err
		}
		r.Version, r.Champion = int(v), int(c)
		rep.RetrainRuns[r.Outcome]++
		if r.Outcome != "promoted" && r.Outcome != "skipped" {
			rep.NotPromoted = append(rep.NotPromoted, r)
		}
	}
	rows.Close()

	// Every registered version valued on the same fresh draws.
	reg := clickhouse.NewRegistry(conn, db)
	latest, err := reg.LatestVersion(ctx, "homepage")
	if err != nil {
		return nil, err
	}
	draws := drawContexts(world, o.EvalDraws)
	values := map[int][]float64{}
	for v := 1; v <= latest; v++ {
		mv, ok, err := reg.Version(ctx, "homepage", v)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		m, err := model.Decode(mv.Artifact)
		if err != nil {
			return nil, fmt.Errorf("decode v%d: %w", v, err)
		}
		values[v] = valueOf(m, draws)
		rep.Versions = append(rep.Versions, VersionValue{Version: v, Value: mean(values[v])})
	}

	moves, err := reg.Moves(ctx, "homepage", 0)
	if err != nil {
		return nil, err
	}
	for _, m := range oldestFirst(moves) {
		if m.Alias != deploy.Champion || m.PreviousVersion == 0 || m.Version == 0 {
			continue
		}
		p := Promotion{From: m.PreviousVersion, To: m.Version, Reason: m.Reason, Actor: m.Actor}
		a, b := values[m.PreviousVersion], values[m.Version]
		if a != nil && b != nil {
			p.FromValue, p.ToValue = mean(a), mean(b)
			d := make([]float64, len(a))
			for i := range a {
				d[i] = b[i] - a[i]
			}
			p.Diff, p.DiffStdErr = mean(d), stdErr(d)
			p.Worse = p.Diff < -2*p.DiffStdErr
			p.WorseBeyondMargin = p.Diff < -o.Margin*p.FromValue-2*p.DiffStdErr
		}
		if p.Worse {
			rep.WorsePromote++
		}
		if p.WorseBeyondMargin {
			rep.WorseBeyondMargin++
		}
		rep.Promotions = append(rep.Promotions, p)
	}
	return rep, nil
}

// oldestFirst returns the moves in the order they were made: Moves gives
// them newest first.
func oldestFirst(ms []clickhouse.AliasMove) []clickhouse.AliasMove {
	out := make([]clickhouse.AliasMove, 0, len(ms))
	for i := len(ms) - 1; i >= 0; i-- {
		out = append(out, ms[i])
	}
	return out
}

type draw struct {
	ctx     flywheel.Features
	actions []flywheel.Action
	truth   []float64
}

func drawContexts(w sim.Env, n int) []draw {
	rng := rand.New(rand.NewPCG(99, 7)) // not the simulator's traffic
	out := make([]draw, n)
	for i := range out {
		c, a, t := w.Draw(rng)
		out[i] = draw{c, a, t}
	}
	return out
}

// valueOf is the expected reward of m's policy (with its exploration) on
// each draw.
func valueOf(m *model.Model, ds []draw) []float64 {
	var r model.Ranking
	out := make([]float64, len(ds))
	for i, d := range ds {
		m.Policy(d.ctx, d.actions, &r)
		for j, p := range r.Probabilities {
			out[i] += p * d.truth[j]
		}
	}
	return out
}

func mean(x []float64) float64 {
	s := 0.0
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}

func stdErr(x []float64) float64 {
	m, s := mean(x), 0.0
	for _, v := range x {
		s += (v - m) * (v - m)
	}
	return math.Sqrt(s / float64(len(x)-1) / float64(len(x)))
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitReady(ctx context.Context, url string, exited <-chan struct{}) error {
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("flywheel dev exited before it was ready")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("flywheel dev at %s not ready after 90s", url)
}
