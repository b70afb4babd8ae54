package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flywheel-dev/flywheel"
)

// The inserts of ingest. A decision has its actions' keys (action_keys);
// their JSON is in the actions table once they recur, and in the decision's
// actions_json while one of them is new (ingest decides which).
const (
	insertDecisionsSQL = `INSERT INTO {db}.decisions (event_id, ts, ts_ms, model, kind, version, variant,
	context_names, context_values, context_numbers, action_ids, action_keys, probabilities,
	chosen, chosen_index, chosen_probability, chosen_names, chosen_values, chosen_numbers,
	explored, score, reward_window_s, reward_default, reward_aggregate,
	context_json, actions_json, ingested_at, deferred, reward_late_window_s)`

	insertActionsSQL = `INSERT INTO {db}.actions (action_key, action_id, action_json, seen_at)`

	insertFeedbackSQL = `INSERT INTO {db}.feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at, model)`
)

// decisionColumns is how many columns insertDecisionsSQL names.
const decisionColumns = 29

// flushBytes is about how much JSON a block of a decisions insert carries.
const flushBytes = 2 << 20

// Inserts prepares ingest's batch inserts into one database: decisions,
// actions and feedback. It is safe for concurrent use; each batch it
// returns belongs to one goroutine at a time.
type Inserts struct {
	conn                         driver.Conn
	decisions, actions, feedback string // the statements, database in place
	watermark, spool             string
	stored                       string
}

// NewInserts returns the inserts into database db over conn.
func NewInserts(conn driver.Conn, db string) *Inserts {
	return &Inserts{conn: conn, decisions: expand(insertDecisionsSQL, db), actions: expand(insertActionsSQL, db),
		feedback: expand(insertFeedbackSQL, db), watermark: expand(insertWatermarkSQL, db),
		spool: expand(insertSpoolWatermarksSQL, db), stored: expand(sqlStoredDecisions, db)}
}

// batch is a prepared insert into one table, sent or aborted once.
type batch struct {
	b     driver.Batch
	table string
}

func (x *Inserts) prepare(ctx context.Context, table, sql string) (batch, error) {
	if x == nil || x.conn == nil {
		return batch{}, errors.New("clickhouse: inserts without a connection")
	}
	b, err := x.conn.PrepareBatch(ctx, sql)
	if err != nil {
		return batch{}, fmt.Errorf("prepare %s batch: %w", table, err)
	}
	return batch{b: b, table: table}, nil
}

// Send inserts the rows appended so far, all of them or none, and releases
// the batch's connection. It returns the server's or the connection's error.
func (b *batch) Send() error {
	if err := b.b.Send(); err != nil {
		return fmt.Errorf("insert %s batch: %w", b.table, err)
	}
	return nil
}

// Abort releases the batch's connection without inserting anything. Call it
// for a batch that is not to be sent, or after an Append failed.
func (b *batch) Abort() { b.b.Abort() }

// DecisionRow is one row of the decisions table: a logged decision and
// what ingest derived from it. Append reads it and keeps none of it.
type DecisionRow struct {
	// Decision gives the ids, time, model, version, variant, probabilities,
	// chosen action, score and reward rule (not its context or actions).
	Decision *flywheel.DecisionRecord
	// The context's and the chosen action's features, flattened into
	// parallel arrays of names, values and numbers.
	ContextNames, ContextValues []string
	ContextNumbers              []float64
	ChosenNames, ChosenValues   []string
	ChosenNumbers               []float64
	// ActionIDs and ActionKeys name the actions in order; the key is the
	// action's row in the actions table.
	ActionIDs, ActionKeys []string
	ChosenProbability     float64
	ContextJSON           string
	// ActionsJSON is the actions as logged when the decision carries them,
	// or "" when they are all in the actions table.
	ActionsJSON string
}

// DecisionsBatch is a prepared insert into the decisions table.
type DecisionsBatch struct {
	batch
	ingestedAt time.Time
	pending    int // JSON bytes appended since the last block was sent
	// Scratch reused row after row (Append copies the values). The arrays
	// go in as slices of pointers to their elements and the scalars as
	// pointers: clickhouse-go appends through interfaces, and a string, a
	// time or a number put in an interface is allocated on the heap where a
	// pointer is not.
	sp          [6][]*string
	fp          [3][]*float64
	tsMs        uint64
	version     uint32
	chosenIndex uint16
	explored    uint8
	deferred    uint8
	window      uint32
	lateWindow  uint32
	args        [decisionColumns]any
}

// PrepareDecisions returns a new insert into the decisions table, whose rows
// say they were ingested at ingestedAt, or the error of preparing it.
func (x *Inserts) PrepareDecisions(ctx context.Context, ingestedAt time.Time) (*DecisionsBatch, error) {
	b, err := x.prepare(ctx, "decisions", x.decisions)
	if err != nil {
		return nil, err
	}
	return &DecisionsBatch{batch: b, ingestedAt: ingestedAt.UTC()}, nil
}

