package clickhouse

import (
	"context"
	"math"
	"testing"
	"time"
)

// A stream of examples read more slowly than the connection's read timeout
// (clickhouse-go's ReadTimeout, 5 min by default, here 1 s) is read to its
// end: clickhouse-go sets the read deadline once per query, from its start,
// so without a deadline of the stream's own a full retrain over millions of
// examples failed midway ("failed to decode block ... read full").
func TestSlowStreamOutlivesTheReadTimeout(t *testing.T) {
	cfg := testConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := Migrate(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	conn := mustOpen(t, ctx, cfg)
	db := cfg.Database()
	at := time.Now().Add(-time.Hour).UTC()
	const rows = 16 * scanBlockRows
	if err := conn.Exec(ctx, "INSERT INTO "+db+`.decisions (event_id, ts, ts_ms, model, kind, version, variant, chosen, reward_window_s, reward_default, reward_aggregate, context_json, actions_json, ingested_at)
		SELECT concat('e', toString(number)), toDateTime(intDiv(? + number, 1000)), ? + number, 'm', 'ranker', 1, 'champion', 'a', 1, 0, 'sum', '{}', '[]', now()
		FROM system.numbers LIMIT ?`, uint64(at.UnixMilli()), uint64(at.UnixMilli()), rows); err != nil {
		t.Fatal(err)
	}
	mustIngestThrough(t, ctx, conn, db, time.Now())
	slow, err := Open(ctx, Config{DSN: cfg.DSN + "?read_timeout=1s"})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	// A context without a deadline, as a scheduled run's is: a deadline
	// would replace the read timeout.
	streamCtx, stop := context.WithCancel(context.Background())
	defer stop()
	n, start := 0, time.Now()
	err = NewTraining(slow, db).Rankers(streamCtx, "m", 0, math.MaxUint64, func(scan func(dst ...any) error) error {
		if n++; n%scanBlockRows == 1 {
			time.Sleep(150 * time.Millisecond) // each block read slowly: the stream lasts well past 1 s
		}
		return nil
	})
	t.Logf("read %d examples in %.1fs with a read timeout of 1s", n, time.Since(start).Seconds())
	if err != nil || n != rows {
		t.Fatalf("read %d of %d examples: %v", n, rows, err)
	}
}
