// Command ingest is the ingest benchmark (make bench): it writes decisions
// (20 actions, each with 4 item features as in the serving benchmark's
// requests, and again with 30) and feedback events to fresh topics
// on the real broker, then times, on the same records, Flywheel's ingest
// (Kafka → ClickHouse: decode, validate, flatten features, insert, commit)
// and a reference pipeline of standard tools (kcat piped into clickhouse-client
// with FORMAT JSONEachRow, which keeps the records' scalar fields only). A
// second reference inserts the same rows Flywheel wrote: after each of
// Flywheel's runs, the rows of its decisions (or feedback) table, the columns
// its insert names, are dumped as JSONEachRow to a file, and clickhouse-client
// inserts that file into an empty table made AS Flywheel's. It prints one
// JSON line per kind of record.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/bench/internal/proc"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/ingest"
	"github.com/flywheel-dev/flywheel/kafka"
)

func main() {
	broker := flag.String("kafka", "127.0.0.1:9092", "broker")
	chAddr := flag.String("clickhouse", "127.0.0.1:9000", "ClickHouse native address")
	decisions := flag.Int("decisions", 20000, "decisions to ingest")
	feedback := flag.Int("feedback", 100000, "feedback events to ingest")
	features := flag.String("action-features", "4,30", "features of each action of a decision: one decisions run per number")
	runs := flag.Int("runs", 3, "runs of each pipeline (alternating); medians are reported")
	flag.IntVar(&batchRows, "batch-rows", 0, "ingest.batch_rows (0: its default)")
	flag.BoolVar(&uniqueActions, "unique-actions", false, "give every action of every decision a price of its own, so that no action recurs (the default is a catalogue: the same 20 actions in every decision)")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of Flywheel's ingest (its runs only) here")
	flag.IntVar(&serverPID, "clickhouse-pid", 0, "the ClickHouse server's process id, if it runs here: its CPU time is reported for each pipeline")
	flag.Parse()
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400) // as `flywheel ingest` runs (cmd/flywheel tuneGC)
	}
	var shapes []int
	for _, f := range strings.Split(*features, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 4 {
			fmt.Fprintf(os.Stderr, "bench ingest: -action-features: %q is not a number of at least 4\n", f)
			os.Exit(2)
		}
		shapes = append(shapes, n)
	}
	if err := run(*broker, *chAddr, *decisions, *feedback, shapes, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "bench ingest:", err)
		os.Exit(1)
	}
}

