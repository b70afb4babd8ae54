package ingest

import (
	"context"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
)

// Inserter prepares the batch inserts of ingest and writes its
// watermarks: *clickhouse.Inserts. Its
// methods return the error of preparing the insert and must be safe for
// concurrent use.
type Inserter interface {
	PrepareDecisions(ctx context.Context, ingestedAt time.Time) (*clickhouse.DecisionsBatch, error)
	PrepareActions(ctx context.Context, seenAt time.Time) (*clickhouse.ActionsBatch, error)
	PrepareFeedback(ctx context.Context, ingestedAt time.Time) (*clickhouse.FeedbackBatch, error)
	// StoredDecisions returns, of model's stored decisions, those under any
	// of ids, by event id.
	StoredDecisions(ctx context.Context, model string, ids []string) (map[string]clickhouse.StoredDecision, error)
	// WriteWatermark stores an ingest watermark and returns the error of
	// the insert.
	WriteWatermark(ctx context.Context, w clickhouse.Watermark) error
	// WriteSpoolWatermarks stores serving processes' spool watermarks and
	// returns the error of the insert.
	WriteSpoolWatermarks(ctx context.Context, ws []clickhouse.SpoolWatermark, ingestedAt time.Time) error
}

var _ Inserter = (*clickhouse.Inserts)(nil)

// prepared is a filled insert, to send or abort.
type prepared interface {
	Send() error
	Abort()
}

var (
	_ prepared = (*clickhouse.DecisionsBatch)(nil)
	_ prepared = (*clickhouse.ActionsBatch)(nil)
	_ prepared = (*clickhouse.FeedbackBatch)(nil)
)

// insert is one table's rows of a batch, appended to a prepared ClickHouse
// batch ahead of time when that worked (the fetch stage does it while the
// previous batch is being sent), and sent by the write stage.
type insert struct {
	table    string
	rows     int
	fill     func(ctx context.Context) (prepared, error) // prepare and append every row
	ready    prepared                                    // filled ahead of time, or nil
	appended time.Duration                               // how long filling it took
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
		return err
	}
	in.rows.WithLabelValues(x.table).Add(float64(x.rows))
	in.batches.WithLabelValues(x.table).Observe((took + time.Since(start)).Seconds())
	return nil
}

func (in *Ingester) decisionsInsert(rows []*row) *insert {
	return &insert{table: "decisions", rows: len(rows), fill: func(ctx context.Context) (prepared, error) {
		b, err := in.inserts.PrepareDecisions(ctx, in.now())
		if err != nil {
			return nil, err
		}
		var dr clickhouse.DecisionRow // reused: Append keeps none of it
		for _, r := range rows {
			actJSON := ""
			if r.inline {
				actJSON = r.actJSON
			}
			dr = clickhouse.DecisionRow{Decision: &r.d,
				ContextNames: r.ctxNames, ContextValues: r.ctxValues, ContextNumbers: r.ctxNumbers,
				ChosenNames: r.chNames, ChosenValues: r.chValues, ChosenNumbers: r.chNumbers,
				ActionIDs: r.actionIDs, ActionKeys: r.actionKeys, ChosenProbability: r.chosenProbability,
				ContextJSON: r.ctxJSON, ActionsJSON: actJSON}
			if err := b.Append(&dr); err != nil {
				b.Abort()
				return nil, err
			}
		}
		return b, nil
	}}
}

// newAction is an action not yet written by this run.
type newAction struct{ key, id, json string }

func (in *Ingester) actionsInsert(acts []newAction) *insert {
	return &insert{table: "actions", rows: len(acts), fill: func(ctx context.Context) (prepared, error) {
		b, err := in.inserts.PrepareActions(ctx, in.now())
		if err != nil {
			return nil, err
		}
		for _, a := range acts {
			if err := b.Append(a.key, a.id, a.json); err != nil {
				b.Abort()
				return nil, err
			}
		}
		return b, nil
	}}
}

func (in *Ingester) feedbackInsert(fs []*flywheel.Feedback) *insert {
	return &insert{table: "feedback", rows: len(fs), fill: func(ctx context.Context) (prepared, error) {
		b, err := in.inserts.PrepareFeedback(ctx, in.now())
		if err != nil {
			return nil, err
		}
		if err := b.Append(fs); err != nil {
			b.Abort()
			return nil, err
		}
		return b, nil
	}}
}
