package clickhouse

import (
	"context"
	"fmt"
	"time"
)

// StreamFeedback is the stream of the feedback topic in ingest_watermarks.
const StreamFeedback = "feedback"

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

// FeedbackWatermark returns the time through which ingest has written all
// feedback (the zero Unix time while no ingest has said so), or the error of
// the query. A decision is closed only when its reward window ends by then.
func (t *Training) FeedbackWatermark(ctx context.Context) (time.Time, error) {
	var ms uint64
	if err := t.conn.QueryRow(ctx, expand(feedbackWatermarkSQL, t.db)).Scan(&ms); err != nil {
		return time.Time{}, fmt.Errorf("feedback watermark: %w", err)
	}
	return time.UnixMilli(int64(ms)).UTC(), nil
}

// watermarkStatements lists the statements of this file for Statements.
func watermarkStatements(db string) []Statement {
	at := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	return []Statement{
		{Name: "ingest.watermark", SQL: expand(insertWatermarkSQL, db), Args: []any{StreamFeedback, "flywheel.feedback", uint32(6), uint64(at.UnixMilli()), at}},
		{Name: "ingest.spool_watermarks", SQL: expand(insertSpoolWatermarksSQL, db), Rows: [][]any{
			{"serve-a", uint64(at.UnixMilli()), uint64(at.UnixMilli()) + 500, uint64(at.UnixMilli()) + 600000, at}}},
		{Name: "training.feedback_watermark", SQL: expand(feedbackWatermarkSQL, db), Query: true},
	}
}
