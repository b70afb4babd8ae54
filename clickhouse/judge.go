package clickhouse

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// VersionReward is the reward of the closed examples of one version and
// variant of a model.
type VersionReward struct {
	Version   int
	Variant   string
	Decisions uint64
	Mean      float64 // average reward
	StdDev    float64 // sample standard deviation; NaN below two decisions
}

// Rewards reads what versions earned online from the examples view, for
// the canary judge. It is safe for concurrent use.
type Rewards struct {
	conn driver.Conn
	db   string
}

// NewRewards returns the online rewards of the migrated database db
// (Config.Database) on conn.
func NewRewards(conn driver.Conn, db string) *Rewards { return &Rewards{conn: conn, db: db} }

// sqlOnlineReward is the reward of every version and variant of a model
// over the closed examples decided in [from, to) (Unix ms). The order makes
// the answer the same on every server; the judge does not depend on it.
const sqlOnlineReward = `SELECT version, variant, count(), avg(reward), stddevSamp(reward)
		FROM {recent} GROUP BY version, variant ORDER BY version, variant`

// sqlOnlineLogLoss is the log loss of the scores every version and variant
// of a classifier served, against the outcomes (reward above 0), over the
// closed examples decided in [from, to) (Unix ms); scores are clamped to
// [1e-15, 1 - 1e-15], as retraining's evaluation does.
const sqlOnlineLogLoss = `SELECT version, variant, count(), avg(loss), stddevSamp(loss)
		FROM (
			SELECT version, variant,
				if(reward > 0, -log(greatest(least(score, 1 - 1e-15), 1e-15)), -log(greatest(least(1 - score, 1 - 1e-15), 1e-15))) AS loss
			FROM {recent}
		) AS l
		GROUP BY version, variant ORDER BY version, variant`

// Online returns the reward of every version and variant of model from the
// closed examples decided in [fromMs, toMs) (Unix ms), by version and
// variant, or the query's error.
func (r *Rewards) Online(ctx context.Context, model string, fromMs, toMs uint64) ([]VersionReward, error) {
	return r.query(ctx, "online reward", sqlOnlineReward, model, fromMs, toMs)
}

// OnlineLogLoss returns the log loss of the scores every version and variant
// of classifier model served, against the outcomes, from the closed examples
// decided in [fromMs, toMs) (Unix ms): Mean and StdDev are of the per-event
// log loss. It returns the query's error.
func (r *Rewards) OnlineLogLoss(ctx context.Context, model string, fromMs, toMs uint64) ([]VersionReward, error) {
	return r.query(ctx, "online log loss", sqlOnlineLogLoss, model, fromMs, toMs)
}

// halfOpen are the arguments of {recent} for model's decisions in
// [fromMs, toMs).
func halfOpen(model string, fromMs, toMs, throughMs uint64) []any {
	if toMs == 0 {
		return recentArgs(model, 1, 0, throughMs) // nothing
	}
	return recentArgs(model, fromMs, toMs-1, throughMs)
}

func (r *Rewards) query(ctx context.Context, what, sql, model string, fromMs, toMs uint64) ([]VersionReward, error) {
	through, err := closedThroughMs(ctx, r.conn, r.db)
	if err != nil {
		return nil, fmt.Errorf("%s of %s: %w", what, model, err)
	}
	rows, err := r.conn.Query(ctx, expand(sql, r.db), halfOpen(model, fromMs, toMs, through)...)
	if err != nil {
		return nil, fmt.Errorf("%s of %s: %w", what, model, err)
	}
	defer rows.Close()
	var out []VersionReward
	for rows.Next() {
		var (
			s   VersionReward
			ver uint32
		)
		if err := rows.Scan(&ver, &s.Variant, &s.Decisions, &s.Mean, &s.StdDev); err != nil {
			return nil, fmt.Errorf("%s of %s: %w", what, model, err)
		}
		s.Version = int(ver)
		out = append(out, s)
	}
	return out, rows.Err()
}

// judgeStatements lists the statements of this file for Statements.
func judgeStatements(db string) []Statement {
	return []Statement{
		{Name: "judge.online_reward", SQL: expand(sqlOnlineReward, db), Args: halfOpen("homepage", 0, 4102444800000, 4102444800000), Query: true},
		{Name: "judge.online_reward.classifier", SQL: expand(sqlOnlineReward, db), Args: halfOpen("ctr", 0, 4102444800000, 4102444800000), Query: true},
		{Name: "judge.online_log_loss", SQL: expand(sqlOnlineLogLoss, db), Args: halfOpen("ctr", 0, 4102444800000, 4102444800000), Query: true},
	}
}
