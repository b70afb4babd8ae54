package flywheel

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// Exploration policies of a ranker.
const (
	EpsilonGreedy = "epsilon-greedy"
	Softmax       = "softmax"
	SquareCB      = "squarecb"
)

// Exploration configures how a ranker spreads probability over actions.
type Exploration struct {
	Policy  string  `yaml:"policy" json:"policy"`
	Epsilon float64 `yaml:"epsilon" json:"epsilon,omitempty"` // epsilon-greedy: share spread uniformly
	Lambda  float64 `yaml:"lambda" json:"lambda,omitempty"`   // softmax: inverse temperature
	Gamma   float64 `yaml:"gamma" json:"gamma,omitempty"`     // squarecb: a fixed greediness γ, when set
	// SquareCB's γ schedule when gamma is not set: γ = GammaScale·t^GammaExponent,
	// t being the examples the model has learned (defaults 10 and 0.5, as VW's).
	GammaScale    float64 `yaml:"gamma_scale" json:"gamma_scale,omitempty"`
	GammaExponent float64 `yaml:"gamma_exponent" json:"gamma_exponent,omitempty"`
}

// Validate reports an EINVALID error naming the bad field under path.
func (e Exploration) Validate(path string) error {
	switch e.Policy {
	case EpsilonGreedy:
		if !(e.Epsilon >= 0 && e.Epsilon <= 1) {
			return Errorf(EINVALID, "%s.epsilon must be in [0, 1]; got %v", path, e.Epsilon)
		}
	case Softmax:
		if !(e.Lambda >= 0) || math.IsInf(e.Lambda, 0) {
			return Errorf(EINVALID, "%s.lambda must be a finite number >= 0; got %v", path, e.Lambda)
		}
	case SquareCB:
		if !(e.Gamma >= 0) || math.IsInf(e.Gamma, 0) {
			return Errorf(EINVALID, "%s.gamma must be a finite number >= 0; got %v", path, e.Gamma)
		}
		if !(e.GammaScale >= 0) || math.IsInf(e.GammaScale, 0) {
			return Errorf(EINVALID, "%s.gamma_scale must be a finite number >= 0; got %v", path, e.GammaScale)
		}
		if !(e.GammaExponent >= 0 && e.GammaExponent <= 1) {
			return Errorf(EINVALID, "%s.gamma_exponent must be in [0, 1]; got %v", path, e.GammaExponent)
		}
		if e.Gamma > 0 && (e.GammaScale > 0 || e.GammaExponent > 0) {
			return Errorf(EINVALID, "%s: set gamma (a fixed γ) or gamma_scale and gamma_exponent (γ growing with the examples learned), not both", path)
		}
	default:
		return Errorf(EINVALID, "%s.policy must be epsilon-greedy, softmax or squarecb; got %q", path, e.Policy)
	}
	return nil
}

// ModelConfig is everything configured for one model name: its shape, how it
// explores, how feedback becomes reward, when it is retrained and how a new
// version is promoted.
type ModelConfig struct {
	Kind         string     `yaml:"kind"`
	Bits         int        `yaml:"bits"`
	Interactions [][]string `yaml:"interactions"`
	// NumericBins is how many quantile bins every numeric feature is also
	// learned by, beside its value, so that its effect and its interactions
	// can take any shape (model/bins.go); 0 turns binning off. Unset: 8.
	NumericBins *int `yaml:"numeric_bins" json:",omitempty"`
	// NumericBinShape is how a number's bins are learned: "linear" (the
	// default), the cut points as knots of a piecewise-linear function, or
	// "onehot", one feature per bin. Empty in a version's manifest written
	// before it existed: one-hot.
	NumericBinShape string        `yaml:"numeric_bin_shape" json:",omitempty"`
	Exploration     Exploration   `yaml:"exploration"`
	Reward          RewardConfig  `yaml:"reward"`
	Retrain         RetrainConfig `yaml:"retrain"`
	Promote         PromoteConfig `yaml:"promote"`
	Guardrails      Guardrails    `yaml:"guardrails"`
}

