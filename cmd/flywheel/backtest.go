package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/retrain"
	"github.com/flywheel-dev/flywheel/sim"
)

// listFlag is a flag that takes a list: every value given is split on sep,
// and the flag may be repeated.
type listFlag struct {
	sep  string
	vals []string
	set  bool
}

func (l *listFlag) String() string { return strings.Join(l.vals, l.sep) }

func (l *listFlag) Set(v string) error {
	if !l.set {
		l.vals, l.set = nil, true
	}
	for _, s := range strings.Split(v, l.sep) {
		if s = strings.TrimSpace(s); s != "" {
			l.vals = append(l.vals, s)
		}
	}
	return nil
}

// backtestSetting is one column of a backtest: a schedule, a rule, a margin
// and an exploration.
type backtestSetting struct {
	Schedule    string  `json:"schedule"`
	Rule        string  `json:"rule"`
	Margin      float64 `json:"margin"`
	Exploration string  `json:"exploration"`
	Training    string  `json:"training"` // full or incremental
	mc          flywheel.ModelConfig
}

func (s backtestSetting) String() string {
	return fmt.Sprintf("schedule %s, rule %s, margin %g, exploration %s, training %s", s.Schedule, s.Rule, s.Margin, s.Exploration, s.Training)
}

type backtestRun struct {
	Setting backtestSetting         `json:"setting"`
	Result  *retrain.BacktestResult `json:"result"`
	// Final is the reward of the last --final decisions.
	Final struct {
		From          int     `json:"from"`
		To            int     `json:"to"`
		Reward        float64 `json:"reward"`
		Random        float64 `json:"random"`
		Oracle        float64 `json:"oracle"`
		ShareOfOracle float64 `json:"share_of_oracle"`
	} `json:"final"`
	Took string `json:"took"`
}

type backtestWorld struct {
	World string        `json:"world"`
	Runs  []backtestRun `json:"runs"`
}

// runBacktest is `flywheel backtest`: every world through every setting
// (the product of the list flags), in virtual time, in process.
func runBacktest(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	f, err := parseBacktestFlags(args, stderr)
	if err != nil {
		return err
	}
	base, err := f.baseModel(getenv)
	if err != nil {
		return err
	}
	// Every setting and world is checked before the first is played.
	settings, err := f.settings(base)
	if err != nil {
		return err
	}
	for _, w := range f.worlds.vals {
		if _, err := sim.NewEnv(w, f.seed); err != nil {
			return flywheel.Errorf(flywheel.EINVALID, "backtest: %v", err)
		}
	}
	out, err := f.play(ctx, settings)
	if err != nil {
		return err
	}
	return f.printWorlds(stdout, out, base.Reward.Window)
}

// backtestFlags are the flags of `flywheel backtest`.
type backtestFlags struct {
	configPath, modelName string
	// the list flags: the settings are the product of all but worlds
	worlds, schedules, rules, margins, explorations, trainings *listFlag

	decisions, every, final int
	rate                    float64
	seed                    uint64
	rewardWindow            time.Duration
	ingestLag               time.Duration
	retrainWindow           time.Duration
	minNew                  int
	canaryShare             float64
	canaryDuration          time.Duration
	asJSON                  bool
	given                   map[string]bool // the names of the flags given
}

