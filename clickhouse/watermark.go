package clickhouse

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// The streams of ingest_watermarks: the feedback topic's and the decisions
// topic's.
const (
	StreamFeedback  = "feedback"
	StreamDecisions = "decisions"
)

// The ingest watermark: each row is a claim by an ingest process that
// everything appended to a stream's topic before through_ms is in its
// table. Every claim is true on its own, so the newest bound is the
// largest of them (max, without FINAL; the table keeps the largest per
// stream and topic when it merges).
const (
	insertWatermarkSQL = `INSERT INTO {db}.ingest_watermarks (stream, topic, partitions, through_ms, written_at)
		SELECT ?, ?, ?, ?, ?`

	// kafkaWatermark is the time in ms through which all feedback appended
	// to Kafka is ingested, as a scalar subquery (0 while no ingest has
	// claimed any).
	kafkaWatermark = `(SELECT max(through_ms) FROM {db}.ingest_watermarks WHERE stream = 'feedback')`

	// spoolWatermark is the time in ms through which every serve process
	// that is alive has shipped the feedback it received to Kafka, as a
	// scalar subquery: per process (source), its newest claim, and the
	// oldest of those over the processes whose claims have not expired;
	// the largest UInt64 when there are none. Ingest writes a claim only
	// once its Kafka watermark has passed the claim's sent_ms, so that what
	// the claim covers is in ClickHouse.
	spoolWatermark = `(SELECT if(count() = 0, toUInt64(18446744073709551615), toUInt64(min(through))) FROM
		(SELECT source, max(through_ms) AS through, max(valid_until_ms) AS valid_until
			FROM {db}.spool_watermarks GROUP BY source) AS sw
		WHERE valid_until >= toUInt64(toUInt32(now())) * 1000)`

	// feedbackWatermark is the time in ms through which all feedback that
	// serving received is in ClickHouse: the Kafka watermark, held back by
	// the spools.
	feedbackWatermark = `least(` + kafkaWatermark + `, ` + spoolWatermark + `)`

	feedbackWatermarkSQL = `SELECT ` + feedbackWatermark

	// decisionsWatermark is the time in ms through which all decisions
	// appended to Kafka are ingested, as a scalar subquery: the decisions
	// stream's claims, or, while no ingest has written one (every ingest
	// still of a release before the decisions watermark), the feedback
	// stream's, which such an ingest wrote after the decisions of the same
	// batches.
	decisionsWatermark = `(SELECT if(countIf(stream = 'decisions') = 0, maxIf(through_ms, stream = 'feedback'),
		maxIf(through_ms, stream = 'decisions')) FROM {db}.ingest_watermarks)`

	// closedThrough is the time in ms by which a decision's window must end
	// for its example to be closed (final: its decision and every feedback
	// that counts for it are in ClickHouse, and none can come later): now,
	// held back by the decisions and feedback watermarks and the spools.
	closedThrough = `least(toUInt64(toUInt32(now())) * 1000, least(` + decisionsWatermark + `, ` + feedbackWatermark + `))` // 18.16's least takes two

	closedThroughSQL = `SELECT ` + closedThrough

	insertSpoolWatermarksSQL = `INSERT INTO {db}.spool_watermarks (source, through_ms, sent_ms, valid_until_ms, ingested_at)`
)

// SpoolWatermark is a serve process's claim, read from the feedback topic,
// that every feedback event it received before Through was in Kafka at Sent;
// ingest lets it hold decisions open until ValidUntil.
type SpoolWatermark struct {
	Source                    string
	Through, Sent, ValidUntil time.Time
}

// WriteSpoolWatermarks stores ws in spool_watermarks, as ingested at
// ingestedAt. It returns the error of the insert, and is safe for concurrent
// use.
func (x *Inserts) WriteSpoolWatermarks(ctx context.Context, ws []SpoolWatermark, ingestedAt time.Time) error {
	b, err := x.prepare(ctx, "spool_watermarks", x.spool)
	if err != nil {
		return err
	}
	for _, w := range ws {
		if err := b.b.Append(w.Source, uint64(w.Through.UnixMilli()), uint64(w.Sent.UnixMilli()), uint64(w.ValidUntil.UnixMilli()), ingestedAt.UTC()); err != nil {
			b.Abort()
			return fmt.Errorf("append spool watermark: %w", err)
		}
	}
	return b.Send()
}

// Watermark is an ingest process's claim that every record appended to
// Topic (of Stream, e.g. StreamFeedback; Partitions partitions) before
// Through is in ClickHouse.
type Watermark struct {
	Stream, Topic string
	Partitions    int
	Through       time.Time
}

// WriteWatermark stores w in ingest_watermarks. It returns the error of the
// insert, and is safe for concurrent use.
func (x *Inserts) WriteWatermark(ctx context.Context, w Watermark) error {
	err := x.conn.Exec(ctx, x.watermark, w.Stream, w.Topic, uint32(w.Partitions), uint64(w.Through.UnixMilli()), time.Now().UTC())
	if err != nil {
		return fmt.Errorf("write the %s watermark: %w", w.Stream, err)
	}
	return nil
}

// ClosedThrough returns the time by which a decision's reward window must
// end for its example to be closed: now, held back by what ingest has
// written of the decisions and the feedback (the zero Unix time while no
// ingest has said so), or the error of the query.
func (t *Training) ClosedThrough(ctx context.Context) (time.Time, error) {
	ms, err := closedThroughMs(ctx, t.conn, t.db)
	if err != nil {
		return time.Time{}, err
	}
	return time.UnixMilli(int64(ms)).UTC(), nil
}

// closedThroughMs returns closedThrough, read once, so that every part of
// a query of closed examples judges closing by the same time: the examples'
// query reads the decisions twice (once for the rows, once for the feedback
// deadlines), and a watermark that moved between the two reads left the
// decisions that closed meanwhile without their feedback in that answer.
func closedThroughMs(ctx context.Context, conn driver.Conn, db string) (uint64, error) {
	var ms uint64
	if err := conn.QueryRow(ctx, expand(closedThroughSQL, db)).Scan(&ms); err != nil {
		return 0, fmt.Errorf("read the closing watermark: %w", err)
	}
	return ms, nil
}

// watermarkStatements lists the statements of this file for Statements.
func watermarkStatements(db string) []Statement {
	at := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	return []Statement{
		{Name: "ingest.watermark", SQL: expand(insertWatermarkSQL, db), Args: []any{StreamFeedback, "flywheel.feedback", uint32(6), uint64(at.UnixMilli()), at}},
		{Name: "ingest.spool_watermarks", SQL: expand(insertSpoolWatermarksSQL, db), Rows: [][]any{
			{"serve-a", uint64(at.UnixMilli()), uint64(at.UnixMilli()) + 500, uint64(at.UnixMilli()) + 600000, at}}},
		{Name: "training.feedback_watermark", SQL: expand(feedbackWatermarkSQL, db), Query: true},
		{Name: "examples.closed_through", SQL: expand(closedThroughSQL, db), Query: true},
	}
}