func run(broker, chAddr string, nd, nf int, shapes []int, runs int) error {
	ctx := context.Background()
	stamp := time.Now().UnixNano()
	type job struct {
		kind     string
		features int
	}
	var jobs []job
	for _, f := range shapes {
		jobs = append(jobs, job{"decisions", f})
	}
	for j, jb := range append(jobs, job{kind: "feedback"}) {
		kind, features := jb.kind, jb.features
		n := nd
		if kind == "feedback" {
			n = nf
		}
		kcfg := kafka.Config{Brokers: []string{broker}, TopicPrefix: fmt.Sprintf("bench%d%s%d.", stamp, kind[:1], j), Partitions: 4}
		if err := kafka.EnsureTopics(ctx, kcfg); err != nil {
			return err
		}
		topic := kcfg.Topics().Decisions
		if kind == "feedback" {
			topic = kcfg.Topics().Feedback
		}
		bytesN, err := produce(ctx, kcfg, topic, kind, n, features)
		if err != nil {
			return err
		}
		table, cols, err := ingestColumns(kind)
		if err != nil {
			return err
		}
		dir, err := os.MkdirTemp("", "bench-ingest-")
		if err != nil {
			return err
		}
		// The same-rows reference: its times, the JSONEachRow file's bytes
		// and rows, and CPU seconds (clickhouse-client's, the server's).
		var sames, sameBytes, sameRows, samesCPU, samesSrv []float64
		// The same rows into a bare table (no materialized views fed).
		var bares, baresCPU, baresSrv []float64
		// The runs alternate between the two pipelines, each into a fresh
		// database, so that both see the machine in the same moods; the
		// medians are reported.
		var ours, refs, steadies, oursCPU, refsCPU, oursSrv, refsSrv, peaks []float64
		var lagAtEnd int64 // the largest over the runs
		for i := range runs {
			ccfg := clickhouse.Config{DSN: fmt.Sprintf("clickhouse://%s/bench_ingest_%d_%s%d_%d", chAddr, stamp, kind, j, i)}
			if err := clickhouse.Migrate(ctx, ccfg); err != nil {
				return err
			}
			cpu := startCPU(ctx, ccfg)
			proc.ResetPeakRSS()
			profile := startProfile()
			took, steady, lag, err := timeOurs(ctx, kcfg, ccfg, fmt.Sprintf("%singest%d", kcfg.TopicPrefix, i), kind, n)
			if err != nil {
				return err
			}
			if profile != nil {
				pprof.StopCPUProfile()
				profile.Close()
			}
			peaks = append(peaks, float64(proc.PeakRSS())/(1<<20))
			self, _, srv := cpu.stop(ctx)
			oursCPU, oursSrv = append(oursCPU, self), append(oursSrv, srv)
			cpu = startCPU(ctx, ccfg)
			ref, err := timeReference(ctx, broker, chAddr, ccfg.Database(), topic, kind, n)
			if err != nil {
				return err
			}
			_, children, srv := cpu.stop(ctx)
			refsCPU, refsSrv = append(refsCPU, children), append(refsSrv, srv)
			// The rows Flywheel wrote, dumped (untimed) and inserted again.
			file := filepath.Join(dir, fmt.Sprintf("%s%d.jsonl", table, i))
			size, lines, err := dumpRows(ctx, chAddr, ccfg.Database(), table, cols, file)
			if err != nil {
				return err
			}
			if lines != n {
				fmt.Fprintf(os.Stderr, "bench ingest: %s: Flywheel's table holds %d rows for %d records; the same-rows reference inserts them all\n", kind, lines, n)
			}
			// Into a database migrated as Flywheel's: the insert feeds the
			// same materialized views (the time-ordered companion tables),
			// so the server does the same work for it as for Flywheel's.
			schemaDB := ccfg.Database() + "_schema"
			if err := clickhouse.Migrate(ctx, clickhouse.Config{DSN: fmt.Sprintf("clickhouse://%s/%s", chAddr, schemaDB)}); err != nil {
				return err
			}
			cpu = startCPU(ctx, ccfg)
			same, err := timeSameRows(ctx, chAddr, schemaDB, table, cols, file, lines)
			if err != nil {
				return err
			}
			_, children, srv = cpu.stop(ctx)
			sames, sameBytes, sameRows = append(sames, same.Seconds()), append(sameBytes, float64(size)), append(sameRows, float64(lines))
			samesCPU, samesSrv = append(samesCPU, children), append(samesSrv, srv)
			// Into a bare table made AS Flywheel's: no views fed.
			sameDB := ccfg.Database() + "_same"
			if err := sameTable(ctx, chAddr, ccfg.Database(), sameDB, table); err != nil {
				return err
			}
			cpu = startCPU(ctx, ccfg)
			bare, err := timeSameRows(ctx, chAddr, sameDB, table, cols, file, lines)
			if err != nil {
				return err
			}
			_, children, srv = cpu.stop(ctx)
			os.Remove(file)
			bares, baresCPU, baresSrv = append(bares, bare.Seconds()), append(baresCPU, children), append(baresSrv, srv)
			ours, refs, steadies = append(ours, took.Seconds()), append(refs, ref.Seconds()), append(steadies, steady)
			lagAtEnd = max(lagAtEnd, lag)
			fmt.Fprintf(os.Stderr, "bench ingest: %s%s run %d: flywheel %.0f/s, reference %.0f/s; CPU µs a record: flywheel %.1f + server %.1f, reference %.1f + server %.1f; flywheel peak RSS %.0f MiB\n",
				kind, shape(features), i+1, float64(n)/took.Seconds(), float64(n)/ref.Seconds(),
				oursCPU[i]/float64(n)*1e6, oursSrv[i]/float64(n)*1e6, refsCPU[i]/float64(n)*1e6, refsSrv[i]/float64(n)*1e6, peaks[i])
			fmt.Fprintf(os.Stderr, "bench ingest: %s%s run %d: same rows (%d, %.1f MiB of JSONEachRow): flywheel %.0f/s, clickhouse-client %.0f/s; CPU µs a row: client %.1f + server %.1f\n",
				kind, shape(features), i+1, lines, float64(size)/(1<<20), float64(n)/took.Seconds(), float64(lines)/same.Seconds(),
				samesCPU[i]/float64(lines)*1e6, samesSrv[i]/float64(lines)*1e6)
			fmt.Fprintf(os.Stderr, "bench ingest: %s%s run %d: same rows into a bare table (no views): clickhouse-client %.0f/s; CPU µs a row: client %.1f + server %.1f\n",
				kind, shape(features), i+1, float64(lines)/bare.Seconds(), baresCPU[i]/float64(lines)*1e6, baresSrv[i]/float64(lines)*1e6)
			if conn, err := clickhouse.Open(ctx, ccfg); err == nil {
				conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ccfg.Database())
				conn.Exec(ctx, "DROP DATABASE IF EXISTS "+sameDB)
				conn.Exec(ctx, "DROP DATABASE IF EXISTS "+schemaDB)
				conn.Close()
			}
		}
		os.RemoveAll(dir)
		o, r := median(ours), median(refs)
		perRun := func(xs []float64) []float64 {
			out := make([]float64, len(xs))
			for i, x := range xs {
				out[i] = float64(n) / x
			}
			return out
		}
		rec := map[string]any{
			"kind": kind, "records": n, "mib": float64(bytesN) / (1 << 20), "runs": runs,
			"flywheel_seconds": o, "flywheel_per_second": float64(n) / o,
			"flywheel_per_second_after_first_batch": median(steadies),
			"reference_seconds":                     r, "reference_per_second": float64(n) / r,
			"ratio": r / o, "lag_at_end": lagAtEnd,
			"flywheel_per_second_runs": perRun(ours), "reference_per_second_runs": perRun(refs),
		}
		// CPU seconds a record, in microseconds: the pipeline's own
		// processes, and the server's from the start until the merges the
		// inserts set off are done.
		perRecord := func(xs []float64) float64 { return median(xs) / float64(n) * 1e6 }
		rec["flywheel_cpu_us_per_record"] = perRecord(oursCPU)
		rec["flywheel_peak_rss_mib"] = slices.Max(peaks)
		rec["reference_cpu_us_per_record"] = perRecord(refsCPU)
		if serverPID > 0 {
			rec["flywheel_server_cpu_us_per_record"] = perRecord(oursSrv)
			rec["reference_server_cpu_us_per_record"] = perRecord(refsSrv)
		}
		// The same-rows reference. Its rows are Flywheel's (n, unless the
		// table held more); its bytes are the JSONEachRow file's, which
		// are also given for Flywheel (the same rows in Flywheel's time),
		// beside the Kafka records' bytes Flywheel read.
		rows, jsonBytes, s := median(sameRows), median(sameBytes), median(sames)
		rec["same_rows_rows"] = rows
		rec["same_rows_jsoneachrow_mib"] = jsonBytes / (1 << 20)
		rec["same_rows_bytes_per_row"] = jsonBytes / rows
		rec["kafka_bytes_per_record"] = float64(bytesN) / float64(n)
		rec["same_rows_seconds"] = s
		rec["same_rows_per_second"] = rows / s
		rec["same_rows_bytes_per_second"] = jsonBytes / s
		sameRuns := make([]float64, len(sames))
		for i, x := range sames {
			sameRuns[i] = sameRows[i] / x
		}
		rec["same_rows_per_second_runs"] = sameRuns
		rec["flywheel_kafka_bytes_per_second"] = float64(bytesN) / o
		rec["flywheel_jsoneachrow_bytes_per_second"] = jsonBytes / o
		rec["same_rows_ratio"] = (float64(n) / o) / (rows / s) // flywheel rows/s over reference rows/s
		perRow := func(xs []float64) float64 { return median(xs) / rows * 1e6 }
		rec["same_rows_cpu_us_per_row"] = perRow(samesCPU)
		if serverPID > 0 {
			rec["same_rows_server_cpu_us_per_row"] = perRow(samesSrv)
			// CPU a row, Flywheel's process and server over the reference's client and server.
			rec["same_rows_cpu_ratio"] = (perRecord(oursCPU) + perRecord(oursSrv)) / (perRow(samesCPU) + perRow(samesSrv))
		} else {
			rec["same_rows_cpu_ratio"] = perRecord(oursCPU) / perRow(samesCPU)
		}
		bare := median(bares)
		rec["same_rows_bare_per_second"] = rows / bare
		rec["same_rows_bare_ratio"] = (float64(n) / o) / (rows / bare)
		rec["same_rows_bare_cpu_us_per_row"] = perRow(baresCPU)
		if serverPID > 0 {
			rec["same_rows_bare_server_cpu_us_per_row"] = perRow(baresSrv)
		}
		if kind == "decisions" {
			rec["features_per_action"] = features
		}
		json.NewEncoder(os.Stdout).Encode(rec)
	}
	return nil
}