// Append adds r to the batch. Every few MiB it sends the rows so far as a
// block of the same INSERT: the column buffers are then reused instead of
// growing (and being copied) to the whole batch's size; the server squashes
// the blocks into one part, and acknowledges them all, or none, at Send. It
// returns the error of the append or of sending a block; the batch must
// then be aborted.
func (b *DecisionsBatch) Append(r *DecisionRow) error {
	if b.pending >= flushBytes {
		if err := b.b.Flush(); err != nil {
			return fmt.Errorf("send decisions block: %w", err)
		}
		b.pending = 0
	}
	b.pending += len(r.ContextJSON) + len(r.ActionsJSON) + 32*len(r.ActionKeys)
	d := r.Decision
	b.tsMs, b.version, b.chosenIndex, b.window = uint64(d.Time.UnixMilli()), uint32(d.Version), uint16(d.ChosenIndex), uint32(d.Reward.WindowSeconds)
	b.lateWindow = uint32(d.Reward.LateWindowSeconds)
	b.explored, b.deferred = 0, 0
	if d.Explored {
		b.explored = 1
	}
	if d.Deferred {
		b.deferred = 1
	}
	b.args = [decisionColumns]any{&d.EventID, &d.Time, &b.tsMs, &d.Model, &d.Kind, &b.version, &d.Variant,
		pointers(&b.sp[0], r.ContextNames), pointers(&b.sp[1], r.ContextValues), pointers(&b.fp[0], r.ContextNumbers),
		pointers(&b.sp[2], r.ActionIDs), pointers(&b.sp[3], r.ActionKeys), pointers(&b.fp[1], d.Probabilities),
		&d.Chosen, &b.chosenIndex, &r.ChosenProbability,
		pointers(&b.sp[4], r.ChosenNames), pointers(&b.sp[5], r.ChosenValues), pointers(&b.fp[2], r.ChosenNumbers),
		&b.explored, &d.Score, &b.window, &d.Reward.Default, &d.Reward.Aggregate,
		&r.ContextJSON, &r.ActionsJSON, &b.ingestedAt, &b.deferred, &b.lateWindow}
	if err := b.b.Append(b.args[:]...); err != nil {
		return fmt.Errorf("append decision %s: %w", d.EventID, err)
	}
	return nil
}

// pointers fills *buf with pointers to xs's elements and returns it.
func pointers[T any](buf *[]*T, xs []T) []*T {
	p := (*buf)[:0]
	for i := range xs {
		p = append(p, &xs[i])
	}
	*buf = p
	return p
}

// ActionsBatch is a prepared insert into the actions table.
type ActionsBatch struct {
	batch
	seenAt time.Time
}

// PrepareActions returns a new insert into the actions table, whose rows
// say they were seen at seenAt, or the error of preparing it.
func (x *Inserts) PrepareActions(ctx context.Context, seenAt time.Time) (*ActionsBatch, error) {
	b, err := x.prepare(ctx, "actions", x.actions)
	if err != nil {
		return nil, err
	}
	return &ActionsBatch{batch: b, seenAt: seenAt.UTC()}, nil
}

// Append adds the action id, logged as json and stored under key. It
// returns the error of the append; the batch must then be aborted.
func (b *ActionsBatch) Append(key, id, json string) error {
	if err := b.b.Append(key, id, json, b.seenAt); err != nil {
		return fmt.Errorf("append action %s: %w", id, err)
	}
	return nil
}

// FeedbackBatch is a prepared insert into the feedback table.
type FeedbackBatch struct {
	batch
	ingestedAt time.Time
}

// PrepareFeedback returns a new insert into the feedback table, whose rows
// say they were ingested at ingestedAt, or the error of preparing it.
func (x *Inserts) PrepareFeedback(ctx context.Context, ingestedAt time.Time) (*FeedbackBatch, error) {
	b, err := x.prepare(ctx, "feedback", x.feedback)
	if err != nil {
		return nil, err
	}
	return &FeedbackBatch{batch: b, ingestedAt: ingestedAt.UTC()}, nil
}

// Append adds the feedback records fs, column by column: feedback rows are
// small and many, and appending whole columns skips the per-row conversions
// of a row append. It returns the error of the append; the batch must then
// be aborted.
func (b *FeedbackBatch) Append(fs []*flywheel.Feedback) error {
	events, ids, types, models := make([]string, len(fs)), make([]string, len(fs)), make([]string, len(fs)), make([]string, len(fs))
	ts, ingested := make([]time.Time, len(fs)), make([]time.Time, len(fs))
	ms, rewards := make([]uint64, len(fs)), make([]float64, len(fs))
	for i, f := range fs {
		// ts is when serving received it (the table's partitions, the
		// bounded examples query); ts_ms the time the reward window is
		// judged on: when the user acted, if the client said.
		events[i], ids[i], ts[i], ms[i], rewards[i], types[i], ingested[i] = f.EventID, f.FeedbackID, f.Time, uint64(f.JudgedTime().UnixMilli()), f.Reward, f.Type, b.ingestedAt
		models[i] = f.Model
	}
	for i, col := range []any{events, ids, ts, ms, rewards, types, ingested, models} {
		if err := b.b.Column(i).Append(col); err != nil {
			return fmt.Errorf("append feedback column %d: %w", i, err)
		}
	}
	return nil
}

