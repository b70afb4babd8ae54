package ingest

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flywheel-dev/flywheel"
)

// A decision has its actions' keys (action_keys); their JSON is in the
// actions table once they recur, and in the decision's actions_json while
// one of them is new (Ingester.batch).
const decisionColumns = `event_id, ts, ts_ms, model, kind, version, variant,
	context_names, context_values, context_numbers, action_ids, action_keys, probabilities,
	chosen, chosen_index, chosen_probability, chosen_names, chosen_values, chosen_numbers,
	explored, score, reward_window_s, reward_default, reward_aggregate,
	context_json, actions_json, ingested_at`

// flushBytes is how much JSON a block of a decisions insert carries.
const flushBytes = 2 << 20

// insert is one table's rows of a batch, appended to a prepared ClickHouse
// batch ahead of time when that worked (the fetch stage does it while the
// previous batch is being sent), and sent by the write stage.
type insert struct {
	table    string
	rows     int
	fill     func(ctx context.Context) (driver.Batch, error) // prepare and append every row
	ready    driver.Batch                                    // filled ahead of time, or nil
	appended time.Duration                                   // how long filling it took
}

// prefill prepares and appends now, so that send only has to send. A
// failure is not an error here: send fills again, with retries.
func (x *insert) prefill(ctx context.Context) {
	start := time.Now()
	if b, err := x.fill(ctx); err == nil {
		x.ready, x.appended = b, time.Since(start)
	}
}

// abort releases a prefilled batch's connection without sending it.
func (x *insert) abort() {
	if x.ready != nil {
		x.ready.Abort()
		x.ready = nil
	}
}

// send inserts the rows: the prefilled batch if there is one, else a new
// one. A failed attempt leaves nothing prefilled, so a retry starts afresh.
func (in *Ingester) send(ctx context.Context, x *insert) error {
	start := time.Now()
	b, took := x.ready, x.appended
	x.ready = nil
	if b == nil {
		var err error
		if b, err = x.fill(ctx); err != nil {
			return err
		}
		took = 0
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert %s batch: %w", x.table, err)
	}
	in.rows.WithLabelValues(x.table).Add(float64(x.rows))
	in.batches.WithLabelValues(x.table).Observe((took + time.Since(start)).Seconds())
	return nil
}

func (in *Ingester) decisionsInsert(rows []*row) *insert {
	return &insert{table: "decisions", rows: len(rows), fill: func(ctx context.Context) (driver.Batch, error) {
		b, err := in.conn.PrepareBatch(ctx, "INSERT INTO "+in.db+".decisions ("+decisionColumns+")")
		if err != nil {
			return nil, fmt.Errorf("prepare decisions batch: %w", err)
		}
		now := in.now().UTC()
		pending := 0
		// The arrays go in as slices of pointers to their elements:
		// clickhouse-go appends an array element by element through an
		// interface, and a string or a float64 put in an interface is
		// allocated on the heap where a pointer is not. The pointer slices
		// are reused row after row (Append copies the values).
		var sp [6][]*string
		var fp [3][]*float64
		for _, r := range rows {
			// Send the rows so far every few MiB as a block of the same
			// INSERT: the column buffers are then reused instead of growing
			// (and being copied) to the whole batch's size. The server
			// squashes the blocks into one part, and acknowledges them all,
			// or none, when the batch is sent.
			if pending >= flushBytes {
				if err := b.Flush(); err != nil {
					b.Abort()
					return nil, fmt.Errorf("send decisions block: %w", err)
				}
				pending = 0
			}
			actJSON := ""
			if r.inline {
				actJSON = r.actJSON
			}
			pending += len(r.ctxJSON) + len(actJSON) + 32*len(r.actionKeys)
			d := &r.d
			explored := uint8(0)
			if d.Explored {
				explored = 1
			}
			err := b.Append(&d.EventID, d.Time, uint64(d.Time.UnixMilli()), &d.Model, &d.Kind, uint32(d.Version), &d.Variant,
				pointers(&sp[0], r.ctxNames), pointers(&sp[1], r.ctxValues), pointers(&fp[0], r.ctxNumbers),
				pointers(&sp[2], r.actionIDs), pointers(&sp[3], r.actionKeys), pointers(&fp[1], d.Probabilities),
				&d.Chosen, uint16(d.ChosenIndex), &r.chosenProbability,
				pointers(&sp[4], r.chNames), pointers(&sp[5], r.chValues), pointers(&fp[2], r.chNumbers),
				explored, &d.Score, uint32(d.Reward.WindowSeconds), &d.Reward.Default, &d.Reward.Aggregate,
				&r.ctxJSON, &actJSON, now)
			if err != nil {
				b.Abort()
				return nil, fmt.Errorf("append decision %s: %w", d.EventID, err)
			}
		}
		return b, nil
	}}
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

// newAction is an action not yet written by this run.
type newAction struct{ key, id, json string }

func (in *Ingester) actionsInsert(acts []newAction) *insert {
	return &insert{table: "actions", rows: len(acts), fill: func(ctx context.Context) (driver.Batch, error) {
		b, err := in.conn.PrepareBatch(ctx, "INSERT INTO "+in.db+".actions (action_key, action_id, action_json, seen_at)")
		if err != nil {
			return nil, fmt.Errorf("prepare actions batch: %w", err)
		}
		now := in.now().UTC()
		for _, a := range acts {
			if err := b.Append(a.key, a.id, a.json, now); err != nil {
				b.Abort()
				return nil, fmt.Errorf("append action %s: %w", a.id, err)
			}
		}
		return b, nil
	}}
}

func (in *Ingester) feedbackInsert(fs []*flywheel.Feedback) *insert {
	return &insert{table: "feedback", rows: len(fs), fill: func(ctx context.Context) (driver.Batch, error) {
		b, err := in.conn.PrepareBatch(ctx, "INSERT INTO "+in.db+".feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at)")
		if err != nil {
			return nil, fmt.Errorf("prepare feedback batch: %w", err)
		}
		// Column by column: feedback rows are small and many, and appending
		// whole columns skips the per-row conversions of Append.
		now := in.now().UTC()
		events, ids, types := make([]string, len(fs)), make([]string, len(fs)), make([]string, len(fs))
		ts, ingested := make([]time.Time, len(fs)), make([]time.Time, len(fs))
		ms, rewards := make([]uint64, len(fs)), make([]float64, len(fs))
		for i, f := range fs {
			events[i], ids[i], ts[i], ms[i], rewards[i], types[i], ingested[i] = f.EventID, f.FeedbackID, f.Time, uint64(f.Time.UnixMilli()), f.Reward, f.Type, now
		}
		for i, col := range []any{events, ids, ts, ms, rewards, types, ingested} {
			if err := b.Column(i).Append(col); err != nil {
				b.Abort()
				return nil, fmt.Errorf("append feedback column %d: %w", i, err)
			}
		}
		return b, nil
	}}
}
