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
	lo := uint64(0)
	if fromMs > feedbackSkewMs {
		lo = fromMs - feedbackSkewMs
	}
	return []any{throughMs, model, fromMs, fromMs, toMs, lo, lo, throughMs, model, fromMs, fromMs, toMs}
}
