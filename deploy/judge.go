package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
)

// What a check did.
const (
	ActionNone       = "none"        // nothing live to judge
	ActionWaiting    = "waiting"     // a canary runs; not enough time or data yet
	ActionPromoted   = "promoted"    // the canary became the champion
	ActionEnded      = "ended"       // the canary was ended at its duration
	ActionRolledBack = "rolled back" // a guardrail fired
	ActionHealthy    = "healthy"     // the champion is within its guardrails
)

// Inconclusive is the outcome the retrain gate records in a version's
// metrics ({"gate": {"outcome": "inconclusive"}}) when its offline evidence
// could not decide: as a canary, such a version must show on live traffic
// that it is not worse than the champion beyond promote.margin.
const Inconclusive = "inconclusive"

// Online is a version's reward as served, from the examples ClickHouse
// holds (closed decisions only).
type Online struct {
	Version    int     `json:"version"`
	Variant    string  `json:"variant"`
	Decisions  int     `json:"decisions"`
	RewardRate float64 `json:"reward_rate"`
	// LogLoss is, for a classifier, the mean log loss of the scores it
	// served against the outcomes; StdErr is then that mean's.
	LogLoss float64 `json:"log_loss,omitempty"`
	StdErr  float64 `json:"stderr"`
}

// merit is o's figure oriented so that higher is better: the reward rate,
// or a classifier's log loss negated.
func merit(kind string, o Online) float64 {
	if kind == flywheel.KindClassifier {
		return 0 - o.LogLoss
	}
	return o.RewardRate
}

// describe renders o's figure for a reason.
func describe(kind string, o Online) string {
	if kind == flywheel.KindClassifier {
		return fmt.Sprintf("log loss %.4f ± %.4f (%d)", o.LogLoss, o.StdErr, o.Decisions)
	}
	return fmt.Sprintf("%.4f ± %.4f (%d)", o.RewardRate, o.StdErr, o.Decisions)
}

// RewardReader reads what versions earned online. *clickhouse.Rewards is
// one.
type RewardReader interface {
	// Online returns the count, mean and sample standard deviation of the
	// reward of every version and variant of model, over the closed
	// examples decided in [fromMs, toMs) (Unix ms).
	Online(ctx context.Context, model string, fromMs, toMs uint64) ([]clickhouse.VersionReward, error)
	// OnlineLogLoss returns the same of the log loss of a classifier's
	// served scores against the outcomes (reward above 0).
	OnlineLogLoss(ctx context.Context, model string, fromMs, toMs uint64) ([]clickhouse.VersionReward, error)
}

// Verdict is the outcome of one check of one model.
type Verdict struct {
	Model     string  `json:"model"`
	Action    string  `json:"action"`
	Version   int     `json:"version,omitempty"`
	Reason    string  `json:"reason,omitempty"`
	Subject   *Online `json:"subject,omitempty"`   // the canary, or the new champion
	Reference *Online `json:"reference,omitempty"` // the champion, or the champion it replaced
}

// Judge watches live versions: it ends every canary after its duration with
// a decision from the canary's online reward against the champion's over the
// same time, and rolls back a canary or a new champion whose online reward
// falls below the configured guardrail. Run it in one process per cluster
// (the elected retrain scheduler does).
type Judge struct {
	registry *Registry
	rewards  RewardReader
	models   map[string]flywheel.ModelConfig
	log      *slog.Logger
	now      func() time.Time
	leader   Leader // nil: always acts
	judgeMetrics
}

// Leader says whether this process is the one that acts (*kafka.Elector, the
// retrain election, is one). IsLeader must be safe for concurrent use.
type Leader interface {
	IsLeader() bool
}

// Actors the judge records on the aliases it moves.
const (
	ActorCanary    = "canary"    // a canary's duration ended with a decision
	ActorGuardrail = "guardrail" // a guardrail fired
)

