package deploy

import (
	"math"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
)

// ControlLift is what the flywheel earns over its control group
// (promote.control): the online reward of the decisions the live versions
// made (champion and canary together) against the control group's
// baseline, over the same closed examples' time range.
type ControlLift struct {
	FromMs  uint64 `json:"from_ms"`
	ToMs    uint64 `json:"to_ms"`
	Treated Arm    `json:"treated"`
	Control Arm    `json:"control"`
	// Lift is Treated's reward rate minus Control's, with its interval at
	// Confidence (normal, unpooled variances); Relative divides it by
	// Control's rate (0 when that is 0).
	Lift       float64 `json:"lift"`
	Lower      float64 `json:"lower"`
	Upper      float64 `json:"upper"`
	Relative   float64 `json:"relative"`
	Confidence float64 `json:"confidence"`
}

// Arm is one side of a comparison: closed decisions, reward rate and the
// sample standard deviation of the reward.
type Arm struct {
	Decisions  uint64  `json:"decisions"`
	RewardRate float64 `json:"reward_rate"`
	StdDev     float64 `json:"stddev"`
}

// Lift compares the control variant's rows with every other variant's
// (pooled) in rows, the online reward by version and variant over one time
// range; nil when either side has fewer than two decisions.
func Lift(rows []clickhouse.VersionReward, confidence float64, fromMs, toMs uint64) *ControlLift {
	var treated, control []clickhouse.VersionReward
	for _, r := range rows {
		if r.Variant == flywheel.VariantControl {
			control = append(control, r)
		} else {
			treated = append(treated, r)
		}
	}
	t, c := pool(treated), pool(control)
	if t.Decisions < 2 || c.Decisions < 2 {
		return nil
	}
	out := &ControlLift{FromMs: fromMs, ToMs: toMs, Treated: t, Control: c, Lift: t.RewardRate - c.RewardRate, Confidence: confidence}
	se := math.Sqrt(t.StdDev*t.StdDev/float64(t.Decisions) + c.StdDev*c.StdDev/float64(c.Decisions))
	z := flywheel.TwoSidedZ(confidence)
	out.Lower, out.Upper = out.Lift-z*se, out.Lift+z*se
	if c.RewardRate != 0 {
		out.Relative = out.Lift / c.RewardRate
	}
	return out
}

// pool merges groups' counts, means and sample standard deviations into
// those of their union.
func pool(rows []clickhouse.VersionReward) Arm {
	var n, sum, sq float64
	for _, r := range rows {
		k := float64(r.Decisions)
		sd := r.StdDev
		if math.IsNaN(sd) || k < 2 {
			sd = 0
		}
		n += k
		sum += k * r.Mean
		sq += (k-1)*sd*sd + k*r.Mean*r.Mean // Σ x² of the group
	}
	if n == 0 {
		return Arm{}
	}
	mean := sum / n
	a := Arm{Decisions: uint64(n), RewardRate: mean}
	if n > 1 {
		a.StdDev = math.Sqrt(math.Max(sq-n*mean*mean, 0) / (n - 1))
	}
	return a
}