// RewardConfig is the reward rule as configured.
type RewardConfig struct {
	Window    time.Duration `yaml:"window"`
	Default   float64       `yaml:"default"`
	Aggregate string        `yaml:"aggregate"`
	// LateWindow is how long after the window feedback still re-scores a
	// decision's example (for analysts and for every retrain that has not
	// yet trained on it); the decision is trainable at the window's end
	// all the same. 0, the default: feedback after the window only counts
	// as late.
	LateWindow time.Duration `yaml:"late_window"`
	// Min and Max bound the reward a feedback may carry (nil: unbounded);
	// serving refuses a reward outside them with a 400.
	Min *float64 `yaml:"min"`
	Max *float64 `yaml:"max"`
	// MaxFeedbackSkew bounds how far a feedback's "time" (when the user
	// acted) may lie from when serving receives it, either way; default 5m.
	MaxFeedbackSkew time.Duration `yaml:"max_feedback_skew"`
}

// CheckReward reports an EINVALID error naming field when r is not a finite
// number inside [Min, Max].
func (r RewardConfig) CheckReward(field string, v float64) error {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return Errorf(EINVALID, "%s is not a finite number", field)
	case r.Min != nil && v < *r.Min:
		return Errorf(EINVALID, "%s %v is below the model's reward.min %v", field, v, *r.Min)
	case r.Max != nil && v > *r.Max:
		return Errorf(EINVALID, "%s %v is above the model's reward.max %v", field, v, *r.Max)
	}
	return nil
}

// What a candidate is judged on (retrain.evidence).
const (
	EvidenceProgressive = "progressive" // the default
	EvidenceHoldout     = "holdout"
)

// RetrainConfig says when and on what a model is retrained.
type RetrainConfig struct {
	Schedule string        `yaml:"schedule"`
	Window   time.Duration `yaml:"window"`
	// Evidence is what a candidate is judged on (retrain/evidence.go):
	// EvidenceProgressive (the default), every example since the references'
	// cutoff, each scored by the candidate before it learns it; or
	// EvidenceHoldout, the newest Holdout share of them, which the candidate
	// does not learn.
	Evidence       string  `yaml:"evidence"`
	Holdout        float64 `yaml:"holdout"` // EvidenceHoldout's share
	MinNewExamples int     `yaml:"min_new_examples"`
	// Incremental makes a retrain go on from the champion's weights and
	// optimizer state over the examples after the champion's cutoff, rather
	// than learn the whole window from zero (retrain/incremental.go). WarmStart is
	// its older name, kept so that old configurations keep working.
	Incremental bool `yaml:"incremental"`
	WarmStart   bool `yaml:"warm_start"`
	// FullEvery N > 0 makes every Nth version of a chain a full retrain: at
	// most N-1 incremental versions follow a full one. 0: only a change of
	// shape (or a champion that cannot be continued) forces one.
	FullEvery    int     `yaml:"full_every"`
	Passes       int     `yaml:"passes"`
	LearningRate float64 `yaml:"learning_rate"`
	Objective    string  `yaml:"objective"` // rankers: mtr | ips | dr
	// PriorSteps damps a ranker's first steps on every weight
	// (model.TrainConfig.PriorSteps). Unset: DefaultPriorSteps; nil in a
	// version's manifest written before it existed, which trained with none.
	PriorSteps *float64 `yaml:"prior_steps" json:",omitempty"`
}

// DefaultPriorSteps is retrain.prior_steps when unset.
const DefaultPriorSteps = 10

// Prior returns prior_steps as set, 0 when unset.
func (r RetrainConfig) Prior() float64 {
	if r.PriorSteps == nil {
		return 0
	}
	return *r.PriorSteps
}