var serverPID int

var uniqueActions bool

// cpuProfile names the file for a CPU profile of the first run of
// Flywheel's pipeline (the first kind of record), and of nothing else.
var cpuProfile string

func startProfile() *os.File {
	if cpuProfile == "" {
		return nil
	}
	f, err := os.Create(cpuProfile)
	if err != nil || pprof.StartCPUProfile(f) != nil {
		return nil
	}
	cpuProfile = ""
	return f
}

// cpuMark is the CPU time used so far by this process, its children and
// the ClickHouse server.
type cpuMark struct {
	self, children, server float64
	ccfg                   clickhouse.Config
}

func cpuNow() (self, children, server float64) {
	var ru syscall.Rusage
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		self = tv(ru.Utime) + tv(ru.Stime)
	}
	if syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru) == nil {
		children = tv(ru.Utime) + tv(ru.Stime)
	}
	if serverPID > 0 {
		// /proc/PID/stat: utime and stime are fields 14 and 15, in ticks
		// of 1/100 s; the command name (field 2) may hold spaces.
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", serverPID)); err == nil {
			if i := bytes.LastIndexByte(b, ')'); i > 0 {
				f := strings.Fields(string(b[i+1:]))
				if len(f) > 12 {
					u, _ := strconv.ParseFloat(f[11], 64)
					s, _ := strconv.ParseFloat(f[12], 64)
					server = (u + s) / 100
				}
			}
		}
	}
	return
}

