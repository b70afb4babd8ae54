package flywheel

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestRewardRangeValidation(t *testing.T) {
	t.Parallel()
	f := func(v float64) *float64 { return &v }
	for _, tc := range []struct {
		name   string
		reward RewardConfig
		want   string // "" valid, else in the error
	}{
		{"unbounded", RewardConfig{}, ""},
		{"range", RewardConfig{Min: f(0), Max: f(1)}, ""},
		{"only max", RewardConfig{Max: f(10)}, ""},
		{"min above max", RewardConfig{Min: f(2), Max: f(1)}, "models.homepage.reward.min (2) is above models.homepage.reward.max (1)"},
		{"nan min", RewardConfig{Min: f(math.NaN())}, "models.homepage.reward.min must be a finite number"},
		{"infinite max", RewardConfig{Max: f(math.Inf(1))}, "models.homepage.reward.max must be a finite number"},
		{"default below min", RewardConfig{Min: f(0.5), Default: 0}, "models.homepage.reward.default (0) is below models.homepage.reward.min"},
		{"default above max", RewardConfig{Max: f(-1), Default: 0}, "models.homepage.reward.default (0) is above models.homepage.reward.max"},
		{"skew too large", RewardConfig{MaxFeedbackSkew: 2 * time.Hour}, "models.homepage.reward.max_feedback_skew must be in [0, 30m0s]"},
		{"negative skew", RewardConfig{MaxFeedbackSkew: -time.Second}, "models.homepage.reward.max_feedback_skew"},
		{"late window", RewardConfig{LateWindow: time.Hour}, ""},
		{"negative late window", RewardConfig{LateWindow: -time.Second}, "models.homepage.reward.late_window must not be negative"},
		{"late window in parts of seconds", RewardConfig{LateWindow: 1500 * time.Millisecond}, "models.homepage.reward.late_window must be whole seconds"},
		{"late window too long", RewardConfig{LateWindow: 31 * 24 * time.Hour}, "models.homepage.reward.late_window must be whole seconds in [0, 720h0m0s]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkValidation(t, ModelConfig{Reward: tc.reward}.WithDefaults().Validate("models.homepage"), tc.want)
		})
	}
	if r := (ModelConfig{Reward: RewardConfig{Window: time.Minute, LateWindow: time.Hour}}).WithDefaults().RewardRule(); r.WindowSeconds != 60 || r.LateWindowSeconds != 3600 {
		t.Fatalf("reward rule %+v, want window_s 60 and late_window_s 3600", r)
	}
	if d := (ModelConfig{}).WithDefaults().Reward.MaxFeedbackSkew; d != 5*time.Minute {
		t.Fatalf("default reward.max_feedback_skew %v, want 5m", d)
	}
}

func TestCheckReward(t *testing.T) {
	t.Parallel()
	lo, hi := 0.0, 1.0
	r := RewardConfig{Min: &lo, Max: &hi}
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{0, ""}, {1, ""}, {0.5, ""},
		{-0.1, "reward -0.1 is below the model's reward.min 0"},
		{1e308, "reward 1e+308 is above the model's reward.max 1"},
		{math.NaN(), "reward is not a finite number"},
		{math.Inf(-1), "reward is not a finite number"},
	} {
		err := r.CheckReward("reward", tc.v)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || err.Error() != tc.want && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("CheckReward(%v) = %v, want %q", tc.v, err, tc.want)
		}
	}
	if err := (RewardConfig{}).CheckReward("reward", -1e300); err != nil {
		t.Errorf("an unbounded model refused %v", err)
	}
}

func TestControlPolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		policy  string
		version int
		want    string // "" valid, else in the error
	}{
		{"", 0, ""},
		{"uniform", 0, ""},
		{"version 1", 1, ""},
		{"version 12", 12, ""},
		{"version 0", 0, `models.homepage.promote.control.policy must be "uniform" or "version N" (a registered version, N from 1); got "version 0"`},
		{"version -1", 0, "promote.control.policy must be"},
		{"version 01", 0, "promote.control.policy must be"},
		{"version +2", 0, "promote.control.policy must be"},
		{"version", 0, "promote.control.policy must be"},
		{"Version 2", 0, "promote.control.policy must be"},
		{"champion", 0, `got "champion"`},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			t.Parallel()
			c := ModelConfig{Promote: PromoteConfig{Control: ControlConfig{Share: 0.05, Policy: tc.policy}}}.WithDefaults()
			checkValidation(t, c.Validate("models.homepage"), tc.want)
			if v, ok := c.Promote.Control.BaselineVersion(); ok != (tc.want == "") || v != tc.version {
				t.Fatalf("BaselineVersion() = %d, %v; want %d, %v", v, ok, tc.version, tc.want == "")
			}
		})
	}
}

// checkValidation fails t unless err is nil for want "", else an EINVALID
// error containing want.
func checkValidation(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("valid config refused: %v", err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want) || ErrorCode(err) != EINVALID):
		t.Fatalf("error %v, want an EINVALID error containing %q", err, want)
	}
}

// The learner's defaults (linear bins, prior steps) fill in, a manifest
// written before them keeps meaning one-hot bins and no prior, and bad
// values are refused naming the field.
func TestLearnerDefaults(t *testing.T) {
	t.Parallel()
	c := ModelConfig{}.WithDefaults()
	if c.Bins() != DefaultNumericBins || c.NumericBinShape != BinShapeLinear || c.Retrain.Prior() != DefaultPriorSteps {
		t.Fatalf("defaults: %d bins, shape %q, prior %v", c.Bins(), c.NumericBinShape, c.Retrain.Prior())
	}
	var old ModelConfig // a manifest's config from before: no shape, no prior
	if old.NumericBinShape != "" || old.Retrain.Prior() != 0 {
		t.Fatal("an old manifest's config reads as something")
	}
	zero := 0.0
	off := ModelConfig{Retrain: RetrainConfig{PriorSteps: &zero}}.WithDefaults()
	if off.Retrain.Prior() != 0 {
		t.Fatalf("prior_steps: 0 became %v", off.Retrain.Prior())
	}
	bad := ModelConfig{NumericBinShape: "spline"}.WithDefaults()
	checkValidation(t, bad.Validate("models.m"), `models.m.numeric_bin_shape must be linear or onehot; got "spline"`)
	neg := -1.0
	bad = ModelConfig{Retrain: RetrainConfig{PriorSteps: &neg}}.WithDefaults()
	checkValidation(t, bad.Validate("models.m"), "models.m.retrain.prior_steps must be in [0, 1e6]; got -1")
	nan := math.NaN()
	bad = ModelConfig{Retrain: RetrainConfig{PriorSteps: &nan}}.WithDefaults()
	checkValidation(t, bad.Validate("models.m"), "prior_steps must be in [0, 1e6]")
	if c.Retrain.Evidence != EvidenceProgressive || c.Retrain.Holdout != 0.2 {
		t.Fatalf("evidence default %q, holdout %v", c.Retrain.Evidence, c.Retrain.Holdout)
	}
	bad = ModelConfig{Retrain: RetrainConfig{Evidence: "split"}}.WithDefaults()
	checkValidation(t, bad.Validate("models.m"), `models.m.retrain.evidence must be progressive or holdout; got "split"`)
}