// Training objectives of a ranker (retrain.objective), as model/ learns
// them (model.MTR, IPS, DR).
const (
	ObjectiveMTR = "mtr" // the default
	ObjectiveIPS = "ips"
	ObjectiveDR  = "dr"
)

// Promotion rules: what the offline evidence must show of a candidate
// against the champion (retrain.Decide has them precisely).
const (
	// RuleNonInferior: not worse than the champion beyond promote.margin,
	// at promote.confidence (the default).
	RuleNonInferior = "non-inferior"
	// RuleSuperior: better than the champion at promote.confidence, by at
	// least promote.min_improvement.
	RuleSuperior = "superior"
)

// Promotion policies (promote.policy).
const (
	// PromoteAuto: a candidate the gate passes is promoted, or canaried
	// (the default).
	PromoteAuto = "auto"
	// PromoteManual: a candidate is registered and evaluated, and an
	// operator promotes it.
	PromoteManual = "manual"
)

// Off-policy estimators the promotion gate may decide by
// (promote.estimator).
const (
	EstimatorIPS   = "ips"
	EstimatorSNIPS = "snips" // the default
	EstimatorDR    = "dr"
)

// PromoteConfig says how a candidate version becomes the champion.
type PromoteConfig struct {
	Policy    string `yaml:"policy"` // auto | manual
	Estimator string `yaml:"estimator"`
	Rule      string `yaml:"rule"` // non-inferior | superior
	// Margin is how much worse than the champion (and than the last version
	// shown better) a candidate may be under the non-inferior rule, relative
	// to the champion's estimate: 0.05 = 5% of its reward (or log loss).
	Margin         float64       `yaml:"margin"`
	MinImprovement float64       `yaml:"min_improvement"` // superior rule only
	Confidence     float64       `yaml:"confidence"`
	Canary         CanaryConfig  `yaml:"canary"`
	Control        ControlConfig `yaml:"control"`
}

// ControlConfig is a control group: a stable share of units (by the unit
// hash the canary uses: the context's user^id, else the event id) that the
// baseline serves whatever version is live, logged with its exact
// probabilities under the variant "control", so that the flywheel's lift
// over doing nothing can be measured (the dashboard and /v1/models/{name}).
// Rankers only.
type ControlConfig struct {
	Share float64 `yaml:"share"` // 0: no control group
	// Policy is the baseline: "uniform" (the default), a uniformly random
	// choice among the actions, the policy of every ranker's version 1; or
	// "version N", registered version N of the model, played with its
	// exploration and logged as version N.
	Policy string `yaml:"policy"`
}

// ControlUniform is the control group's default baseline policy.
const ControlUniform = "uniform"

// controlVersionPrefix starts a control policy that names a version.
const controlVersionPrefix = "version "

// BaselineVersion returns N of the policy "version N", 0 for the uniform
// policy (or none set), and false for any other policy.
func (c ControlConfig) BaselineVersion() (int, bool) {
	if c.Policy == "" || c.Policy == ControlUniform {
		return 0, true
	}
	digits, ok := strings.CutPrefix(c.Policy, controlVersionPrefix)
	n, err := strconv.Atoi(digits)
	if !ok || err != nil || n < 1 || strconv.Itoa(n) != digits {
		return 0, false
	}
	return n, true
}

// VariantControl is the variant of a decision the control group's baseline
// made.
const VariantControl = "control"

// CanaryConfig is the share of traffic a canary gets and for how long. A
// share of 0 means no canary: a candidate that passes the gate becomes the
// champion at once.
type CanaryConfig struct {
	Share    float64       `yaml:"share"`
	Duration time.Duration `yaml:"duration"`
	// MinDecisions is how many closed decisions each variant needs before the
	// canary's online reward decides anything; default 200.
	MinDecisions int `yaml:"min_decisions"`
}