// startCPU waits until the server merges nothing (so that a run is not
// charged for the last one's merges) and marks the CPU time.
func startCPU(ctx context.Context, ccfg clickhouse.Config) cpuMark {
	waitMerges(ctx, ccfg)
	m := cpuMark{ccfg: ccfg}
	m.self, m.children, m.server = cpuNow()
	return m
}

// stop waits for the merges the run set off and returns the CPU seconds
// used since the mark.
func (m cpuMark) stop(ctx context.Context) (self, children, server float64) {
	s, c, _ := cpuNow()
	waitMerges(ctx, m.ccfg)
	_, _, srv := cpuNow()
	return s - m.self, c - m.children, srv - m.server
}

// waitMerges waits (up to a minute) until system.merges is empty.
func waitMerges(ctx context.Context, ccfg clickhouse.Config) {
	conn, err := clickhouse.Open(ctx, ccfg)
	if err != nil {
		return
	}
	defer conn.Close()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var n uint64
		if conn.QueryRow(ctx, "SELECT count() FROM system.merges").Scan(&n) != nil || n == 0 {
			return
		}
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func produce(ctx context.Context, kcfg kafka.Config, topic, kind string, n, features int) (int, error) {
	w := kafka.NewProducer(kcfg, topic)
	defer w.Close()
	ts := time.Now().Add(-time.Hour).UTC()
	total := 0
	batch := make([]kafka.Message, 0, 1000)
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("ev-%07d", i)
		var v any
		if kind == "decisions" {
			actions := make([]flywheel.Action, 20)
			probs := make([]float64, 20)
			for a := range actions {
				actions[a] = flywheel.Action{ID: fmt.Sprintf("item-%02d", a), Features: itemFeatures(a, features)}
				if uniqueActions { // a price of its own in every decision: no action recurs
					actions[a].Features["item"]["price"] = float64(a) + float64(i)/1000
				}
				probs[a] = 0.05
			}
			v = &flywheel.Decision{Schema: 1, EventID: id, Time: ts, Model: "homepage", Kind: "ranker", Version: 1, Variant: "champion",
				Context: flywheel.Features{"user": {"segment": "b", "age": 31.0, "country": "fr", "device": "ios", "tags": []any{"x", "y"}}},
				Actions: actions, Probabilities: probs, ChosenIndex: i % 20, Chosen: actions[i%20].ID,
				Reward: flywheel.RewardRule{WindowSeconds: 600, Aggregate: "sum"}}
		} else {
			v = &flywheel.Feedback{Schema: 1, FeedbackID: "f" + id, EventID: id, Time: ts, Reward: 1, Type: "click"}
		}
		b, err := json.Marshal(v)
		if err != nil {
			return 0, err
		}
		total += len(b)
		batch = append(batch, kafka.Message{Key: []byte(id), Value: b})
		if len(batch) == cap(batch) || i == n-1 {
			if err := w.WriteMessages(ctx, batch...); err != nil {
				return 0, err
			}
			batch = batch[:0]
		}
	}
	return total, nil
}