// parseBacktestFlags parses args, writing usage and parse errors to stderr,
// and returns an error for an extra argument or a count or rate that is not
// positive.
func parseBacktestFlags(args []string, stderr io.Writer) (*backtestFlags, error) {
	f := &backtestFlags{
		worlds:       &listFlag{sep: ",", vals: []string{sim.Default}},
		schedules:    &listFlag{sep: ";", vals: []string{"@every 20s"}},
		rules:        &listFlag{sep: ",", vals: []string{flywheel.RuleNonInferior}},
		margins:      &listFlag{sep: ",", vals: []string{"0.05"}},
		explorations: &listFlag{sep: ",", vals: []string{"squarecb"}},
		trainings:    &listFlag{sep: ",", vals: []string{retrain.TrainedFull}},
		given:        map[string]bool{},
	}
	fs := flag.NewFlagSet("backtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.configPath, "config", "", "take the model's configuration from this file (with --model); flags override it")
	fs.StringVar(&f.modelName, "model", "homepage", "with --config: the ranker whose configuration is the base")
	fs.Var(f.worlds, "world", "worlds, comma separated: "+strings.Join(sim.Worlds(), ", "))
	fs.Var(f.schedules, "schedule", "retrain schedules in virtual time, separated by ';' (cron specs contain commas): a cron spec, @every D, or a number N (every N decisions)")
	fs.Var(f.rules, "rule", "promotion rules, comma separated: non-inferior, superior")
	fs.Var(f.margins, "margin", "non-inferiority margins, comma separated")
	fs.Var(f.explorations, "exploration", "explorations, comma separated: epsilon-greedy:E, softmax:LAMBDA, squarecb (γ growing with the examples) or squarecb:SCALE")
	fs.Var(f.trainings, "training", "how candidates learn, comma separated: full (from zero over the window), incremental (from the champion's state, retrain.incremental)")
	fs.IntVar(&f.decisions, "decisions", 40000, "decisions to play per setting")
	fs.Float64Var(&f.rate, "rate", 100, "decisions per virtual second")
	fs.IntVar(&f.every, "every", 5000, "decisions per reported window")
	fs.IntVar(&f.final, "final", 10000, "the summary's span: the last N decisions")
	fs.Uint64Var(&f.seed, "seed", 1, "seed of the world and of the traffic")
	fs.DurationVar(&f.rewardWindow, "reward-window", 5*time.Second, "reward window, in virtual time")
	fs.DurationVar(&f.ingestLag, "ingest-lag", 0, "how long after its reward window a decision closes (the closing watermark's lag behind the clock), in virtual time")
	fs.DurationVar(&f.retrainWindow, "retrain-window", 0, "retrain window, in virtual time (0: the model's, 168h by default)")
	fs.IntVar(&f.minNew, "min-new", 0, "retrain.min_new_examples (0: the model's, 1000 by default)")
	fs.Float64Var(&f.canaryShare, "canary", 0, "promote.canary.share: a candidate that passes, or whose evidence is inconclusive, first serves this share, judged every 15 virtual seconds (0: the model's, none by default)")
	fs.DurationVar(&f.canaryDuration, "canary-duration", 0, "promote.canary.duration, in virtual time (0: the model's, 30m by default)")
	fs.BoolVar(&f.asJSON, "json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("backtest: unexpected argument %q", fs.Arg(0))
	}
	fs.Visit(func(fl *flag.Flag) { f.given[fl.Name] = true })
	if f.decisions <= 0 || f.every <= 0 || f.final <= 0 || !(f.rate > 0) {
		return nil, flywheel.Errorf(flywheel.EINVALID, "backtest: --decisions, --every, --final and --rate must be positive")
	}
	if f.ingestLag < 0 {
		return nil, flywheel.Errorf(flywheel.EINVALID, "backtest: --ingest-lag must not be negative; got %v", f.ingestLag)
	}
	return f, nil
}

// baseModel returns the configuration every setting starts from: with
// --config, the file's ranker --model, whose values then stand for the list
// flags not given (baseModel sets those flags' values to them); without it,
// a ranker of user × item. The window and count flags override it. It
// returns an error if the file cannot be loaded or configures no such
// ranker.
func (f *backtestFlags) baseModel(getenv func(string) string) (flywheel.ModelConfig, error) {
	base := flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}}}
	if f.configPath != "" {
		cfg, err := loadConfig(f.configPath, getenv)
		if err != nil {
			return base, err
		}
		mc, ok := cfg.Models[f.modelName]
		if !ok || mc.Kind != flywheel.KindRanker {
			return base, flywheel.Errorf(flywheel.EINVALID, "backtest: %s configures no ranker %q", f.configPath, f.modelName)
		}
		base = mc
		// The file's values stand unless a list flag names others.
		if !f.given["schedule"] {
			f.schedules.vals = []string{mc.Retrain.Schedule}
		}
		if !f.given["rule"] {
			f.rules.vals = []string{mc.Promote.Rule}
		}
		if !f.given["margin"] {
			f.margins.vals = []string{strconv.FormatFloat(mc.Promote.Margin, 'g', -1, 64)}
		}
		if !f.given["exploration"] {
			f.explorations.vals = []string{explorationString(mc.Exploration)}
		}
		if !f.given["training"] && retrain.IncrementalOn(mc.Retrain) {
			f.trainings.vals = []string{retrain.TrainedIncremental}
		}
	}
	if f.configPath == "" || f.given["reward-window"] {
		base.Reward.Window = f.rewardWindow
	}
	if f.retrainWindow > 0 {
		base.Retrain.Window = f.retrainWindow
	}
	if f.minNew > 0 {
		base.Retrain.MinNewExamples = f.minNew
	}
	if f.canaryShare > 0 {
		base.Promote.Canary.Share = f.canaryShare
	}
	if f.canaryDuration > 0 {
		base.Promote.Canary.Duration = f.canaryDuration
	}
	return base, nil
}

