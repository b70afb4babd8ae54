// Command queries times the product's periodic queries of closed examples —
// the canary judge's check (the online reward by version and variant since
// a canary began) and a dashboard refresh (clickhouse.Insights over a
// window) — on databases of N logged decisions spread over the last days,
// for each N given, at the same traffic an hour, so that their cost can be
// compared with what their time range holds: the judge reads the last 30
// minutes and the dashboard the last hour, the same rows at every size. The decisions are inserted an hour
// of traffic at a time, as ingest writes them, and timed once ClickHouse's
// merges have settled, then again after OPTIMIZE ... FINAL (one part per
// partition: the most the merges can make). It prints one JSON line per
// size and state.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flywheel-dev/flywheel/clickhouse"
)

func main() {
	addr := flag.String("clickhouse", "127.0.0.1:9000", "ClickHouse native address")
	sizes := flag.String("sizes", "100000,10000000", "decisions per database, comma separated")
	perHour := flag.Int("per-hour", 59524, "decisions an hour (the default: 10 million in 7 days), so that the judge's and the dashboard's ranges hold the same traffic whatever the size, and the sizes differ in how much history lies behind them")
	repeat := flag.Int("repeat", 5, "times each query is run (the median is reported)")
	keep := flag.Bool("keep", false, "keep each database (bench_queries_N) instead of dropping it")
	flag.Parse()
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1000 {
			log.Fatalf("bad size %q", s)
		}
		if err := runOne(*addr, n, *perHour, *repeat, *keep); err != nil {
			log.Fatalf("%d decisions: %v", n, err)
		}
	}
}

