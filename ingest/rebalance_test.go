package ingest

import (
	"context"
	"fmt"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/kafka"
)

// Ingesters joining and leaving the group while feedback streams in: every
// record is in ClickHouse once the stream ends, whichever ingester held its
// partition when, however often the group rebalanced. (The cluster fault
// test once found a range of offsets of two partitions missing after the
// group's first rebalance; the cause was a ClickHouse replica losing
// inserts it acknowledged while shutting down, but the rebalances stay
// covered.)
func TestIngestersJoiningAndLeavingLoseNothing(t *testing.T) {
	kcfg, ccfg := realServices(t)
	kcfg.Partitions = 4
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn := mustReady(t, ctx, kcfg, ccfg)
	db := ccfg.Database()
	a := startIngest(t, ctx, kcfg, conn, db)
	w := kafka.NewWriter(kcfg, kcfg.Topics().Feedback)
	defer w.Close()
	const rounds, per = 60, 50
	at := time.Now().UTC()
	produced := make(chan error, 1)
	go func() {
		for r := 0; r < rounds; r++ {
			var msgs []kafkago.Message
			for i := 0; i < per; i++ {
				id := fmt.Sprintf("ev-%02d-%02d", r, i)
				msgs = append(msgs, msg(t, id, flywheel.Feedback{Schema: 1, FeedbackID: "fb-" + id, EventID: id, Time: at, Reward: 1}))
			}
			if err := w.WriteMessages(ctx, msgs...); err != nil {
				produced <- err
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		produced <- nil
	}()
	time.Sleep(300 * time.Millisecond)
	b := startIngest(t, ctx, kcfg, conn, db) // joins: the group rebalances
	defer b.end(t)
	time.Sleep(1500 * time.Millisecond)
	c := startIngest(t, ctx, kcfg, conn, db) // and again
	defer c.end(t)
	time.Sleep(1500 * time.Millisecond)
	a.end(t) // leaves: its partitions move
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	var n uint64
	for {
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".feedback FINAL").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n >= rounds*per {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("ClickHouse holds %d of %d feedback records", n, rounds*per)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if n != rounds*per {
		t.Fatalf("ClickHouse holds %d feedback records, want %d", n, rounds*per)
	}
}
