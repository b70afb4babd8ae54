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
	fs := flag.NewFlagSet("backtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "take the model's configuration from this file (with --model); flags override it")
	modelName := fs.String("model", "homepage", "with --config: the ranker whose configuration is the base")
	worlds := &listFlag{sep: ",", vals: []string{sim.Default}}
	schedules := &listFlag{sep: ";", vals: []string{"@every 20s"}}
	rules := &listFlag{sep: ",", vals: []string{flywheel.RuleNonInferior}}
	margins := &listFlag{sep: ",", vals: []string{"0.05"}}
	explorations := &listFlag{sep: ",", vals: []string{"squarecb"}}
	trainings := &listFlag{sep: ",", vals: []string{retrain.TrainedFull}}
	fs.Var(worlds, "world", "worlds, comma separated: "+strings.Join(sim.Worlds(), ", "))
	fs.Var(schedules, "schedule", "retrain schedules in virtual time, separated by ';' (cron specs contain commas): a cron spec, @every D, or a number N (every N decisions)")
	fs.Var(rules, "rule", "promotion rules, comma separated: non-inferior, superior")
	fs.Var(margins, "margin", "non-inferiority margins, comma separated")
	fs.Var(explorations, "exploration", "explorations, comma separated: epsilon-greedy:E, softmax:LAMBDA, squarecb (γ growing with the examples) or squarecb:SCALE")
	fs.Var(trainings, "training", "how candidates learn, comma separated: full (from zero over the window), incremental (from the champion's state, retrain.incremental)")
	decisions := fs.Int("decisions", 40000, "decisions to play per setting")
	rate := fs.Float64("rate", 100, "decisions per virtual second")
	every := fs.Int("every", 5000, "decisions per reported window")
	final := fs.Int("final", 10000, "the summary's span: the last N decisions")
	seed := fs.Uint64("seed", 1, "seed of the world and of the traffic")
	rewardWindow := fs.Duration("reward-window", 5*time.Second, "reward window, in virtual time")
	retrainWindow := fs.Duration("retrain-window", 0, "retrain window, in virtual time (0: the model's, 168h by default)")
	minNew := fs.Int("min-new", 0, "retrain.min_new_examples (0: the model's, 1000 by default)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("backtest: unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if *decisions <= 0 || *every <= 0 || *final <= 0 || !(*rate > 0) {
		return flywheel.Errorf(flywheel.EINVALID, "backtest: --decisions, --every, --final and --rate must be positive")
	}
	base := flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}}}
	if *configPath != "" {
		cfg, err := loadConfig(*configPath, getenv)
		if err != nil {
			return err
		}
		mc, ok := cfg.Models[*modelName]
		if !ok || mc.Kind != flywheel.KindRanker {
			return flywheel.Errorf(flywheel.EINVALID, "backtest: %s configures no ranker %q", *configPath, *modelName)
		}
		base = mc
		// The file's values stand unless a list flag names others.
		if !given["schedule"] {
			schedules.vals = []string{mc.Retrain.Schedule}
		}
		if !given["rule"] {
			rules.vals = []string{mc.Promote.Rule}
		}
		if !given["margin"] {
			margins.vals = []string{strconv.FormatFloat(mc.Promote.Margin, 'g', -1, 64)}
		}
		if !given["exploration"] {
			explorations.vals = []string{explorationString(mc.Exploration)}
		}
		if !given["training"] && retrain.IncrementalOn(mc.Retrain) {
			trainings.vals = []string{retrain.TrainedIncremental}
		}
	}
	if *configPath == "" || given["reward-window"] {
		base.Reward.Window = *rewardWindow
	}
	if *retrainWindow > 0 {
		base.Retrain.Window = *retrainWindow
	}
	if *minNew > 0 {
		base.Retrain.MinNewExamples = *minNew
	}
	// Every setting and world is checked before the first is played.
	var settings []backtestSetting
	for _, sch := range schedules.vals {
		spec := sch
		if n, err := strconv.Atoi(sch); err == nil {
			if n <= 0 {
				return flywheel.Errorf(flywheel.EINVALID, "backtest: --schedule %q: every N decisions needs N > 0", sch)
			}
			spec = "@every " + (time.Duration(float64(n) / *rate * float64(time.Second))).String()
		}
		if err := retrain.ParseSchedule("--schedule", spec); err != nil {
			return flywheel.Errorf(flywheel.EINVALID, "backtest: %v", err)
		}
		for _, rule := range rules.vals {
			for _, m := range margins.vals {
				margin, err := strconv.ParseFloat(m, 64)
				if err != nil {
					return flywheel.Errorf(flywheel.EINVALID, "backtest: --margin %q is not a number", m)
				}
				for _, ex := range explorations.vals {
					e, err := parseExploration(ex)
					if err != nil {
						return err
					}
					for _, training := range trainings.vals {
						if training != retrain.TrainedFull && training != retrain.TrainedIncremental {
							return flywheel.Errorf(flywheel.EINVALID, "backtest: --training %q: full or incremental", training)
						}
						mc := base
						mc.Retrain.Schedule, mc.Promote.Rule, mc.Promote.Margin, mc.Exploration = spec, rule, margin, e
						mc.Retrain.Incremental, mc.Retrain.WarmStart = training == retrain.TrainedIncremental, false
						mc = mc.WithDefaults()
						if err := mc.Validate("backtest"); err != nil {
							return err
						}
						settings = append(settings, backtestSetting{Schedule: sch, Rule: rule, Margin: margin, Exploration: ex, Training: training, mc: mc})
					}
				}
			}
		}
	}
	for _, w := range worlds.vals {
		if _, err := sim.NewEnv(w, *seed); err != nil {
			return flywheel.Errorf(flywheel.EINVALID, "backtest: %v", err)
		}
	}
	var out []backtestWorld
	for _, name := range worlds.vals {
		bw := backtestWorld{World: name}
		for _, s := range settings {
			world, _ := sim.NewEnv(name, *seed)
			start := time.Now()
			res, err := retrain.Backtest(ctx, retrain.BacktestOptions{Model: s.mc, World: world, Decisions: *decisions, Rate: *rate, Every: *every, Seed: *seed})
			if err != nil {
				return fmt.Errorf("backtest %s, %s: %w", name, s, err)
			}
			run := backtestRun{Setting: s, Result: res, Took: time.Since(start).Round(time.Millisecond).String()}
			f := &run.Final
			f.From, f.To = max(*decisions-*final, 0), *decisions
			f.Reward, f.Random, f.Oracle = res.Mean(f.From, f.To)
			if f.Oracle > 0 {
				f.ShareOfOracle = f.Reward / f.Oracle
			}
			bw.Runs = append(bw.Runs, run)
		}
		out = append(out, bw)
	}
	if *asJSON {
		return printJSON(stdout, map[string]any{"decisions": *decisions, "rate": *rate, "seed": *seed, "reward_window": rewardWindow.String(), "worlds": out})
	}
	for i, bw := range out {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		printBacktest(stdout, bw, *decisions, *rate, base.Reward.Window)
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