func runOne(addr string, n, perHour, repeat int, keep bool) error {
	ctx := context.Background()
	db := fmt.Sprintf("bench_queries_%d", n)
	admin, err := clickhouse.Open(ctx, clickhouse.Config{DSN: fmt.Sprintf("clickhouse://%s/default", addr)})
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+db); err != nil {
		return err
	}
	if !keep {
		defer admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
	}
	cfg := clickhouse.Config{DSN: fmt.Sprintf("clickhouse://%s/%s", addr, db)}
	if err := clickhouse.Migrate(ctx, cfg); err != nil {
		return err
	}
	conn, err := clickhouse.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()

	now := time.Now()
	gen := time.Now()
	if err := generate(ctx, conn, db, n, perHour, now); err != nil {
		return err
	}
	genTook := time.Since(gen)
	for _, state := range []string{"merged", "optimized"} {
		if state == "optimized" {
			for _, t := range []string{"decisions", "feedback", "decisions_by_time", "feedback_by_time"} {
				if err := conn.Exec(ctx, "OPTIMIZE TABLE "+db+"."+t+" FINAL"); err != nil {
					return fmt.Errorf("optimize %s: %w", t, err)
				}
			}
		} else if err := settle(ctx, conn, db); err != nil {
			return err
		}
		parts, err := partsOf(ctx, conn, db)
		if err != nil {
			return err
		}
		judge, err := timed(repeat, func() error {
			to := uint64(time.Now().UnixMilli())
			_, err := clickhouse.NewRewards(conn, db).Online(ctx, "bench", to-uint64(30*time.Minute/time.Millisecond), to)
			return err
		})
		if err != nil {
			return fmt.Errorf("judge: %w", err)
		}
		var closed uint64
		dash, err := timed(repeat, func() error {
			o, err := clickhouse.Insights(ctx, conn, db, "bench", time.Hour, time.Now())
			if err == nil {
				closed = 0
				for _, s := range o.Series {
					closed += s.Decisions
				}
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("dashboard: %w", err)
		}
		b, _ := json.Marshal(map[string]any{
			"decisions": n, "per_hour": perHour, "hours": float64(n) / float64(perHour), "state": state, "decision_parts": parts,
			"generate_seconds":           round(genTook.Seconds()),
			"judge_check_seconds":        round(judge),
			"dashboard_refresh_seconds":  round(dash),
			"dashboard_closed_decisions": closed,
			"runs":                       repeat,
		})
		fmt.Println(string(b))
	}
	return nil
}

// generate logs n decisions of model bench, perHour an hour up to now, an
// hour of traffic per insert, as ingest writes them: version 1 champion
// and, for a tenth of the users, version 2 canary; 20 catalogue actions
// named by key; a click on about a fifth; reward window 60 s. Then it says,
// as ingest would, that everything is in.
func generate(ctx context.Context, conn driver.Conn, db string, n, perHour int, now time.Time) error {
	items, keys, ids := make([]string, 20), make([]string, 20), make([]string, 20)
	for i := range items {
		items[i] = fmt.Sprintf(`{"id":"i%d","features":{"item":{"category":"c%d","price":%d}}}`, i, i%5, 10+i)
		keys[i], ids[i] = fmt.Sprintf("k%d", i), fmt.Sprintf("i%d", i)
	}
	if err := conn.Exec(ctx, `INSERT INTO `+db+`.actions (action_key, action_id, action_json, seen_at)
		SELECT concat('k', toString(number)), concat('i', toString(number)), items[number + 1], now()
		FROM (SELECT number, ? AS items FROM system.numbers LIMIT 20)`, items); err != nil {
		return fmt.Errorf("generate actions: %w", err)
	}
	span := time.Duration(float64(time.Hour) * float64(n) / float64(perHour))
	start := now.Add(-span).Add(-2 * time.Minute)
	spanMs := uint64(span / time.Millisecond)
	hours := max(1, int(span/time.Hour+1))
	for h := 0; h < hours; h++ {
		first, last := uint64(n*h/hours), uint64(n*(h+1)/hours)
		if last == first {
			continue
		}
		// decision i is at start + i * span / n
		err := conn.Exec(ctx, `INSERT INTO `+db+`.decisions (event_id, ts, ts_ms, model, kind, version, variant, action_ids, action_keys,
			probabilities, chosen, chosen_index, chosen_probability, explored, reward_window_s, reward_default, reward_aggregate,
			context_json, actions_json, context_names, context_values, ingested_at)
		SELECT concat('e', toString(number)), toDateTime(intDiv(ts_ms, 1000)), ? + intDiv(number * ?, ?) AS ts_ms, 'bench', 'ranker',
			if(intHash32(number) % 10 = 0, 2, 1), if(intHash32(number) % 10 = 0, 'canary', 'champion'),
			?, ?, arrayMap(i -> 0.05, range(20)), concat('i', toString(number % 20)), number % 20, 0.05, 1, 60, 0, 'sum',
			concat('{"user":{"segment":"s', toString(intHash32(number) % 5), '"}}'), '', ['user^segment'],
			[concat('s', toString(intHash32(number) % 5))], now()
		FROM (SELECT number + ? AS number FROM system.numbers LIMIT ?)`,
			uint64(start.UnixMilli()), spanMs, uint64(n), ids, keys, first, last-first)
		if err != nil {
			return fmt.Errorf("generate decisions: %w", err)
		}
		err = conn.Exec(ctx, `INSERT INTO `+db+`.feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at)
		SELECT concat('e', toString(number)), 'f', toDateTime(intDiv(ts_ms, 1000)), ? + intDiv(number * ?, ?) + 2000 AS ts_ms, 1, 'click', now()
		FROM (SELECT number + ? AS number FROM system.numbers LIMIT ?)
		WHERE intHash64(number) % 100 < 20`,
			uint64(start.UnixMilli()), spanMs, uint64(n), first, last-first)
		if err != nil {
			return fmt.Errorf("generate feedback: %w", err)
		}
	}
	for _, stream := range []string{clickhouse.StreamDecisions, clickhouse.StreamFeedback} {
		if err := conn.Exec(ctx, `INSERT INTO `+db+`.ingest_watermarks (stream, topic, partitions, through_ms, written_at) SELECT ?, ?, 1, ?, now()`,
			stream, "flywheel."+stream, uint64(time.Now().Add(time.Hour).UnixMilli())); err != nil {
			return err
		}
	}
	return nil
}

// settle waits until the decisions' active parts stop changing for 10 s
// (the background merges are done), at most 3 minutes.
func settle(ctx context.Context, conn driver.Conn, db string) error {
	last, since := -1, time.Now()
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		p, err := partsOf(ctx, conn, db)
		if err != nil {
			return err
		}
		if p != last {
			last, since = p, time.Now()
		} else if time.Since(since) >= 10*time.Second {
			return nil
		}
	}
	return nil
}

func partsOf(ctx context.Context, conn driver.Conn, db string) (int, error) {
	var n uint64
	err := conn.QueryRow(ctx, "SELECT count() FROM system.parts WHERE database = ? AND table = 'decisions' AND active", db).Scan(&n)
	return int(n), err
}

// timed runs fn repeat times and returns the median seconds.
func timed(repeat int, fn func() error) (float64, error) {
	var took []float64
	for range repeat {
		t := time.Now()
		if err := fn(); err != nil {
			return 0, err
		}
		took = append(took, time.Since(t).Seconds())
	}
	slices.Sort(took)
	return took[len(took)/2], nil
}

func round(x float64) float64 { return float64(int64(x*10000+0.5)) / 10000 }
