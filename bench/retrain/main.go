// Command retrain times a whole retrain run — streaming the training set from
// ClickHouse, training, off-policy evaluation of candidate against champion,
// registration — on N logged decisions of 20 actions each, generated inside
// ClickHouse, for each N given. It prints one JSON line per size with the
// decisions per second and the peak memory of this process.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/bench/internal/proc"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/deploy"
	"github.com/flywheel-dev/flywheel/retrain"
)

func main() {
	addr := flag.String("clickhouse", "127.0.0.1:9000", "ClickHouse native address")
	sizes := flag.String("sizes", "1000000,5000000", "decisions per run, comma separated")
	passes := flag.Int("passes", 1, "training passes")
	unique := flag.Bool("unique-actions", false, "give every decision its own action set (item prices vary), so no two decisions' actions JSON is the same")
	flag.BoolVar(&inlineJSON, "inline-actions", false, "store each decision's actions as JSON in its row (as ingest did before schema 6) instead of by key in the actions table")
	newDecisions := flag.Int("new", 0, "then log this many decisions more and time a retrain over them twice, full and incremental, both judged against the first run's version")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the runs here")
	memProfile := flag.String("memprofile", "", "write a heap profile (at the peak sample) here")
	flag.BoolVar(&keep, "keep", false, "keep each run's database (bench_retrain_N) for inspection instead of dropping it")
	flag.Parse()
	memProfilePath = *memProfile
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1000 {
			log.Fatalf("bad size %q", s)
		}
		out, err := runOne(*addr, n, *passes, *unique, *newDecisions)
		if err != nil {
			pprof.StopCPUProfile()
			log.Fatalf("%d decisions: %v", n, err)
		}
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
	}
}

var memProfilePath string

// peak samples the Go heap in use while a run lasts.
type peak struct {
	max  atomic.Uint64
	stop chan struct{}
}