// settings returns the product of the list flags, each setting's
// configuration base with its values, with defaults and validated; or the
// error of the first bad value, in the product's order.
func (f *backtestFlags) settings(base flywheel.ModelConfig) ([]backtestSetting, error) {
	var settings []backtestSetting
	for _, sch := range f.schedules.vals {
		spec, err := scheduleSpec(sch, f.rate)
		if err != nil {
			return nil, err
		}
		for _, rule := range f.rules.vals {
			for _, m := range f.margins.vals {
				margin, err := strconv.ParseFloat(m, 64)
				if err != nil {
					return nil, flywheel.Errorf(flywheel.EINVALID, "backtest: --margin %q is not a number", m)
				}
				for _, ex := range f.explorations.vals {
					e, err := parseExploration(ex)
					if err != nil {
						return nil, err
					}
					for _, training := range f.trainings.vals {
						s := backtestSetting{Schedule: sch, Rule: rule, Margin: margin, Exploration: ex, Training: training}
						if s.mc, err = s.model(base, spec, e); err != nil {
							return nil, err
						}
						settings = append(settings, s)
					}
				}
			}
		}
	}
	return settings, nil
}

// scheduleSpec returns the retrain schedule --schedule sch means at rate
// decisions a virtual second (a number N is every N decisions), or an error
// if it is no schedule.
func scheduleSpec(sch string, rate float64) (string, error) {
	spec := sch
	if n, err := strconv.Atoi(sch); err == nil {
		if n <= 0 {
			return "", flywheel.Errorf(flywheel.EINVALID, "backtest: --schedule %q: every N decisions needs N > 0", sch)
		}
		spec = "@every " + (time.Duration(float64(n) / rate * float64(time.Second))).String()
	}
	if spec == retrain.ScheduleManual {
		return "", flywheel.Errorf(flywheel.EINVALID, "backtest: --schedule %q runs no retrain; give a cron spec, @every D or a number of decisions", sch)
	}
	if err := retrain.ParseSchedule("--schedule", spec); err != nil {
		return "", flywheel.Errorf(flywheel.EINVALID, "backtest: %v", err)
	}
	return spec, nil
}

// model returns base with s's rule, margin and training, the schedule spec
// and the exploration e, with defaults; or an error if s's training is
// neither full nor incremental or the configuration is invalid.
func (s backtestSetting) model(base flywheel.ModelConfig, spec string, e flywheel.Exploration) (flywheel.ModelConfig, error) {
	if s.Training != retrain.TrainedFull && s.Training != retrain.TrainedIncremental {
		return base, flywheel.Errorf(flywheel.EINVALID, "backtest: --training %q: full or incremental", s.Training)
	}
	mc := base
	mc.Retrain.Schedule, mc.Promote.Rule, mc.Promote.Margin, mc.Exploration = spec, s.Rule, s.Margin, e
	mc.Retrain.Incremental, mc.Retrain.WarmStart = s.Training == retrain.TrainedIncremental, false
	mc = mc.WithDefaults()
	return mc, mc.Validate("backtest")
}

// play plays every world through every setting, or returns the first
// backtest's error.
func (f *backtestFlags) play(ctx context.Context, settings []backtestSetting) ([]backtestWorld, error) {
	var out []backtestWorld
	for _, name := range f.worlds.vals {
		bw := backtestWorld{World: name}
		for _, s := range settings {
			run, err := f.playOne(ctx, name, s)
			if err != nil {
				return nil, err
			}
			bw.Runs = append(bw.Runs, run)
		}
		out = append(out, bw)
	}
	return out, nil
}

// playOne plays world name, checked already, through setting s, and sums
// the last --final decisions.
func (f *backtestFlags) playOne(ctx context.Context, name string, s backtestSetting) (backtestRun, error) {
	world, _ := sim.NewEnv(name, f.seed)
	start := time.Now()
	res, err := retrain.Backtest(ctx, retrain.BacktestOptions{Model: s.mc, World: world, Decisions: f.decisions, Rate: f.rate, Every: f.every, Seed: f.seed, IngestLag: f.ingestLag})
	if err != nil {
		return backtestRun{}, fmt.Errorf("backtest %s, %s: %w", name, s, err)
	}
	run := backtestRun{Setting: s, Result: res, Took: time.Since(start).Round(time.Millisecond).String()}
	fin := &run.Final
	fin.From, fin.To = max(f.decisions-f.final, 0), f.decisions
	fin.Reward, fin.Random, fin.Oracle = res.Mean(fin.From, fin.To)
	if fin.Oracle > 0 {
		fin.ShareOfOracle = fin.Reward / fin.Oracle
	}
	return run, nil
}

