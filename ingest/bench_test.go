package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/internal/testenv"
)

// benchDecision is a decision the shape of the ingest benchmark's: 20
// actions, each with its item features, and a small user context.
func benchDecision(tb testing.TB) []byte { return benchDecisionN(tb, 4) }

// benchDecisionN is a decision whose 20 actions have n item features each
// (the ingest benchmark's default is 30).
func benchDecisionN(tb testing.TB, n int) []byte {
	actions := make([]flywheel.Action, 20)
	probs := make([]float64, 20)
	ranking := make([]string, 20)
	for a := range actions {
		f := map[string]any{"id": fmt.Sprintf("item-%02d", a), "category": fmt.Sprintf("c%d", a%5), "price": float64(a) + 0.99, "new": a%3 == 0}
		for k := 4; k < n; k++ {
			switch k % 3 {
			case 0:
				f[fmt.Sprintf("attr_%d", k)] = fmt.Sprintf("v%d", (a*k)%7)
			case 1:
				f[fmt.Sprintf("score_%d", k)] = float64(a*k%100) / 10
			default:
				f[fmt.Sprintf("flag_%d", k)] = (a+k)%2 == 0
			}
		}
		actions[a] = flywheel.Action{ID: fmt.Sprintf("item-%02d", a), Features: flywheel.Features{"item": f}}
		probs[a] = 0.05
		ranking[a] = actions[a].ID
	}
	d := flywheel.Decision{Schema: 1, EventID: "ev-0000001", Time: time.Unix(1700000000, 0).UTC(), Model: "homepage", Kind: flywheel.KindRanker,
		Version: 1, Variant: "champion", Context: flywheel.Features{"user": {"segment": "b", "age": 31.0, "country": "fr", "device": "ios", "tags": []any{"x", "y"}}},
		Actions: actions, Probabilities: probs, Ranking: ranking, ChosenIndex: 7, Chosen: actions[7].ID,
		Reward: flywheel.RewardRule{WindowSeconds: 600, Aggregate: "sum"}}
	b, err := json.Marshal(d)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func BenchmarkDecodeDecision(b *testing.B) {
	msg := benchDecision(b)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeDecision(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeDecision30(b *testing.B) {
	msg := benchDecisionN(b, 30)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeDecision(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// The general decoder on the same record, for comparison.
func BenchmarkDecodeGeneral(b *testing.B) {
	msg := benchDecision(b)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeGeneral(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeGeneral30(b *testing.B) {
	msg := benchDecisionN(b, 30)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeGeneral(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// Building a decisions insert of 1000 rows (prepared, appended, sent in
// blocks, then aborted) on the real ClickHouse named by
// FLYWHEEL_TEST_CLICKHOUSE; ns/op is per row.
func BenchmarkAppendDecisions(b *testing.B)   { benchAppend(b, 4) }
func BenchmarkAppendDecisions30(b *testing.B) { benchAppend(b, 30) }

func benchAppend(b *testing.B, features int) {
	ctx := context.Background()
	ccfg := clickhouse.Config{DSN: fmt.Sprintf("clickhouse://%s/ingbench_%d", testenv.ClickHouse(b), time.Now().UnixNano())}
	if err := clickhouse.Migrate(ctx, ccfg); err != nil {
		b.Fatal(err)
	}
	conn, err := clickhouse.Open(ctx, ccfg)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ccfg.Database())
		conn.Close()
	}()
	in := &Ingester{inserts: clickhouse.NewInserts(conn, ccfg.Database()), now: time.Now}
	msg := benchDecisionN(b, features)
	rows := make([]*row, 1000)
	for i := range rows {
		if rows[i], err = decodeDecision(msg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(rows) {
		batch, err := in.decisionsInsert(rows).fill(ctx)
		if err != nil {
			b.Fatal(err)
		}
		batch.Abort()
	}
}
