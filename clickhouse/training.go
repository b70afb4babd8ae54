package clickhouse

import (
	"context"
	"fmt"
	"math"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// closedInRange is the closed decisions (liveCondition) of one model and kind with
// lo <= ts_ms <= hi, as a subquery: its arguments are rangeArgs(model,
// kind, lo, hi). The conditions are inside the FINAL read, where 18.16
// applies them (it pushes none into a subquery), and the bound on ts, the
// partition key, skips every part whose decisions all precede lo: a count
// of the last minutes reads the parts written in them, not the window.
const closedInRange = `(SELECT ts_ms FROM {db}.decisions FINAL
		WHERE model = ? AND kind = ? AND ts >= toDateTime(intDiv(?, 1000)) AND ts_ms >= ? AND ts_ms <= ?
			AND ` + liveCondition + `)`

// rangeArgs are the arguments of closedInRange.
func rangeArgs(model, kind string, lo, hi uint64, more ...any) []any {
	return append([]any{model, kind, lo, lo, hi}, more...)
}

// The statements of retraining.
const (
	closedCountSQL = `SELECT count() FROM ` + closedInRange

	ingestedThroughSQL = `SELECT max(ingested_at) FROM {db}.decisions WHERE model = ?`

	closedSpanSQL = `SELECT count(), min(ts_ms), max(ts_ms) FROM ` + closedInRange

	holdoutCutSQL = `SELECT ts_ms FROM ` + closedInRange + ` ORDER BY ts_ms LIMIT 1 OFFSET ?`

	rankerExamplesSQL = `SELECT event_id, ts_ms, version, context_json, actions_json, arrayStringConcat(action_keys, ' '), probabilities, chosen_index, reward, feedback_count
		FROM {examples} WHERE kind = 'ranker' ORDER BY ts_ms, event_id`

	classifierExamplesSQL = `SELECT event_id, ts_ms, version, context_json, reward, feedback_count
		FROM {examples} WHERE kind = 'classifier' ORDER BY ts_ms, event_id`

	actionsByKeySQL = `SELECT action_key, any(action_json) FROM {db}.actions WHERE action_key IN ? GROUP BY action_key ORDER BY action_key`

	recordRunSQL = `INSERT INTO {db}.retrain_runs (model, started_at, started_ms, took_ms, outcome, reason, version, champion, train_rows, holdout_rows, comparison)
		SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?`
)

const (
	// scanBlockRows bounds the rows ClickHouse sends per block of a stream
	// of examples, and so what one block (20 actions of JSON each) costs in
	// memory on the reading side.
	scanBlockRows = 2048
	// externalSortBytes: sorting millions of wide rows by time spills to
	// disk past this instead of holding them in ClickHouse's memory.
	externalSortBytes = 512 << 20
	// streamDeadline bounds a stream of examples whose context has no
	// deadline. clickhouse-go sets a connection's read deadline once per
	// query, its ReadTimeout (5 min by default) from the query's start,
	// unless the context has a deadline, which replaces it: a stream read for
	// longer than that, a full retrain over millions of examples, failed
	// midway with an i/o timeout however steadily it read.
	streamDeadline = 24 * time.Hour
	// keysPerQuery keeps the text of a query of actions by key well under
	// max_query_size.
	keysPerQuery = 2000
)

// Training is what retraining reads from ClickHouse and writes to it: the
// closed examples of a model (counted, sized and streamed in order), the
// actions they name by key, and the record of each run. Its methods are
// safe for concurrent use.
type Training struct {
	conn driver.Conn
	db   string
}

// NewTraining returns the training data of database db over conn.
func NewTraining(conn driver.Conn, db string) *Training { return &Training{conn: conn, db: db} }

// FreshCount returns how many closed examples of model (of kind) there are
// with ts_ms > afterMs, or the error of the query.
func (t *Training) FreshCount(ctx context.Context, model, kind string, afterMs uint64) (uint64, error) {
	var n uint64
	if err := t.conn.QueryRow(ctx, expand(closedCountSQL, t.db), rangeArgs(model, kind, afterMs+1, math.MaxUint64)...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count new examples of %s: %w", model, err)
	}
	return n, nil
}

// IngestedThrough returns ClickHouse's ingestion watermark of model: the
// newest ingested_at of its decisions, in UTC (the zero Unix time when there
// are none), or the error of the query.
func (t *Training) IngestedThrough(ctx context.Context, model string) (time.Time, error) {
	var at time.Time
	if err := t.conn.QueryRow(ctx, expand(ingestedThroughSQL, t.db), model).Scan(&at); err != nil {
		return time.Time{}, fmt.Errorf("ingestion watermark of %s: %w", model, err)
	}
	return at.UTC(), nil
}

// ClosedSpan returns how many closed examples of model (of kind) there are
// with fromMs <= ts_ms <= toMs, and the ts_ms of the first and the last of
// them (0 when there are none), or the error of the query.
func (t *Training) ClosedSpan(ctx context.Context, model, kind string, fromMs, toMs uint64) (rows, firstMs, lastMs uint64, err error) {
	if err := t.conn.QueryRow(ctx, expand(closedSpanSQL, t.db), rangeArgs(model, kind, fromMs, toMs)...).Scan(&rows, &firstMs, &lastMs); err != nil {
		return 0, 0, 0, fmt.Errorf("size the closed examples of %s: %w", model, err)
	}
	return rows, firstMs, lastMs, nil
}

// HoldoutCut returns the ts_ms of the closed example of model (of kind) at
// offset (from 0, in ts_ms order) among those with fromMs <= ts_ms <= toMs,
// and how many of them are before that time, or the error of either query
// (one wrapping sql.ErrNoRows when offset is past the last example).
func (t *Training) HoldoutCut(ctx context.Context, model, kind string, fromMs, toMs, offset uint64) (cutMs, before uint64, err error) {
	if err := t.conn.QueryRow(ctx, expand(holdoutCutSQL, t.db), rangeArgs(model, kind, fromMs, toMs, offset)...).Scan(&cutMs); err != nil {
		return 0, 0, fmt.Errorf("find the holdout cut of %s: %w", model, err)
	}
	if cutMs == fromMs {
		return cutMs, 0, nil
	}
	if err := t.conn.QueryRow(ctx, expand(closedCountSQL, t.db), rangeArgs(model, kind, fromMs, cutMs-1)...).Scan(&before); err != nil {
		return 0, 0, fmt.Errorf("count the training rows of %s: %w", model, err)
	}
	return cutMs, before, nil
}

// Rankers streams the closed examples of ranker model with fromMs <= ts_ms
// <= toMs, oldest first (ties by event id), block by block: it calls row once
// per example, in order, with scan, which reads the example's columns into
// dst (as rows.Scan does): event_id string, ts_ms uint64, version uint32,
// context_json string, actions_json string, the action keys joined by spaces
// string, probabilities []float64, chosen_index uint16, reward float64,
// feedback_count uint64. scan is valid only during the call. An error
// returned by row stops the stream and is returned as is; otherwise Rankers
// returns the error of the query or of reading its rows.
func (t *Training) Rankers(ctx context.Context, model string, fromMs, toMs uint64, row func(scan func(dst ...any) error) error) error {
	return t.stream(ctx, rankerExamplesSQL, model, fromMs, toMs, row)
}

// Classifiers streams the closed examples of classifier model with fromMs <=
// ts_ms <= toMs as Rankers does, with the columns event_id string, ts_ms
// uint64, version uint32, context_json string, reward float64,
// feedback_count uint64.
func (t *Training) Classifiers(ctx context.Context, model string, fromMs, toMs uint64, row func(scan func(dst ...any) error) error) error {
	return t.stream(ctx, classifierExamplesSQL, model, fromMs, toMs, row)
}

func (t *Training) stream(ctx context.Context, sql, model string, fromMs, toMs uint64, row func(scan func(dst ...any) error) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, streamDeadline)
		defer cancel()
	}
	ctx = ch.Context(ctx, ch.WithSettings(ch.Settings{
		"max_block_size": scanBlockRows, "max_bytes_before_external_sort": externalSortBytes}))
	through, err := closedThroughMs(ctx, t.conn, t.db)
	if err != nil {
		return fmt.Errorf("query examples of %s: %w", model, err)
	}
	rows, err := t.conn.Query(ctx, expand(sql, t.db), examplesArgs(model, fromMs, toMs, through)...)
	if err != nil {
		return fmt.Errorf("query examples of %s: %w", model, err)
	}
	defer rows.Close()
	scan := rows.Scan
	for rows.Next() {
		if err := row(scan); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read examples of %s: %w", model, err)
	}
	return nil
}

