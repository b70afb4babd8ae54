package deploy

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-dev/flywheel"
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

// Online is a version's reward as served, from the examples ClickHouse
// holds (closed decisions only).
type Online struct {
	Version    int     `json:"version"`
	Variant    string  `json:"variant"`
	Decisions  int     `json:"decisions"`
	RewardRate float64 `json:"reward_rate"`
	StdErr     float64 `json:"stderr"`
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
	reg     *Registry
	conn    driver.Conn
	db      string
	models  map[string]flywheel.ModelConfig
	log     *slog.Logger
	now     func() time.Time
	leader  func() bool
	actions *prometheus.CounterVec
}

// NewJudge returns a judge of models. reg may be nil (no metrics); log nil
// discards; now nil is time.Now.
func NewJudge(registry *Registry, conn driver.Conn, db string, models map[string]flywheel.ModelConfig, reg prometheus.Registerer, log *slog.Logger, now func() time.Time) (*Judge, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	j := &Judge{reg: registry, conn: conn, db: db, models: models, log: log, now: now, leader: func() bool { return true },
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flywheel_deploy_actions_total", Help: "Canary decisions and guardrail rollbacks, by model and action."}, []string{"model", "action"})}
	if reg != nil {
		if err := reg.Register(j.actions); err != nil {
			return nil, err
		}
	}
	return j, nil
}

// ElectWith makes the judge act only while l leads.
func (j *Judge) ElectWith(isLeader func() bool) { j.leader = isLeader }

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
		if !j.leader() {
			continue
		}
		for _, name := range slices.Sorted(mapsKeys(j.models)) {
			if _, err := j.Check(ctx, name); err != nil && ctx.Err() == nil {
				j.log.Warn("deploy check failed", "model", name, "err", err)
			}
		}
	}
}

func mapsKeys(m map[string]flywheel.ModelConfig) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
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
	hist, err := j.reg.History(ctx, name)
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
	stats, err := j.online(ctx, name, since, time.Time{})
	if err != nil {
		return nil, err
	}
	c, h := stats.get(canary.Version, flywheel.VariantCanary), stats.get(champ, flywheel.VariantChampion)
	v := &Verdict{Model: name, Version: canary.Version, Subject: &c, Reference: &h, Action: ActionWaiting}
	minN := mc.Promote.Canary.MinDecisions
	enough := c.Decisions >= minN && h.Decisions >= minN
	z := zFor(mc.Promote.Confidence)
	diff, se := c.RewardRate-h.RewardRate, math.Hypot(c.StdErr, h.StdErr)
	age := j.now().Sub(since)
	compare := fmt.Sprintf("canary v%d %.4f ± %.4f (%d) vs champion v%d %.4f ± %.4f (%d) over %s",
		c.Version, c.RewardRate, c.StdErr, c.Decisions, h.Version, h.RewardRate, h.StdErr, h.Decisions, age.Round(time.Second))
	switch {
	case enough && dropped(mc.Guardrails.MaxRewardDrop, c, h, z):
		v.Action = ActionRolledBack
		v.Reason = fmt.Sprintf("guardrail max_reward_drop %.2f: %s", mc.Guardrails.MaxRewardDrop, compare)
		return v, j.reg.EndCanary(ctx, name, "guardrail", v.Reason)
	case age < mc.Promote.Canary.Duration:
		v.Reason = fmt.Sprintf("canary runs for %s; %s", mc.Promote.Canary.Duration, compare)
	case enough && diff+z*se >= 0:
		v.Action = ActionPromoted
		v.Reason = fmt.Sprintf("canary not worse online at %.0f%% confidence: %s", mc.Promote.Confidence*100, compare)
		return v, j.reg.Promote(ctx, name, canary.Version, "canary", v.Reason)
	case enough:
		v.Action = ActionEnded
		v.Reason = fmt.Sprintf("canary worse online at %.0f%% confidence: %s", mc.Promote.Confidence*100, compare)
		return v, j.reg.EndCanary(ctx, name, "canary", v.Reason)
	case age >= 3*mc.Promote.Canary.Duration:
		v.Action = ActionEnded
		v.Reason = fmt.Sprintf("too little data after 3 × %s (need %d closed decisions per variant): %s", mc.Promote.Canary.Duration, minN, compare)
		return v, j.reg.EndCanary(ctx, name, "canary", v.Reason)
	default:
		v.Reason = fmt.Sprintf("waiting for %d closed decisions per variant: %s", minN, compare)
	}
	return v, nil
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
	after, err := j.online(ctx, name, champ.Time, time.Time{})
	if err != nil {
		return nil, err
	}
	before, err := j.online(ctx, name, champ.Time.Add(-span), champ.Time)
	if err != nil {
		return nil, err
	}
	c, p := after.get(champ.Version, flywheel.VariantChampion), before.get(champ.PreviousVersion, flywheel.VariantChampion)
	v.Subject, v.Reference = &c, &p
	minN := mc.Promote.Canary.MinDecisions
	if c.Decisions < minN || p.Decisions < minN || !dropped(mc.Guardrails.MaxRewardDrop, c, p, zFor(mc.Promote.Confidence)) {
		return v, nil
	}
	v.Action = ActionRolledBack
	v.Reason = fmt.Sprintf("guardrail max_reward_drop %.2f: champion v%d %.4f ± %.4f (%d) since its promotion vs v%d %.4f ± %.4f (%d) before",
		mc.Guardrails.MaxRewardDrop, c.Version, c.RewardRate, c.StdErr, c.Decisions, p.Version, p.RewardRate, p.StdErr, p.Decisions)
	_, err = j.reg.Rollback(ctx, name, "guardrail", v.Reason)
	return v, err
}