// Guardrails bound a live version's behaviour; a zero bound is not checked.
// The reward bound applies to a canary (against the champion over the same
// time) and to a new champion (against the one it replaced); the error and
// latency bounds apply, on every serving replica, to a canary and to a
// champion within its first canary.duration (default 10m) after promotion.
type Guardrails struct {
	MaxRewardDrop float64 `yaml:"max_reward_drop"` // relative: 0.2 = 20% below the reference
	MaxErrorRate  float64 `yaml:"max_error_rate"`  // share of requests answered 5xx
	MaxP99Ms      float64 `yaml:"max_p99_ms"`      // 99th percentile request latency
	// MinRequests is how many requests a replica needs in a check window
	// before the error and latency bounds apply; default 100.
	MinRequests int `yaml:"min_requests"`
}

// WithDefaults fills every unset field with its documented default, section
// by section.
func (c ModelConfig) WithDefaults() ModelConfig {
	c = c.withShapeDefaults()
	c.Exploration = c.Exploration.withDefaults()
	c.Reward = c.Reward.withDefaults()
	c.Retrain = c.Retrain.withDefaults()
	c.Promote = c.Promote.withDefaults()
	c.Guardrails = c.Guardrails.withDefaults()
	return c
}

// withShapeDefaults fills the kind, bits and numeric_bins when unset.
func (c ModelConfig) withShapeDefaults() ModelConfig {
	if c.Kind == "" {
		c.Kind = KindRanker
	}
	if c.Bits == 0 {
		c.Bits = 18
	}
	if c.NumericBins == nil {
		b := DefaultNumericBins
		c.NumericBins = &b
	}
	if c.NumericBinShape == "" {
		c.NumericBinShape = BinShapeLinear
	}
	return c
}

// withDefaults fills an unset policy with SquareCB, and SquareCB's γ
// schedule when no fixed gamma is set. It applies whatever the model's kind.
func (e Exploration) withDefaults() Exploration {
	if e.Policy == "" {
		// SquareCB with γ growing with the examples learned: in the backtests
		// (docs/operations.md, "Backtests") it beat ε-greedy 0.05 on both
		// worlds and every seed tried.
		e = Exploration{Policy: SquareCB}
	}
	if e.Policy == SquareCB && e.Gamma == 0 { // γ grows with the examples learned
		if e.GammaScale == 0 {
			e.GammaScale = 10
		}
		if e.GammaExponent == 0 {
			e.GammaExponent = 0.5
		}
	}
	return e
}

// withDefaults fills the reward window, aggregate and max_feedback_skew
// when unset.
func (r RewardConfig) withDefaults() RewardConfig {
	if r.Window == 0 {
		r.Window = 10 * time.Minute
	}
	if r.Aggregate == "" {
		r.Aggregate = AggregateSum
	}
	if r.MaxFeedbackSkew == 0 {
		r.MaxFeedbackSkew = 5 * time.Minute
	}
	return r
}

// withDefaults fills the schedule, window, holdout, min_new_examples,
// learning_rate, objective and passes when unset.
func (r RetrainConfig) withDefaults() RetrainConfig {
	if r.Schedule == "" {
		r.Schedule = "*/15 * * * *"
	}
	if r.Window == 0 {
		r.Window = 168 * time.Hour
	}
	if r.Evidence == "" {
		r.Evidence = EvidenceProgressive
	}
	if r.Holdout == 0 {
		r.Holdout = 0.2
	}
	if r.MinNewExamples == 0 {
		r.MinNewExamples = 1000
	}
	if r.LearningRate == 0 {
		r.LearningRate = 0.25 // batch passes over a window want smaller steps than online learning
	}
	if r.Objective == "" {
		r.Objective = ObjectiveMTR
	}
	if r.Passes == 0 {
		r.Passes = 1 // 2 passes at 0.3 did as well within the backtests' noise, at twice the cost (docs/operations.md, "Backtests")
	}
	if r.PriorSteps == nil {
		p := float64(DefaultPriorSteps)
		r.PriorSteps = &p
	}
	return r
}