// printWorlds writes the worlds played, as JSON with --json, else a table per
// world (rewardWindow in its heading).
func (f *backtestFlags) printWorlds(stdout io.Writer, out []backtestWorld, rewardWindow time.Duration) error {
	if f.asJSON {
		return printJSON(stdout, map[string]any{"decisions": f.decisions, "rate": f.rate, "seed": f.seed, "reward_window": f.rewardWindow.String(), "worlds": out})
	}
	for i, bw := range out {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		printBacktest(stdout, bw, f.decisions, f.rate, rewardWindow)
	}
	return nil
}

// parseExploration reads policy[:parameter].
func parseExploration(s string) (flywheel.Exploration, error) {
	policy, param, hasParam := strings.Cut(s, ":")
	var v float64
	if hasParam {
		var err error
		if v, err = strconv.ParseFloat(param, 64); err != nil {
			return flywheel.Exploration{}, flywheel.Errorf(flywheel.EINVALID, "backtest: --exploration %q: %q is not a number", s, param)
		}
	}
	e := flywheel.Exploration{Policy: policy}
	switch policy {
	case flywheel.EpsilonGreedy:
		e.Epsilon = 0.05
		if hasParam {
			e.Epsilon = v
		}
	case flywheel.Softmax:
		e.Lambda = 10
		if hasParam {
			e.Lambda = v
		}
	case flywheel.SquareCB:
		e.GammaScale = v // 0: the default scale
	default:
		return e, flywheel.Errorf(flywheel.EINVALID, "backtest: --exploration %q: the policy must be epsilon-greedy, softmax or squarecb", s)
	}
	return e, e.Validate("--exploration")
}

// explorationString is e as --exploration takes it.
func explorationString(e flywheel.Exploration) string {
	switch e.Policy {
	case flywheel.Softmax:
		return fmt.Sprintf("softmax:%g", e.Lambda)
	case flywheel.SquareCB:
		if e.GammaScale > 0 {
			return fmt.Sprintf("squarecb:%g", e.GammaScale)
		}
		return "squarecb"
	}
	return fmt.Sprintf("epsilon-greedy:%g", e.Epsilon)
}

// printBacktest writes one world's table: a column per setting, a row per
// window, then the summary.
func printBacktest(w io.Writer, bw backtestWorld, decisions int, rate float64, rewardWindow time.Duration) {
	fmt.Fprintf(w, "world %s: %d decisions at %g a virtual second, reward window %s; expected reward of the served policy by window (versions served)\n", bw.World, decisions, rate, rewardWindow)
	for i, r := range bw.Runs {
		fmt.Fprintf(w, "  %c: %s\n", 'A'+i, r.Setting)
	}
	if len(bw.Runs) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "decisions\trandom\toracle")
	for i := range bw.Runs {
		fmt.Fprintf(tw, "\t%c", 'A'+i)
	}
	fmt.Fprintln(tw)
	for k, win := range bw.Runs[0].Result.Windows {
		fmt.Fprintf(tw, "%d–%d\t%.3f\t%.3f", win.From, win.To, win.Random, win.Oracle)
		for _, r := range bw.Runs {
			x := r.Result.Windows[k]
			fmt.Fprintf(tw, "\t%.3f %s", x.Reward, versionSpan(x.Versions))
		}
		fmt.Fprintln(tw)
	}
	f := bw.Runs[0].Final
	fmt.Fprintf(tw, "final %d–%d\t%.3f\t%.3f", f.From, f.To, f.Random, f.Oracle)
	for _, r := range bw.Runs {
		fmt.Fprintf(tw, "\t%.3f (%.1f%% of oracle)", r.Final.Reward, 100*r.Final.ShareOfOracle)
	}
	fmt.Fprintln(tw)
	fmt.Fprint(tw, "promoted/runs\t\t")
	for _, r := range bw.Runs {
		fmt.Fprintf(tw, "\t%d/%d (%d rejected)", r.Result.Promotions, len(r.Result.Runs)-r.Result.Skips, r.Result.Rejections)
	}
	fmt.Fprintln(tw)
	fmt.Fprint(tw, "against the truth\t\t")
	for _, r := range bw.Runs {
		res := r.Result
		fmt.Fprintf(tw, "\t%d worse promoted (%d beyond the margin), %d better beyond the margin rejected", res.WorsePromotions, res.WorseBeyondMargin, res.BetterBeyondMarginOut)
	}
	fmt.Fprintln(tw)
	fmt.Fprint(tw, "took\t\t")
	for _, r := range bw.Runs {
		fmt.Fprintf(tw, "\t%s", r.Took)
	}
	fmt.Fprintln(tw)
	tw.Flush()
}

// versionSpan is "v3" or "v3–v5".
func versionSpan(vs []int) string {
	switch len(vs) {
	case 0:
		return ""
	case 1:
		return fmt.Sprintf("v%d", vs[0])
	}
	return fmt.Sprintf("v%d–v%d", vs[0], vs[len(vs)-1])
}