// dropped reports whether s's reward is below (1-drop) of ref's, and
// significantly below ref's at the z of the configured confidence.
func dropped(drop float64, s, ref Online, z float64) bool {
	if drop <= 0 {
		return false
	}
	return s.RewardRate < ref.RewardRate*(1-drop) && s.RewardRate-ref.RewardRate+z*math.Hypot(s.StdErr, ref.StdErr) < 0
}

// zFor is the two-sided normal quantile of confidence (1.96 for 0.95).
func zFor(confidence float64) float64 { return math.Sqrt2 * math.Erfinv(confidence) }

type onlineStats []Online

func (o onlineStats) get(version int, variant string) Online {
	for _, s := range o {
		if s.Version == version && s.Variant == variant {
			return s
		}
	}
	return Online{Version: version, Variant: variant}
}

// online reads the reward of every version and variant of name from the
// closed examples decided in [from, to) (to zero: open-ended).
func (j *Judge) online(ctx context.Context, name string, from, to time.Time) (onlineStats, error) {
	toMs := uint64(math.MaxInt64)
	if !to.IsZero() {
		toMs = uint64(to.UnixMilli())
	}
	rows, err := j.conn.Query(ctx, `SELECT version, variant, count(), avg(reward), stddevSamp(reward)
		FROM `+j.db+`.examples WHERE model = ? AND ts_ms >= ? AND ts_ms < ? GROUP BY version, variant`,
		name, uint64(from.UnixMilli()), toMs)
	if err != nil {
		return nil, fmt.Errorf("online reward of %s: %w", name, err)
	}
	defer rows.Close()
	var out onlineStats
	for rows.Next() {
		var (
			ver      uint32
			variant  string
			n        uint64
			avg, std float64
		)
		if err := rows.Scan(&ver, &variant, &n, &avg, &std); err != nil {
			return nil, fmt.Errorf("online reward of %s: %w", name, err)
		}
		se := 0.0
		if n > 1 && !math.IsNaN(std) {
			se = std / math.Sqrt(float64(n))
		}
		out = append(out, Online{Version: int(ver), Variant: variant, Decisions: int(n), RewardRate: avg, StdErr: se})
	}
	return out, rows.Err()
}