func watchPeak() *peak {
	p := &peak{stop: make(chan struct{})}
	go func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if v := ms.HeapInuse; v > p.max.Load() {
				p.max.Store(v)
				if memProfilePath != "" {
					if f, err := os.Create(memProfilePath); err == nil {
						_ = pprof.WriteHeapProfile(f)
						f.Close()
					}
				}
			}
			select {
			case <-p.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return p
}

// genArgs drops a nil argument (an expression took its place).
func genArgs(args ...any) []any {
	out := args[:0]
	for _, a := range args {
		if a != nil {
			out = append(out, a)
		}
	}
	return out
}

// inlineJSON: decisions carry their actions' JSON (actions_json), as ingest
// wrote them before the actions table; otherwise, as ingest writes them now,
// they name their actions by key (action_keys) in the actions table.
var inlineJSON bool

// keep leaves each run's database in place.
var keep bool

func runOne(addr string, n, passes int, unique bool, newDecisions int) (map[string]any, error) {
	ctx := context.Background()
	db := fmt.Sprintf("bench_retrain_%d", n)
	cfg := clickhouse.Config{DSN: fmt.Sprintf("clickhouse://%s/%s", addr, db)}
	admin, err := clickhouse.Open(ctx, clickhouse.Config{DSN: fmt.Sprintf("clickhouse://%s/default", addr)})
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	if err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+db); err != nil {
		return nil, err
	}
	if !keep {
		defer admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
	}
	if err := clickhouse.Migrate(ctx, cfg); err != nil {
		return nil, err
	}
	conn, err := clickhouse.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()

	// N decisions over the last hour (all reward windows closed), each with
	// 20 items of 4 features and a user of 3; the chosen item, uniformly
	// logged, is clicked with probability 0.6 when its category is the
	// segment's favourite and 0.1 otherwise.
	gen := time.Now()
	base := uint64(time.Now().Add(-time.Hour).UnixMilli())
	span := uint64(50 * time.Minute / time.Millisecond)
	items := make([]string, 20)
	for i := range items {
		items[i] = fmt.Sprintf(`{"id":"i%d","features":{"item":{"id":"i%d","category":"c%d","price":%d,"tags":["t%d","t%d"]}}}`, i, i, i%5, 10+i, i%3, i%7)
	}
	// One catalogue of 20 items for everyone (a homepage), or with -unique-actions
	// a price per decision in every item, so that every decision's actions differ.
	actionsExpr := "?"
	actionsArg := any("[" + strings.Join(items, ",") + "]")
	if unique {
		parts := make([]string, 20)
		for i := range parts {
			parts[i] = fmt.Sprintf(`'{"id":"i%d","features":{"item":{"id":"i%d","category":"c%d","price":', toString(%d + number / 10000000), ',"tags":["t%d","t%d"]}}}'`, i, i, i%5, 10+i, i%3, i%7)
		}
		actionsExpr = "concat('[', " + strings.Join(parts, ", ',', ") + ", ']')"
		actionsArg = nil
	}
	ids := make([]string, 20)
	for i := range ids {
		ids[i] = fmt.Sprintf("i%d", i)
	}
	// As ingest writes them (schema 6): every decision has its actions' keys;
	// actions that recur (the catalogue) are in the actions table and the
	// decision names them by key alone, while one whose actions are new
	// (with -unique-actions, every decision) carries their JSON as well.
	// With -inline-actions, as ingest wrote them before: the JSON only.
	actionsCols, keysExpr := "actions_json", ""
	var keysArg any
	if !inlineJSON {
		actionsCols = "actions_json, action_keys"
		keys := make([]string, 20)
		for i := range keys {
			keys[i] = fmt.Sprintf("k%d", i)
		}
		keysExpr, keysArg = ", ?", keys
		if unique {
			parts := make([]string, 20)
			for i := range parts {
				parts[i] = fmt.Sprintf("concat('k%d-', toString(number))", i)
			}
			keysExpr, keysArg = ", ["+strings.Join(parts, ", ")+"]", nil
		} else {
			actionsArg = ""
			if err := conn.Exec(ctx, `INSERT INTO `+db+`.actions (action_key, action_id, action_json, seen_at)
				SELECT concat('k', toString(number)), concat('i', toString(number)), items[number + 1], now()
				FROM (SELECT number, ? AS items FROM system.numbers LIMIT 20)`, items); err != nil {
				return nil, fmt.Errorf("generate actions: %w", err)
			}
		}
	}
	// generate logs decisions first .. first+count-1 over [base, base+span).
	generate := func(first, count, base, span uint64) error {
		err := conn.Exec(ctx, `INSERT INTO `+db+`.decisions (event_id, ts, ts_ms, model, kind, version, variant, action_ids, probabilities, chosen, chosen_index, chosen_probability,
			explored, reward_window_s, reward_default, reward_aggregate, context_json, `+actionsCols+`, context_names, context_values, ingested_at)
		SELECT concat('e', toString(number)) AS id, toDateTime(intDiv(ts_ms, 1000)), ? + intDiv((number - ?) * ?, ?) AS ts_ms, 'bench', 'ranker', 1, 'champion',
			?, arrayMap(i -> 0.05, range(20)), concat('i', toString(number % 20)), number % 20, 0.05,
			1, 1, 0, 'sum',
			concat('{"user":{"segment":"s', toString(intHash32(number) % 5), '","age":', toString(20 + intHash32(number) % 40), ',"device":"d', toString(intHash32(number) % 3), '"}}'),
			`+actionsExpr+keysExpr+`, ['user^segment'], [concat('s', toString(intHash32(number) % 5))], now()
		FROM (SELECT number + ? AS number FROM system.numbers LIMIT ?)`,
			genArgs(base, first, span, count, ids, actionsArg, keysArg, first, count)...)
		if err != nil {
			return fmt.Errorf("generate decisions: %w", err)
		}
		// click: segment s's favourite category is c(s); chosen item k has category c(k % 5)
		err = conn.Exec(ctx, `INSERT INTO `+db+`.feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at)
		SELECT concat('e', toString(number)), 'f', toDateTime(intDiv(? + intDiv((number - ?) * ?, ?) + 100, 1000)), ? + intDiv((number - ?) * ?, ?) + 100, 1, 'click', now()
		FROM (SELECT number + ? AS number FROM system.numbers LIMIT ?)
		WHERE (intHash32(number) % 5 = (number % 20) % 5 AND intHash64(number) % 100 < 60)
			OR (intHash32(number) % 5 != (number % 20) % 5 AND intHash64(number) % 100 < 10)`,
			base, first, span, count, base, first, span, count, first, count)
		if err != nil {
			return fmt.Errorf("generate feedback: %w", err)
		}
		// Ingest's claim that all feedback is written (the feedback
		// watermark), so that the reward windows count as closed.
		return conn.Exec(ctx, `INSERT INTO `+db+`.ingest_watermarks (stream, topic, partitions, through_ms, written_at) SELECT 'feedback', 'flywheel.feedback', 1, ?, now()`,
			uint64(time.Now().UnixMilli()))
	}
	if err := generate(0, uint64(n), base, span); err != nil {
		return nil, err
	}
	genTook := time.Since(gen)

	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}},
		Exploration: flywheel.Exploration{Policy: flywheel.EpsilonGreedy, Epsilon: 0.1},
		Reward:      flywheel.RewardConfig{Window: time.Second},
		Retrain:     flywheel.RetrainConfig{Window: 2 * time.Hour, Holdout: 0.2, MinNewExamples: 1, Passes: passes}}.WithDefaults()
	reg, err := deploy.NewRegistry(clickhouse.NewRegistry(conn, db), nil, nil, nil)
	if err != nil {
		return nil, err
	}
	if err := reg.Bootstrap(ctx, "bench", mc); err != nil {
		return nil, err
	}
	rt, err := retrain.New(retrain.Options{Models: map[string]flywheel.ModelConfig{"bench": mc}, Store: clickhouse.NewTraining(conn, db), Registry: reg, CodeVersion: "bench"})
	if err != nil {
		return nil, err
	}
	runtime.GC()
	p := watchPeak()
	start := time.Now()
	res, err := rt.Run(ctx, "bench", func(step string) { log.Printf("[%6.1fs] %s", time.Since(start).Seconds(), step) })
	took := time.Since(start)
	close(p.stop)
	if err != nil {
		return nil, err
	}
	rows := res.TrainRows + res.Holdout
	out := map[string]any{
		"decisions": n, "actions": 20, "passes": passes, "unique_action_sets": unique, "rows_read": rows, "train_rows": res.TrainRows, "holdout_rows": res.Holdout,
		"generate_seconds": genTook.Seconds(), "retrain_seconds": took.Seconds(),
		"decisions_per_second": float64(rows) / took.Seconds(),
		"peak_heap_bytes":      p.max.Load(), "peak_rss_bytes": proc.PeakRSS(),
		"outcome": res.Outcome, "reason": res.Reason,
	}
	if res.Comparison != nil {
		out["candidate_snips"], out["champion_snips"] = res.Comparison.Candidate.SNIPS.Value, res.Comparison.Champion.SNIPS.Value
	}
	if newDecisions <= 0 || res.Outcome != retrain.Promoted {
		return out, nil
	}
	// The chain's steady state: a full version leaves its holdout (a fifth
	// of the window) unlearned, and so the first incremental run after it
	// learns that. Each step logs newDecisions more, in the 20 s after the
	// last ones (all closed), retrains incrementally and promotes the
	// result, until what the champion has not learned is at most twice the
	// new decisions, as it is when a busy loop retrains every newDecisions.
	mc.Retrain.Incremental, mc.Promote.Policy = true, flywheel.PromoteManual
	step := uint64(20 * time.Second / time.Millisecond)
	next, at := uint64(n), base+span
	logNew := func(count int) error {
		err := generate(next, uint64(count), at, step)
		next, at = next+uint64(count), at+step
		return err
	}
	champion := res.Version
	var catchUp []map[string]any
	for unlearned := res.Holdout; unlearned > 2*newDecisions && len(catchUp) < 8; {
		if err := logNew(newDecisions); err != nil {
			return nil, err
		}
		r, took, err := timedRun(ctx, mc, conn, db, reg, champion)
		if err != nil {
			return nil, err
		}
		if r.Version == 0 {
			return nil, fmt.Errorf("catching up: no version (%s: %s)", r.Outcome, r.Reason)
		}
		if err := reg.Promote(ctx, "bench", r.Version, "bench", "the chain's steady state"); err != nil {
			return nil, err
		}
		catchUp = append(catchUp, map[string]any{"version": r.Version, "training": r.Training, "train_rows": r.TrainRows, "holdout_rows": r.Holdout, "retrain_seconds": took.Seconds()})
		champion, unlearned = r.Version, r.Holdout
	}
	out["catch_up"] = catchUp
	// Then newDecisions more, and a full and an incremental retrain over the
	// same data against the same champion: with promotion manual, neither
	// replaces it, and the registry shows each run the champion as the
	// latest version, so that both count the same decisions as new.
	if err := logNew(newDecisions); err != nil {
		return nil, err
	}
	for _, incremental := range []bool{false, true} {
		mc := mc
		mc.Retrain.Incremental = incremental
		r, took, err := timedRun(ctx, mc, conn, db, reg, champion)
		if err != nil {
			return nil, err
		}
		key := "full"
		if incremental {
			key = "incremental"
		}
		out[key+"_after_new"] = map[string]any{"new_decisions": newDecisions, "training": r.Training, "train_rows": r.TrainRows,
			"holdout_rows": r.Holdout, "retrain_seconds": took.Seconds(), "outcome": r.Outcome}
	}
	return out, nil
}

// timedRun runs one retrain of mc against champion and times it.
func timedRun(ctx context.Context, mc flywheel.ModelConfig, conn driver.Conn, db string, reg *deploy.Registry, champion int) (*retrain.Result, time.Duration, error) {
	rt, err := retrain.New(retrain.Options{Models: map[string]flywheel.ModelConfig{"bench": mc}, Store: clickhouse.NewTraining(conn, db),
		Registry: championIsLatest{reg, champion}, CodeVersion: "bench"})
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	r, err := rt.Run(ctx, "bench", func(step string) { log.Printf("[%6.1fs] %s", time.Since(start).Seconds(), step) })
	return r, time.Since(start), err
}

// championIsLatest is a registry whose latest version is the champion, so
// that a run after a rejected one sees the same new decisions.
type championIsLatest struct {
	*deploy.Registry
	champion int
}

func (c championIsLatest) Latest(context.Context, string) (int, error) { return c.champion, nil }
