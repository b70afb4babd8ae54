package clickhouse

// The product's queries of closed examples (retraining's reads, the canary
// judge's, the dashboard's) name {examples} where an analyst names the
// examples view: the view's query with the model and the time range pushed
// into the decisions and the feedback it reads (the range also bounds ts,
// the partition key, so that parts of older decisions are not read). ClickHouse 18.16 pushes no
// condition into a view, so a query of the view joins every decision and
// every feedback event in the database, whatever range it asks for; this
// one reads one model's decisions of the range (the decisions' primary key
// starts with the model) and the feedback of the months from the range's
// start on (feedback is partitioned by month).
//
// Its arguments, in order, are examplesArgs(model, fromMs, toMs).

// feedbackSkewMs is how long before its decision a feedback event may have
// been received (the replicas' clocks differ) and still count: the bounded
// query reads no feedback older than this before the range. The view reads
// all of it; the answers differ only for feedback logged more than an hour
// before its decision.
const feedbackSkewMs = 3600 * 1000

// feedbackFrom is the oldest feedback time (Unix ms) the bounded reads of
// decisions from fromMs on read: feedbackSkewMs before it.
func feedbackFrom(fromMs uint64) uint64 {
	if fromMs > feedbackSkewMs {
		return fromMs - feedbackSkewMs
	}
	return 0
}

// examplesOfModel is the bounded examples query of one model's decisions
// with fromMs <= ts_ms <= toMs, as a subquery aliased e.
func examplesOfModel() string {
	return "(" + examplesSelectByModel("action_ids, action_keys", liveByArg, closedByArg, lateDeadline,
		" AND model = ? AND ts >= toDateTime(intDiv(?, 1000)) AND ts_ms >= ? AND ts_ms <= ?",
		rewardFeedback+" AND ts >= toDateTime(intDiv(?, 1000)) AND ts_ms >= ?") + ") AS e"
}

// examplesArgs are the arguments of {examples}: model's decisions with
// fromMs <= ts_ms <= toMs whose window ends by throughMs (closedThroughMs).
func examplesArgs(model string, fromMs, toMs, throughMs uint64) []any {
	lo := feedbackFrom(fromMs)
	return []any{throughMs, model, fromMs, fromMs, toMs, lo, lo, throughMs, model, fromMs, fromMs, toMs}
}

// The queries of a recent range (the canary judge's, the dashboard's) name
// {recent}: the examples of one model's decisions of the range, with the
// columns event_id, ts, ts_ms, model, kind, version, variant, explored,
// score, feedback_count and reward, read from the time-ordered companions
// of decisions and feedback (migration 15) as the subquery aliased e. Its
// rows are those of {examples} over the same range; it reads the granules
// of the range (and the feedback from feedbackSkewMs before it on), where
// {examples} reads every decision of the model in the range's months once
// merges have made each month one part (bench/queries).
//
// Its arguments, in order, are recentArgs(model, fromMs, toMs, throughMs).
//
// A feedback event delivered twice at different times (a client's retry
// without a time of its own) is two rows of feedback_by_time: the one
// ingested last counts, as FINAL keeps it in feedback.
const recentExamples = `(SELECT
			event_id, ts, ts_ms, model, kind, version, variant, explored, score, feedback_count,
			` + rewardOfExample + `
		FROM
		(
			SELECT event_id, ts, ts_ms, model, kind, version, variant, explored, score, reward_default, reward_aggregate
			FROM {db}.decisions_by_time FINAL
			WHERE ` + closedByArg + ` AND ` + recentActivated + ` AND model = ? AND ts_ms >= ? AND ts_ms <= ?
		) AS d
		ALL LEFT JOIN
		(
			SELECT
				event_id, d_model AS model,
				` + feedbackAggregates + `
			FROM
			(
				SELECT event_id, argMax(model, ingested_at) AS f_model, argMax(ts_ms, ingested_at) AS f_ts_ms, argMax(reward, ingested_at) AS f_reward
				FROM {db}.feedback_by_time
				WHERE type != 'flywheel.activation' AND ts_ms >= ?
				GROUP BY event_id, feedback_id
			) AS fb
			ALL INNER JOIN
			(
				SELECT event_id, model AS d_model, max(` + lateDeadline + `) AS deadline_ms
				FROM {db}.decisions_by_time FINAL
				WHERE ` + closedByArg + ` AND model = ? AND ts_ms >= ? AND ts_ms <= ?
				GROUP BY event_id, model
			) AS dl USING event_id
			WHERE f_ts_ms <= deadline_ms AND (f_model = '' OR f_model = d_model)
			GROUP BY event_id, d_model
		) AS f USING (event_id, model)) AS e`

// recentActivated is activatedCondition over the activations received from
// the range's feedback bound on (an activation follows its decision).
const recentActivated = `(deferred = 0 OR splitByChar('#', event_id)[1] IN (SELECT event_id FROM {db}.feedback_by_time WHERE type = 'flywheel.activation' AND ts_ms >= ?))`

// recentArgs are the arguments of {recent}: model's decisions with
// fromMs <= ts_ms <= toMs whose window ends by throughMs (closedThroughMs).
func recentArgs(model string, fromMs, toMs, throughMs uint64) []any {
	lo := feedbackFrom(fromMs)
	return []any{throughMs, lo, model, fromMs, toMs, lo, throughMs, model, fromMs, toMs}
}