// JudgeOptions are what NewJudge builds a Judge from.
type JudgeOptions struct {
	// Registry is the model registry whose aliases the judge moves.
	// Required.
	Registry *Registry
	// Rewards reads what versions earned online (clickhouse.NewRewards on
	// the migrated database). Required.
	Rewards RewardReader
	// Models are the configured models, by name.
	Models map[string]flywheel.ModelConfig
	// Registerer registers the metrics; nil: they are not registered.
	Registerer prometheus.Registerer
	// Logger: nil discards.
	Logger *slog.Logger
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// NewJudge returns a judge of o.Models, or an error if the registry or the
// reward reader is missing or the metrics cannot be registered.
func NewJudge(o JudgeOptions) (*Judge, error) {
	if o.Registry == nil || o.Rewards == nil {
		return nil, errors.New("deploy: the judge needs the registry and a reward reader")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m, err := newJudgeMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	return &Judge{registry: o.Registry, rewards: o.Rewards, models: o.Models, log: o.Logger, now: o.Now, judgeMetrics: m}, nil
}

// ElectWith makes the judge act only while l leads. Call it before Run.
func (j *Judge) ElectWith(l Leader) { j.leader = l }

// Run checks every model every interval until ctx ends.
func (j *Judge) Run(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if j.leader != nil && !j.leader.IsLeader() {
			continue
		}
		for _, name := range slices.Sorted(maps.Keys(j.models)) {
			if _, err := j.Check(ctx, name); err != nil && ctx.Err() == nil {
				j.log.Warn("deploy check failed", "model", name, "err", err)
			}
		}
	}
}

// Check judges name once and carries out what it decides.
func (j *Judge) Check(ctx context.Context, name string) (*Verdict, error) {
	mc, ok := j.models[name]
	if !ok {
		return nil, flywheel.Errorf(flywheel.ENOTFOUND, "model %q is not configured", name)
	}
	hist, err := j.registry.History(ctx, name)
	if err != nil {
		return nil, err
	}
	canary, champ := latestMove(hist, Canary), latestMove(hist, Champion)
	var v *Verdict
	switch {
	case canary != nil && canary.Version != 0 && champ != nil:
		v, err = j.checkCanary(ctx, name, mc, *canary, champ.Version)
	case champ != nil && champ.PreviousVersion != 0:
		v, err = j.checkChampion(ctx, name, mc, *champ)
	default:
		v = &Verdict{Model: name, Action: ActionNone}
	}
	if err != nil {
		return nil, err
	}
	if v.Action != ActionNone && v.Action != ActionWaiting && v.Action != ActionHealthy {
		j.actions.WithLabelValues(name, v.Action).Inc()
		j.log.Info("deploy decision", "model", name, "action", v.Action, "version", v.Version, "reason", v.Reason)
	}
	return v, nil
}

// latestMove is the newest move of alias in hist (newest first).
func latestMove(hist []Deployment, alias string) *Deployment {
	for i := range hist {
		if hist[i].Alias == alias {
			return &hist[i]
		}
	}
	return nil
}

func (j *Judge) checkCanary(ctx context.Context, name string, mc flywheel.ModelConfig, canary Deployment, champ int) (*Verdict, error) {
	since := canary.Time
	stats, err := j.online(ctx, name, mc.Kind, since, time.Time{})
	if err != nil {
		return nil, err
	}
	c, h := stats.get(canary.Version, flywheel.VariantCanary), stats.get(champ, flywheel.VariantChampion)
	v := &Verdict{Model: name, Version: canary.Version, Subject: &c, Reference: &h}
	v.Action, v.Reason, err = CanaryVerdict(mc, c, h, j.now().Sub(since), func() (bool, error) { return j.inconclusive(ctx, name, canary.Version) })
	if err != nil {
		return nil, err
	}
	switch v.Action {
	case ActionRolledBack:
		return v, j.registry.EndCanary(ctx, name, ActorGuardrail, v.Reason)
	case ActionEnded:
		return v, j.registry.EndCanary(ctx, name, ActorCanary, v.Reason)
	case ActionPromoted:
		return v, j.registry.Promote(ctx, name, canary.Version, ActorCanary, v.Reason)
	}
	return v, nil
}

// CanaryVerdict decides a canary that has served for age from its online
// figures c and its champion's h over the same time (closed decisions):
// ActionWaiting, ActionPromoted, ActionEnded, or ActionRolledBack when the
// reward guardrail fires, with the reason. strict tells, when it is needed,
// whether the gate found the canary's offline evidence inconclusive (it must
// then show online that it is not worse beyond the margin); its error is
// returned. The judge acts on it; backtests play it.
func CanaryVerdict(mc flywheel.ModelConfig, c, h Online, age time.Duration, strict func() (bool, error)) (action, reason string, err error) {
	minN, dur := mc.Promote.Canary.MinDecisions, mc.Promote.Canary.Duration
	enough := c.Decisions >= minN && h.Decisions >= minN
	z, conf := flywheel.TwoSidedZ(mc.Promote.Confidence), mc.Promote.Confidence*100
	gain, se := merit(mc.Kind, c)-merit(mc.Kind, h), math.Hypot(c.StdErr, h.StdErr)
	compare := fmt.Sprintf("canary v%d %s vs champion v%d %s over %s", c.Version, describe(mc.Kind, c), h.Version, describe(mc.Kind, h), age.Round(time.Second))
	switch {
	case enough && dropped(mc.Kind, mc.Guardrails.MaxRewardDrop, c, h, z):
		return ActionRolledBack, fmt.Sprintf("guardrail max_reward_drop %.2f: %s", mc.Guardrails.MaxRewardDrop, compare), nil
	case age < dur:
		return ActionWaiting, fmt.Sprintf("canary runs for %s; %s", dur, compare), nil
	case !enough && age >= 3*dur:
		return ActionEnded, fmt.Sprintf("too little data after 3 × %s (need %d closed decisions per variant): %s", dur, minN, compare), nil
	case !enough:
		return ActionWaiting, fmt.Sprintf("waiting for %d closed decisions per variant: %s", minN, compare), nil
	}
	// A canary whose offline evidence was inconclusive must show on live
	// traffic what the gate could not: that it is not worse than the
	// champion beyond the margin. Any other is promoted unless it is worse.
	isStrict, err := strict()
	if err != nil {
		return "", "", err
	}
	lo, hi := gain-z*se, gain+z*se
	margin := mc.Promote.Margin * math.Abs(merit(mc.Kind, h))
	online := fmt.Sprintf("gain %.4f, %.0f%% interval [%.4f, %.4f]; %s", gain, conf, lo, hi, compare)
	switch {
	case !isStrict && hi >= 0:
		return ActionPromoted, fmt.Sprintf("canary not worse online at %.0f%% confidence: %s", conf, online), nil
	case !isStrict:
		return ActionEnded, fmt.Sprintf("canary worse online at %.0f%% confidence: %s", conf, online), nil
	case lo > -margin:
		return ActionPromoted, fmt.Sprintf("offline evidence inconclusive; online not worse than the champion beyond the margin %.4f at %.0f%% confidence: %s", margin, conf, online), nil
	case hi < 0:
		return ActionEnded, fmt.Sprintf("offline evidence inconclusive; online worse at %.0f%% confidence: %s", conf, online), nil
	case age >= 3*dur:
		return ActionEnded, fmt.Sprintf("offline evidence inconclusive, and still online after 3 × %s (margin %.4f): %s", dur, margin, online), nil
	}
	return ActionWaiting, fmt.Sprintf("offline evidence inconclusive; online too (margin %.4f), up to 3 × %s: %s", margin, dur, online), nil
}

// inconclusive reports whether the retrain gate recorded version's offline
// evidence as inconclusive in its metrics.
func (j *Judge) inconclusive(ctx context.Context, name string, version int) (bool, error) {
	v, err := j.registry.Get(ctx, name, version)
	if err != nil {
		return false, err
	}
	var m struct {
		Gate struct {
			Outcome string `json:"outcome"`
		} `json:"gate"`
	}
	_ = json.Unmarshal(v.Metrics, &m) // no gate (a version registered by hand): not inconclusive
	return m.Gate.Outcome == Inconclusive, nil
}

// checkChampion compares a champion's online reward since its promotion with
// the one it replaced over as long a stretch before, and rolls back when the
// reward guardrail fires.
func (j *Judge) checkChampion(ctx context.Context, name string, mc flywheel.ModelConfig, champ Deployment) (*Verdict, error) {
	v := &Verdict{Model: name, Version: champ.Version, Action: ActionHealthy}
	if mc.Guardrails.MaxRewardDrop <= 0 {
		return v, nil
	}
	span := j.now().Sub(champ.Time)
	after, err := j.online(ctx, name, mc.Kind, champ.Time, time.Time{})
	if err != nil {
		return nil, err
	}
	before, err := j.online(ctx, name, mc.Kind, champ.Time.Add(-span), champ.Time)
	if err != nil {
		return nil, err
	}
	c, p := after.get(champ.Version, flywheel.VariantChampion), before.get(champ.PreviousVersion, flywheel.VariantChampion)
	v.Subject, v.Reference = &c, &p
	minN := mc.Promote.Canary.MinDecisions
	if c.Decisions < minN || p.Decisions < minN || !dropped(mc.Kind, mc.Guardrails.MaxRewardDrop, c, p, flywheel.TwoSidedZ(mc.Promote.Confidence)) {
		return v, nil
	}
	v.Action = ActionRolledBack
	v.Reason = fmt.Sprintf("guardrail max_reward_drop %.2f: champion v%d %s since its promotion vs v%d %s before",
		mc.Guardrails.MaxRewardDrop, c.Version, describe(mc.Kind, c), p.Version, describe(mc.Kind, p))
	_, err = j.registry.Rollback(ctx, name, ActorGuardrail, v.Reason)
	return v, err
}

// dropped reports whether s's reward is below (1-drop) of ref's (a
// classifier's log loss above (1+drop) of ref's), and significantly so at
// the z of the configured confidence.
func dropped(kind string, drop float64, s, ref Online, z float64) bool {
	if drop <= 0 {
		return false
	}
	gap := merit(kind, s) - merit(kind, ref)
	return gap < -drop*math.Abs(merit(kind, ref)) && gap+z*math.Hypot(s.StdErr, ref.StdErr) < 0
}

type onlineStats []Online

func (o onlineStats) get(version int, variant string) Online {
	for _, s := range o {
		if s.Version == version && s.Variant == variant {
			return s
		}
	}
	return Online{Version: version, Variant: variant}
}

// online reads the reward (a classifier's log loss) of every version and
// variant of name from the closed examples decided in [from, to) (to zero:
// open-ended).
func (j *Judge) online(ctx context.Context, name, kind string, from, to time.Time) (onlineStats, error) {
	toMs := uint64(math.MaxInt64)
	if !to.IsZero() {
		toMs = uint64(to.UnixMilli())
	}
	read := j.rewards.Online
	if kind == flywheel.KindClassifier {
		read = j.rewards.OnlineLogLoss
	}
	rows, err := read(ctx, name, uint64(from.UnixMilli()), toMs)
	if err != nil {
		return nil, err
	}
	var out onlineStats
	for _, r := range rows {
		se := 0.0
		if r.Decisions > 1 && !math.IsNaN(r.StdDev) {
			se = r.StdDev / math.Sqrt(float64(r.Decisions))
		}
		o := Online{Version: r.Version, Variant: r.Variant, Decisions: int(r.Decisions), RewardRate: r.Mean, StdErr: se}
		if kind == flywheel.KindClassifier {
			o.RewardRate, o.LogLoss = 0, r.Mean
		}
		out = append(out, o)
	}
	return out, nil
}