// withDefaults fills the policy, estimator, rule, margin, confidence and
// the canary's defaults when unset; the control group has none.
func (p PromoteConfig) withDefaults() PromoteConfig {
	if p.Policy == "" {
		p.Policy = PromoteAuto
	}
	if p.Estimator == "" {
		p.Estimator = EstimatorSNIPS
	}
	if p.Rule == "" {
		p.Rule = RuleNonInferior
	}
	if p.Margin == 0 {
		p.Margin = 0.05
	}
	if p.Confidence == 0 {
		p.Confidence = 0.95
	}
	p.Canary = p.Canary.withDefaults()
	return p
}

// withDefaults fills the duration and min_decisions when unset; a share of
// 0 (no canary) stays.
func (c CanaryConfig) withDefaults() CanaryConfig {
	if c.Duration == 0 {
		c.Duration = 30 * time.Minute
	}
	if c.MinDecisions == 0 {
		c.MinDecisions = 200
	}
	return c
}

// withDefaults fills min_requests when unset; a zero bound stays unchecked.
func (g Guardrails) withDefaults() Guardrails {
	if g.MinRequests == 0 {
		g.MinRequests = 100
	}
	return g
}

// Validate reports an EINVALID error naming the bad field under path (for
// example "models.homepage").
func (c ModelConfig) Validate(path string) error {
	if err := c.validateShape(path); err != nil {
		return err
	}
	if err := c.RewardRule().Validate(path + ".reward"); err != nil {
		return err
	}
	if c.Reward.Window%time.Second != 0 {
		return Errorf(EINVALID, "%s.reward.window must be whole seconds; got %v", path, c.Reward.Window)
	}
	if err := c.Reward.validateRange(path + ".reward"); err != nil {
		return err
	}
	if err := c.Retrain.validate(path + ".retrain"); err != nil {
		return err
	}
	if err := c.Promote.validate(path+".promote", c.Kind); err != nil {
		return err
	}
	return c.Guardrails.validate(path + ".guardrails")
}

// validateShape checks the kind (with a ranker's exploration), bits,
// numeric_bins and interactions.
func (c ModelConfig) validateShape(path string) error {
	switch c.Kind {
	case KindRanker:
		if err := c.Exploration.Validate(path + ".exploration"); err != nil {
			return err
		}
	case KindClassifier:
	default:
		return Errorf(EINVALID, "%s.kind must be ranker or classifier; got %q", path, c.Kind)
	}
	if c.Bits < 1 || c.Bits > 28 {
		return Errorf(EINVALID, "%s.bits must be in [1, 28]; got %d", path, c.Bits)
	}
	if b := c.Bins(); b < 0 || b == 1 || b > 64 {
		return Errorf(EINVALID, "%s.numeric_bins must be 0 (off) or in [2, 64]; got %d", path, b)
	}
	if s := c.NumericBinShape; s != "" && s != BinShapeLinear && s != BinShapeOneHot {
		return Errorf(EINVALID, "%s.numeric_bin_shape must be %s or %s; got %q", path, BinShapeLinear, BinShapeOneHot, s)
	}
	for i, p := range c.Interactions {
		if len(p) != 2 || p[0] == "" || p[1] == "" {
			return Errorf(EINVALID, "%s.interactions[%d] must name two namespaces", path, i)
		}
	}
	return nil
}

