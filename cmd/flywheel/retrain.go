package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/deploy"
	"github.com/flywheel-dev/flywheel/kafka"
	"github.com/flywheel-dev/flywheel/retrain"
)

// runRetrain is `flywheel retrain`: the scheduler, or with --now one run
// for --model, or with --reproduce a rebuild of --model's --version.
func runRetrain(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("retrain", getenv, stdout, stderr)
	now := c.fs.Bool("now", false, "run once now instead of scheduling")
	modelName := c.fs.String("model", "", "with --now or --reproduce: the model")
	ver := c.fs.Int("version", 0, "with --reproduce: the version")
	reproduce := c.fs.Bool("reproduce", false, "rebuild --model's --version from its manifest and compare the weights")
	asJSON := c.fs.Bool("json", false, "print JSON")
	if _, err := c.parse(args); err != nil {
		return err
	}
	e, err := c.env()
	if err != nil {
		return err
	}
	if *reproduce {
		return e.retrainReproduce(ctx, *modelName, *ver, *asJSON)
	}
	if *now {
		return e.retrainNow(ctx, *modelName, *asJSON)
	}
	return e.retrainScheduler(ctx)
}

func (e *env) retrainScheduler(ctx context.Context) error {
	p, err := e.connect(ctx, true)
	if err != nil {
		return err
	}
	defer p.Close()
	rt, err := e.newRetrainer(p, p.promReg, e.log)
	if err != nil {
		return err
	}
	// Several schedulers may run; the election makes each scheduled run happen once.
	el, err := kafka.NewElector(e.cfg.Kafka, e.log)
	if err != nil {
		return err
	}
	rt.ElectWith(el)
	rt.AnswerWith(p.events) // manual runs asked for by serve's admin API and by `retrain --now`
	judge, err := deploy.NewJudge(deploy.JudgeOptions{Registry: p.registry, Rewards: clickhouse.NewRewards(p.conn, e.cfg.ClickHouse.Database()),
		Models: e.cfg.Models, Registerer: p.promReg, Logger: e.log.With("component", "deploy"), Now: time.Now})
	if err != nil {
		return err
	}
	judge.ElectWith(el)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return el.Run(gctx) })
	g.Go(func() error { return rt.Schedule(gctx) })
	g.Go(func() error {
		return deploy.Watch(gctx, e.cfg.Kafka, e.log, func(ev flywheel.ModelEvent) { rt.OnModelEvent(gctx, ev) })
	})
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
	rt, err := e.newRetrainer(p, nil, e.log)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := e.awaitClosing(ctx, p, name, start); err != nil {
		return err
	}
	progress := func(step string) { fmt.Fprintf(e.stderr, "[%6.1fs] %s\n", time.Since(start).Seconds(), step) }
	res, err := e.retrainElected(ctx, p, name, progress)
	if errors.Is(err, errNoScheduler) {
		progress("no elected retrain scheduler answered: retraining here")
		res, err = rt.Run(ctx, name, progress)
	}
	if res != nil {
		if asJSON {
			_ = json.NewEncoder(e.stdout).Encode(res)
		} else {
			printResult(e.stdout, res)
		}
	}
	return err
}

// errNoScheduler: no elected retrain scheduler answered a request.
var errNoScheduler = errors.New("no elected retrain scheduler answered")

// retrainElected asks the elected retrain scheduler for a run of name and
// returns its report, so that the run does not overlap one it schedules or
// one another process asked for; errNoScheduler if none answered.
func (e *env) retrainElected(ctx context.Context, p *parts, name string, progress func(string)) (*retrain.Result, error) {
	end, err := kafka.EventsEnd(ctx, e.cfg.Kafka)
	if err != nil {
		return nil, err
	}
	q := deploy.NewRetrainRequests(p.events, 0, time.Now)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go deploy.WatchFrom(wctx, e.cfg.Kafka, end, e.log, q.OnModelEvent)
	progress("asking the elected retrain scheduler")
	ev, err := q.Request(ctx, name, "cli")
	if flywheel.ErrorCode(err) == flywheel.EUNAVAILABLE {
		return nil, fmt.Errorf("%w: %v", errNoScheduler, err)
	}
	if err != nil {
		return nil, err
	}
	progress("run by the elected retrain scheduler")
	return decodeRun(ev)
}

// decodeRun is the report a retrain_finished event carries.
func decodeRun(ev flywheel.ModelEvent) (*retrain.Result, error) {
	res := &retrain.Result{Model: ev.Model, Outcome: ev.Outcome, Reason: ev.Reason, Version: ev.Version}
	if len(ev.Result) > 0 {
		if err := json.Unmarshal(ev.Result, res); err != nil {
			return nil, fmt.Errorf("the scheduler's report of the run: %w", err)
		}
	}
	if res.Outcome == retrain.Failed {
		return res, errors.New(res.Reason)
	}
	return res, nil
}

// awaitClosing waits, for a model whose reward window is at most a minute,
// until the decisions made before start can be trained on: their windows
// have ended and ingest has written them and the feedback that came inside
// them (the closing watermark has passed start plus the window). So `retrain --now`
// right after a burst of traffic (the README's tour, after `flywheel sim`)
// trains on that traffic. It waits at most the window plus 10 s (ingest may
// be stopped: the run then reports what it could not use) and not at all for
// longer windows. It returns an error only if ctx ends.
func (e *env) awaitClosing(ctx context.Context, p *parts, name string, start time.Time) error {
	w := e.cfg.Models[name].Reward.Window
	if w <= 0 || w > time.Minute {
		return nil
	}
	training := clickhouse.NewTraining(p.conn, e.cfg.ClickHouse.Database())
	want, deadline := start.Add(w), time.Now().Add(w+10*time.Second)
	for said := false; ; said = true {
		fw, err := training.ClosedThrough(ctx)
		if err == nil && !fw.Before(want) || time.Now().After(deadline) {
			return nil
		}
		if !said {
			fmt.Fprintf(e.stderr, "[%6.1fs] waiting for the reward windows (%v) of the latest decisions to close\n", time.Since(start).Seconds(), w)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
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
		fmt.Fprint(w, r.Comparison.SlotsTable(r.Estimator, r.Version, r.Champion))
		fmt.Fprintf(w, "  trained on %d examples, judged on %d (%s)\n", r.TrainRows, r.Judged, evidenceName(r))
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
		fmt.Fprintf(w, "  log loss difference (paired) %s; trained on %d examples, judged on %d (%s)\n", est(c.LogLossDiff), r.TrainRows, r.Judged, evidenceName(r))
	}
}

// evidenceName says what r's candidate was judged on.
func evidenceName(r *retrain.Result) string {
	if r.Evidence == flywheel.EvidenceProgressive {
		return "progressive validation: each example since the cutoff before learning it"
	}
	return "a holdout it did not learn"
}

func est(e retrain.Estimate) string {
	return fmt.Sprintf("%.4f [%.4f, %.4f]", e.Value, e.Lower, e.Upper)
}