// Actions calls fn with the JSON of each of keys found in the actions
// table (a key not in the table is not passed), reading them
// in queries of up to keysPerQuery keys. An error returned by fn stops it
// and is returned as is; otherwise Actions returns the error of a query or
// of reading its rows.
func (t *Training) Actions(ctx context.Context, keys []string, fn func(key, actionJSON string) error) error {
	for len(keys) > 0 {
		n := min(len(keys), keysPerQuery)
		if err := t.actions(ctx, keys[:n], fn); err != nil {
			return err
		}
		keys = keys[n:]
	}
	return nil
}

func (t *Training) actions(ctx context.Context, keys []string, fn func(key, actionJSON string) error) error {
	set := make([]any, len(keys))
	for i, k := range keys {
		set[i] = k
	}
	rows, err := t.conn.Query(ctx, expand(actionsByKeySQL, t.db), ch.GroupSet{Value: set})
	if err != nil {
		return fmt.Errorf("query actions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var key, js string
		if err := rows.Scan(&key, &js); err != nil {
			return fmt.Errorf("read actions: %w", err)
		}
		if err := fn(key, js); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read actions: %w", err)
	}
	return nil
}

// RunRecord is one retrain run as RecordRun stores it in retrain_runs.
type RunRecord struct {
	Model              string
	Started            time.Time
	Took               time.Duration
	Outcome, Reason    string
	Version, Champion  int
	TrainRows, Holdout int
	Comparison         string // JSON; "{}" when there is none
}

// RecordRun stores run in retrain_runs and returns the error of the insert.
func (t *Training) RecordRun(ctx context.Context, run RunRecord) error {
	err := t.conn.Exec(ctx, expand(recordRunSQL, t.db),
		run.Model, run.Started.UTC(), uint64(run.Started.UnixMilli()), uint64(run.Took.Milliseconds()), run.Outcome, run.Reason,
		uint32(run.Version), uint32(run.Champion), uint64(run.TrainRows), uint64(run.Holdout), run.Comparison)
	if err != nil {
		return fmt.Errorf("record the retrain run of %s: %w", run.Model, err)
	}
	return nil
}

// trainingStatements lists the statements of this file for Statements.
func trainingStatements(db string) []Statement {
	const from, to = uint64(0), uint64(4102444800000)
	started := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	return []Statement{
		{Name: "training.closed_count", SQL: expand(closedCountSQL, db), Args: rangeArgs("homepage", "ranker", from, to), Query: true},
		{Name: "training.ingested_through", SQL: expand(ingestedThroughSQL, db), Args: []any{"homepage"}, Query: true},
		{Name: "training.closed_span", SQL: expand(closedSpanSQL, db), Args: rangeArgs("homepage", "ranker", from, to), Query: true},
		{Name: "training.holdout_cut", SQL: expand(holdoutCutSQL, db), Args: rangeArgs("homepage", "ranker", from, to, uint64(1)), Query: true},
		{Name: "training.ranker_examples", SQL: expand(rankerExamplesSQL, db), Args: examplesArgs("homepage", from, to, to), Query: true},
		{Name: "training.classifier_examples", SQL: expand(classifierExamplesSQL, db), Args: examplesArgs("ctr", from, to, to), Query: true},
		{Name: "training.actions_by_key", SQL: expand(actionsByKeySQL, db), Args: []any{ch.GroupSet{Value: []any{"k-x", "k-y"}}}, Query: true},
		{Name: "training.record_run", SQL: expand(recordRunSQL, db), Args: []any{
			"homepage", started, uint64(started.UnixMilli()), uint64(1500), "promoted", "snips estimate 0.31 vs champion v1 0.25",
			uint32(2), uint32(1), uint64(800), uint64(200), `{"candidate":{},"champion":{}}`}},
	}
}