// validate reports an EINVALID error naming the bad field under path
// (models.NAME.retrain).
func (r RetrainConfig) validate(path string) error {
	if r.Evidence != EvidenceProgressive && r.Evidence != EvidenceHoldout {
		return Errorf(EINVALID, "%s.evidence must be progressive or holdout; got %q", path, r.Evidence)
	}
	if !(r.Holdout > 0 && r.Holdout < 1) {
		return Errorf(EINVALID, "%s.holdout must be in (0, 1); got %v", path, r.Holdout)
	}
	if r.Window <= 0 {
		return Errorf(EINVALID, "%s.window must be positive", path)
	}
	if r.FullEvery < 0 {
		return Errorf(EINVALID, "%s.full_every must be >= 0; got %d", path, r.FullEvery)
	}
	if r.MinNewExamples < 0 || r.Passes < 1 || r.Passes > 100 {
		return Errorf(EINVALID, "%s: min_new_examples must be >= 0 and passes in [1, 100]", path)
	}
	if p := r.Prior(); !(p >= 0 && p <= 1e6) {
		return Errorf(EINVALID, "%s.prior_steps must be in [0, 1e6]; got %v", path, p)
	}
	switch r.Objective {
	case ObjectiveMTR, ObjectiveIPS, ObjectiveDR:
	default:
		return Errorf(EINVALID, "%s.objective must be mtr, ips or dr; got %q", path, r.Objective)
	}
	return nil
}

// validate reports an EINVALID error naming the bad field under path
// (models.NAME.promote); kind is the model's (a control group is for
// rankers only).
func (p PromoteConfig) validate(path, kind string) error {
	switch p.Policy {
	case PromoteAuto, PromoteManual:
	default:
		return Errorf(EINVALID, "%s.policy must be auto or manual; got %q", path, p.Policy)
	}
	switch p.Estimator {
	case EstimatorIPS, EstimatorSNIPS, EstimatorDR:
	default:
		return Errorf(EINVALID, "%s.estimator must be ips, snips or dr; got %q", path, p.Estimator)
	}
	switch p.Rule {
	case RuleNonInferior, RuleSuperior:
	default:
		return Errorf(EINVALID, "%s.rule must be non-inferior or superior; got %q", path, p.Rule)
	}
	if !(p.Margin > 0 && p.Margin < 1) {
		return Errorf(EINVALID, "%s.margin must be in (0, 1) (a share of the champion's estimate); got %v", path, p.Margin)
	}
	if !(p.Confidence > 0 && p.Confidence < 1) {
		return Errorf(EINVALID, "%s.confidence must be in (0, 1); got %v", path, p.Confidence)
	}
	if p.Canary.Share < 0 || p.Canary.Share >= 1 {
		return Errorf(EINVALID, "%s.canary.share must be in [0, 1); got %v", path, p.Canary.Share)
	}
	if ctl := p.Control; !(ctl.Share >= 0 && ctl.Share <= 0.5) {
		return Errorf(EINVALID, "%s.control.share must be in [0, 0.5]; got %v", path, ctl.Share)
	} else if ctl.Share > 0 && kind != KindRanker {
		return Errorf(EINVALID, "%s.control applies to rankers only", path)
	} else if _, ok := ctl.BaselineVersion(); !ok {
		return Errorf(EINVALID, "%s.control.policy must be %q or \"version N\" (a registered version, N from 1); got %q", path, ControlUniform, ctl.Policy)
	} else if ctl.Share+p.Canary.Share >= 1 {
		return Errorf(EINVALID, "%s.control.share and promote.canary.share together must be below 1; got %v", path, ctl.Share+p.Canary.Share)
	}
	if p.Canary.Duration < 0 || p.Canary.MinDecisions < 0 {
		return Errorf(EINVALID, "%s.canary: duration and min_decisions must not be negative", path)
	}
	return nil
}