// itemFeatures gives action a n features: an id, a category, a price and a
// flag, then strings, numbers and bools in turn.
func itemFeatures(a, n int) flywheel.Features {
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
	return flywheel.Features{"item": f}
}

// timeOurs returns the time from start (group join included) to the last
// row, and the rate after the first batch (the steady rate).
// batchRows is ingest.batch_rows for Flywheel's runs (-batch-rows).
var batchRows int

func timeOurs(ctx context.Context, kcfg kafka.Config, ccfg clickhouse.Config, group, kind string, n int) (time.Duration, float64, int64, error) {
	conn, err := clickhouse.Open(ctx, ccfg)
	if err != nil {
		return 0, 0, 0, err
	}
	defer conn.Close()
	reg := prometheus.NewRegistry()
	in, err := ingest.New(ingest.Config{Group: group, BatchRows: batchRows}, ingest.Options{Kafka: kcfg, Inserts: clickhouse.NewInserts(conn, ccfg.Database()), Registerer: reg})
	if err != nil {
		return 0, 0, 0, err
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- in.Run(rctx) }()
	var firstAt time.Time
	var firstRows float64
	for {
		rows := ingest.Rows(in, kind)
		if rows > 0 && firstAt.IsZero() {
			firstAt, firstRows = time.Now(), rows
		}
		if rows >= float64(n) {
			break
		}
		select {
		case err := <-done:
			stop()
			return 0, 0, 0, fmt.Errorf("ingest stopped: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	end := time.Now()
	fmt.Fprintf(os.Stderr, "bench ingest: %s: first %.0f rows in after %.2f s, the rest in %.2f s\n", kind, firstRows, firstAt.Sub(start).Seconds(), end.Sub(firstAt).Seconds())
	// Every row is in; the lag at the end is what the group has not
	// committed once its last commit had a second to land.
	lag := int64(-1)
	for wait := time.Now(); lag != 0 && time.Since(wait) < time.Second; time.Sleep(50 * time.Millisecond) {
		lags, err := kafka.GroupLag(ctx, kcfg, group, kcfg.Topics().Decisions, kcfg.Topics().Feedback)
		if err != nil {
			stop()
			<-done
			return 0, 0, 0, err
		}
		lag = 0
		for _, l := range lags {
			lag += l
		}
	}
	stop()
	<-done
	steady := 0.0
	if d := end.Sub(firstAt).Seconds(); d > 0 {
		steady = (float64(n) - firstRows) / d
	}
	if fams, err := reg.Gather(); err == nil {
		for _, f := range fams {
			if f.GetName() == "flywheel_ingest_insert_seconds" {
				for _, m := range f.GetMetric() {
					fmt.Fprintf(os.Stderr, "bench ingest: %s: %.2f s of %.2f s building and sending ClickHouse inserts (%d batches)\n",
						kind, m.GetHistogram().GetSampleSum(), end.Sub(start).Seconds(), m.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	return end.Sub(start), steady, lag, nil
}

// The reference table takes the scalar fields of each record; JSONEachRow
// skips the nested ones (context, actions), which Flywheel flattens and keeps.
func timeReference(ctx context.Context, broker, chAddr, db, topic, kind string, n int) (time.Duration, error) {
	host, port, _ := strings.Cut(chAddr, ":")
	cols := "event_id String, model String, kind String, model_version UInt32, variant String, chosen String, chosen_index UInt16"
	if kind == "feedback" {
		cols = "event_id String, feedback_id String, reward Float64, type String"
	}
	ch := func(q string, stdin *bytes.Buffer) *exec.Cmd {
		c := exec.CommandContext(ctx, "clickhouse-client", "--host", host, "--port", port, "--input_format_skip_unknown_fields=1", "--query", q)
		return c
	}
	if out, err := ch("CREATE TABLE "+db+".reference ("+cols+") ENGINE = MergeTree() ORDER BY event_id", nil).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("create reference table: %v: %s", err, out)
	}
	start := time.Now()
	pipe := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c",
		fmt.Sprintf("kcat -C -b %s -t %s -o beginning -e -q -f '%%s\\n' | clickhouse-client --host %s --port %s --input_format_skip_unknown_fields=1 --query 'INSERT INTO %s.reference FORMAT JSONEachRow'",
			broker, topic, host, port, db))
	if out, err := pipe.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("reference pipeline: %v: %s", err, out)
	}
	took := time.Since(start)
	out, err := ch("SELECT count() FROM "+db+".reference", nil).Output()
	if err != nil || strings.TrimSpace(string(out)) != fmt.Sprint(n) {
		return 0, fmt.Errorf("reference pipeline inserted %s rows, want %d (%v)", strings.TrimSpace(string(out)), n, err)
	}
	return took, nil
}

func shape(features int) string {
	if features == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d features per action)", features)
}

// ingestColumns returns the table ingest inserts records of this kind into
// and the columns its insert names, read from the statement it sends
// (clickhouse.Statements, "ingest.decisions" or "ingest.feedback").
func ingestColumns(kind string) (table, cols string, err error) {
	for _, st := range clickhouse.Statements("db") {
		if st.Name != "ingest."+kind {
			continue
		}
		head, list, ok := strings.Cut(st.SQL, "(")
		end := strings.LastIndexByte(list, ')')
		f := strings.Fields(head)
		if !ok || end < 0 || len(f) != 3 || !strings.EqualFold(f[0], "INSERT") {
			break
		}
		_, table, _ = strings.Cut(f[2], ".")
		var names []string
		for _, c := range strings.Split(list[:end], ",") {
			names = append(names, strings.TrimSpace(c))
		}
		return table, strings.Join(names, ", "), nil
	}
	return "", "", fmt.Errorf("no insert statement ingest.%s in clickhouse.Statements", kind)
}

func clickhouseClient(ctx context.Context, chAddr, q string) *exec.Cmd {
	host, port, _ := strings.Cut(chAddr, ":")
	return exec.CommandContext(ctx, "clickhouse-client", "--host", host, "--port", port, "--query", q)
}

// dumpRows writes the columns cols of db.table as JSONEachRow (as
// clickhouse-client prints it) to file, and returns its size and lines.
func dumpRows(ctx context.Context, chAddr, db, table, cols, file string) (int64, int, error) {
	f, err := os.Create(file)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	c := clickhouseClient(ctx, chAddr, fmt.Sprintf("SELECT %s FROM %s.%s FORMAT JSONEachRow", cols, db, table))
	var stderr bytes.Buffer
	c.Stdout, c.Stderr = f, &stderr
	if err := c.Run(); err != nil {
		return 0, 0, fmt.Errorf("dump %s.%s: %v: %s", db, table, err, stderr.Bytes())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, 0, err
	}
	return int64(len(b)), bytes.Count(b, []byte("\n")), nil
}

// sameTable creates database to and in it an empty table as from.table.
func sameTable(ctx context.Context, chAddr, from, to, table string) error {
	for _, q := range []string{"CREATE DATABASE IF NOT EXISTS " + to, fmt.Sprintf("CREATE TABLE %s.%s AS %s.%s", to, table, from, table)} {
		if out, err := clickhouseClient(ctx, chAddr, q).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", q, err, out)
		}
	}
	return nil
}

// timeSameRows times clickhouse-client inserting file (JSONEachRow) into
// db.table's columns cols, as `clickhouse-client --query "INSERT ..." < file`,
// and checks that the table then holds want rows.
func timeSameRows(ctx context.Context, chAddr, db, table, cols, file string, want int) (time.Duration, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	c := clickhouseClient(ctx, chAddr, fmt.Sprintf("INSERT INTO %s.%s (%s) FORMAT JSONEachRow", db, table, cols))
	c.Stdin = f
	start := time.Now()
	if out, err := c.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("same-rows reference: %v: %s", err, out)
	}
	took := time.Since(start)
	out, err := clickhouseClient(ctx, chAddr, fmt.Sprintf("SELECT count() FROM %s.%s", db, table)).Output()
	if err != nil || strings.TrimSpace(string(out)) != fmt.Sprint(want) {
		return 0, fmt.Errorf("same-rows reference inserted %s rows, want %d (%v)", strings.TrimSpace(string(out)), want, err)
	}
	return took, nil
}