// ingestStatements lists the statements of this file for Statements: two
// decisions (a ranker's, whose actions are in the actions table, and a
// classifier's), the two actions, and feedback on both decisions. The rows
// hold the values Append sends, in column order.
func ingestStatements(db string) []Statement {
	t := time.Date(2025, 1, 1, 10, 0, 0, 250e6, time.UTC)
	ingested := t.Add(time.Minute).Truncate(time.Second)
	const (
		a1, a2     = `{"id":"a1","features":{"item":{"category":"shoes","price":49.9}}}`, `{"id":"a2","features":{"item":{"category":"hats","price":19}}}`
		key1, key2 = "dc36cc012a495ac9d124b47da763c613", "202ae2c0dd43b39c2ac5290e0ea2cacf" // their keys (ingest's actionKey)
		hpContext  = `{"user":{"segment":"b","age":31}}`
		ctrContext = `{"user":{"segment":"a","age":42},"item":{"category":"shoes"}}`
	)
	ctrTime := t.Add(1250 * time.Millisecond)
	ms1, ms2 := uint64(t.UnixMilli()), uint64(ctrTime.UnixMilli())
	return []Statement{
		{Name: "ingest.actions", SQL: expand(insertActionsSQL, db), Rows: [][]any{
			{key1, "a1", a1, ingested},
			{key2, "a2", a2, ingested},
		}},
		{Name: "ingest.decisions", SQL: expand(insertDecisionsSQL, db), Rows: [][]any{
			{"hp-1", t, ms1, "homepage", flywheel.KindRanker, uint32(1), flywheel.VariantChampion,
				[]string{"user^age", "user^segment"}, []string{"", "b"}, []float64{31, 1},
				[]string{"a1", "a2"}, []string{key1, key2}, []float64{0.75, 0.25},
				"a1", uint16(0), 0.75, []string{"item^category", "item^price"}, []string{"shoes", ""}, []float64{1, 49.9},
				uint8(0), 0.0, uint32(600), 0.0, flywheel.AggregateSum,
				hpContext, "", ingested, uint8(0), uint32(3600)},
			{"ctr-1", ctrTime, ms2, "ctr", flywheel.KindClassifier, uint32(1), flywheel.VariantChampion,
				[]string{"item^category", "user^age", "user^segment"}, []string{"shoes", "", "a"}, []float64{1, 42, 1},
				[]string{}, []string{}, []float64{},
				"", uint16(0), 0.0, []string{}, []string{}, []float64{},
				uint8(0), 0.12, uint32(600), 0.0, flywheel.AggregateMax,
				ctrContext, "", ingested, uint8(0), uint32(0)},
		}},
		{Name: "ingest.stored_decisions", SQL: expand(sqlStoredDecisions, db), Args: []any{"homepage", ch.GroupSet{Value: []any{"hp-1", "hp-2"}}}, Query: true},
		{Name: "ingest.feedback", SQL: expand(insertFeedbackSQL, db), Rows: [][]any{
			{"hp-1", "fb-hp-1", t.Add(2 * time.Second), ms1 + 2000, 1.0, "click", ingested, "homepage"},
			{"ctr-1", "fb-ctr-1", ctrTime.Add(3 * time.Second), ms2 + 3000, 1.0, "click", ingested, ""},
		}},
	}
}

// StoredDecision is what identifies a stored decision beyond its model and
// event id: two records that agree on it are deliveries of one decision.
type StoredDecision struct {
	TsMs    uint64
	Version uint32
	Variant string
	Chosen  string
}

// sqlStoredDecisions reads the stored decisions of a model among event
// ids: a primary-key read (ORDER BY model, event_id). The first stored of
// each (the one ingest keeps) is the one with the smallest ts_ms.
const sqlStoredDecisions = `SELECT event_id, min(ts_ms), argMin(version, ts_ms), argMin(variant, ts_ms), argMin(chosen, ts_ms)
		FROM {db}.decisions WHERE model = ? AND event_id IN ? GROUP BY event_id`

// storedLookupIDs bounds the ids of one lookup: ClickHouse's max_query_size
// is 256 KiB by default, and an id may be 128 bytes.
const storedLookupIDs = 1000

// StoredDecisions returns, of model's decisions, those stored under any of
// ids, by event id.
func (x *Inserts) StoredDecisions(ctx context.Context, model string, ids []string) (map[string]StoredDecision, error) {
	out := map[string]StoredDecision{}
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), storedLookupIDs)]
		ids = ids[len(chunk):]
		set := ch.GroupSet{Value: make([]any, len(chunk))}
		for k, id := range chunk {
			set.Value[k] = id
		}
		rows, err := x.conn.Query(ctx, x.stored, model, set)
		if err != nil {
			return nil, fmt.Errorf("read stored decisions: %w", err)
		}
		for rows.Next() {
			var (
				id string
				d  StoredDecision
			)
			if err := rows.Scan(&id, &d.TsMs, &d.Version, &d.Variant, &d.Chosen); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read stored decisions: %w", err)
			}
			out[id] = d
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read stored decisions: %w", err)
		}
	}
	return out, nil
}