// validate reports an EINVALID error naming the bad field under path
// (models.NAME.guardrails).
func (g Guardrails) validate(path string) error {
	switch {
	case !(g.MaxRewardDrop >= 0 && g.MaxRewardDrop <= 1):
		return Errorf(EINVALID, "%s.max_reward_drop must be in [0, 1]; got %v", path, g.MaxRewardDrop)
	case !(g.MaxErrorRate >= 0 && g.MaxErrorRate <= 1):
		return Errorf(EINVALID, "%s.max_error_rate must be in [0, 1]; got %v", path, g.MaxErrorRate)
	case !(g.MaxP99Ms >= 0) || math.IsInf(g.MaxP99Ms, 0):
		return Errorf(EINVALID, "%s.max_p99_ms must be a finite number >= 0; got %v", path, g.MaxP99Ms)
	case g.MinRequests < 0:
		return Errorf(EINVALID, "%s.min_requests must not be negative", path)
	}
	return nil
}

// RewardRule returns the rule stamped on every decision of this model.
func (c ModelConfig) RewardRule() RewardRule {
	return RewardRule{WindowSeconds: int64(c.Reward.Window / time.Second), Default: c.Reward.Default, Aggregate: c.Reward.Aggregate,
		LateWindowSeconds: int64(c.Reward.LateWindow / time.Second)}
}

// DefaultNumericBins is numeric_bins when unset.
const DefaultNumericBins = 8

// Bin shapes (numeric_bin_shape), as model/ learns them (model.BinsLinear,
// model.BinsOneHot).
const (
	BinShapeLinear = "linear"
	BinShapeOneHot = "onehot"
)

// Bins returns numeric_bins as set, 0 when unset: a configuration written
// before numeric_bins existed (a version's manifest) binned nothing.
func (c ModelConfig) Bins() int {
	if c.NumericBins == nil {
		return 0
	}
	return *c.NumericBins
}

// InteractionPairs returns the interactions as pairs.
func (c ModelConfig) InteractionPairs() [][2]string {
	out := make([][2]string, 0, len(c.Interactions))
	for _, p := range c.Interactions {
		if len(p) == 2 {
			out = append(out, [2]string{p[0], p[1]})
		}
	}
	return out
}

// MaxFeedbackSkew is the largest reward.max_feedback_skew: the bounded
// examples queries read feedback from an hour before their range, which
// must hold a feedback's time, the skew and the replicas' clock differences.
const MaxFeedbackSkew = 30 * time.Minute

// MaxLateWindow is the largest reward.late_window.
const MaxLateWindow = 30 * 24 * time.Hour

// validateRange checks reward.min, reward.max, the default reward against
// them, reward.max_feedback_skew and reward.late_window.
func (r RewardConfig) validateRange(path string) error {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case !finite(r.Default):
		return Errorf(EINVALID, "%s.default must be a finite number; got %v", path, r.Default)
	case r.Min != nil && !finite(*r.Min):
		return Errorf(EINVALID, "%s.min must be a finite number; got %v", path, *r.Min)
	case r.Max != nil && !finite(*r.Max):
		return Errorf(EINVALID, "%s.max must be a finite number; got %v", path, *r.Max)
	case r.Min != nil && r.Max != nil && *r.Min > *r.Max:
		return Errorf(EINVALID, "%s.min (%v) is above %s.max (%v)", path, *r.Min, path, *r.Max)
	case r.Min != nil && r.Default < *r.Min:
		return Errorf(EINVALID, "%s.default (%v) is below %s.min (%v)", path, r.Default, path, *r.Min)
	case r.Max != nil && r.Default > *r.Max:
		return Errorf(EINVALID, "%s.default (%v) is above %s.max (%v)", path, r.Default, path, *r.Max)
	case r.MaxFeedbackSkew < 0 || r.MaxFeedbackSkew > MaxFeedbackSkew:
		return Errorf(EINVALID, "%s.max_feedback_skew must be in [0, %v]; got %v", path, MaxFeedbackSkew, r.MaxFeedbackSkew)
	case r.LateWindow < 0 || r.LateWindow > MaxLateWindow || r.LateWindow%time.Second != 0:
		return Errorf(EINVALID, "%s.late_window must be whole seconds in [0, %v]; got %v", path, MaxLateWindow, r.LateWindow)
	}
	return nil
}
