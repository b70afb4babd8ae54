package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel/internal/testenv"
	"github.com/flywheel-dev/flywheel/kafka"
	"github.com/flywheel-dev/flywheel/retrain"
)

// importConfig is a configuration with one ranker, obd, whose reward is a
// click in [0, 1], retrained on ten years back (history is old).
const importConfig = `models:
  obd:
    kind: ranker
    interactions: [[user, item]]
    exploration: {policy: epsilon-greedy, epsilon: 0.05}
    reward: {window: 10m, default: 0, aggregate: sum, min: 0, max: 1}
    retrain: {schedule: "@every 1000h", window: 87600h, holdout: 0.2, min_new_examples: 1000}
  hist:
    kind: ranker
`

// obdMapping maps the Open Bandit Dataset's CSV (bts/all/all.csv,
// random/all/all.csv) onto a ranker over the 80 items of item_context.csv.
// docs/operations.md shows the same mapping.
const obdMapping = `time: timestamp
time_format: "2006-01-02 15:04:05.999999999-07:00"
action: item_id
slot: position
propensity: propensity_score
reward: click
reward_type: click
context:
  user: {user_feature_0: string, user_feature_1: string, user_feature_2: string, user_feature_3: string}
actions:
  file: %s
  id: item_id
  features:
    item: {item_feature_0: number, item_feature_1: string, item_feature_2: string, item_feature_3: string}
`

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Bad input is refused before anything is written, naming the file, the
// line and the field (column) of every bad line, at most --max-errors of
// them; good input passes a dry run. No service is needed: validation comes
// before the first connection.
func TestImportValidation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := writeFile(t, dir, "flywheel.yaml", importConfig)
	writeFile(t, dir, "items.csv", "id,price,color\na,1.5,red\nb,2,blue\nc,3,green\n")
	mapping := writeFile(t, dir, "map.yaml", `time: ts
time_format: unix
action: item
propensity: p
reward: clicked
context:
  user: {segment: string, age: number}
actions:
  file: items.csv
  id: id
  features:
    item: {price: number, color: string}
`)
	csvFile := func(name, body string) string {
		return writeFile(t, dir, name, "ts,item,p,clicked,segment,age\n"+body)
	}
	jsonFile := func(name, body string) string { return writeFile(t, dir, name, body) }
	goodDecision := `{"schema":1,"event_id":"e1","ts":"2024-01-02T03:04:05Z","model":"obd","kind":"ranker","model_version":0,"variant":"imported","context":{"user":{"segment":"a"}},"actions":[{"id":"x"},{"id":"y"}],"probabilities":[0.5,0.5],"chosen_index":1,"chosen":"y","explored":false,"reward":{"window_s":600,"default":0,"aggregate":"sum"}}`
	cases := []struct {
		name string
		args []string
		want []string // substrings of the error; none: success
	}{
		{"good csv", []string{"--mapping", mapping, csvFile("good.csv", "1700000000,a,0.25,1,x,30\n1700000001,b,0.5,,y,\n")}, nil},
		{"bad csv", []string{"--mapping", mapping, csvFile("bad.csv", strings.Join([]string{
			"1700000000,a,0.25,1,x,30",   // line 2: good
			"1700000000,z,0.25,1,x,30",   // 3: unknown action
			"1700000000,a,0,1,x,30",      // 4: propensity 0
			"1700000000,a,0.3,2,x,30",    // 5: reward above reward.max
			"yesterday,a,0.3,1,x,30",     // 6: time
			"1700000000,a,0.3,1,x,old",   // 7: age not a number
			"1700000000,a,0.3,1,x",       // 8: a field short
			"1700000000,a,0.3,nope,x,30", // 9: reward not a number
		}, "\n")+"\n")}, []string{
			"bad.csv:3: column item (action): \"z\" is not an action",
			"bad.csv:4: column p (propensity): \"0\" is not a probability",
			"bad.csv:5: column clicked (reward) 2 is above the model's reward.max 1",
			"bad.csv:6: column ts (time): \"yesterday\"",
			"bad.csv:7: column age: \"old\" is not a finite number",
			"bad.csv:8: record on line 8: wrong number of fields",
			"bad.csv:9: column clicked (reward): \"nope\" is not a number",
			"nothing imported: 7 bad lines",
		}},
		{"max errors", []string{"--max-errors", "2", "--mapping", mapping, csvFile("many.csv", strings.Repeat("1700000000,z,0.25,1,x,30\n", 1000))},
			[]string{"many.csv:2:", "many.csv:3:", "stopped at 2"}},
		{"missing column", []string{"--mapping", writeFile(t, dir, "map2.yaml", "time: when\naction: item\npropensity: p\nactions: {file: items.csv, id: id}\n"), csvFile("c.csv", "1,a,0.5,1,x,3\n")},
			[]string{`has no column "when" (mapping's time)`}},
		{"bad mapping", []string{"--mapping", writeFile(t, dir, "map3.yaml", "time: ts\naction: item\npropensity: p\nactions: {file: items.csv, id: id}\ncontext: {user: {age: integer}}\n"), csvFile("d.csv", "")},
			[]string{"context.user.age: type must be string, number, bool or tags"}},
		{"good jsonl", []string{jsonFile("good.jsonl", goodDecision+"\n\n"+
			`{"event_id":"e1","ts":"2024-01-02T03:04:06Z","reward":1,"type":"click"}`+"\n")}, nil},
		{"bad jsonl", []string{jsonFile("bad.jsonl", strings.Join([]string{
			goodDecision,
			strings.Replace(goodDecision, `"model":"obd"`, `"model":"other"`, 1),
			strings.Replace(goodDecision, `"chosen_index":1`, `"chosen_index":2`, 1),
			strings.Replace(goodDecision, `"probabilities":[0.5,0.5]`, `"probabilities":[0.5,0]`, 1),
			strings.Replace(goodDecision, `"model_version":0`, `"model_version":"1"`, 1),
			strings.Replace(goodDecision, `"explored":false`, `"explore":false`, 1),
			`{"event_id":"e1","ts":"2024-01-02T03:04:06Z","reward":5}`,
			`{"event_id":"","ts":"2024-01-02T03:04:06Z","reward":1}`,
			`not json`,
			strings.Replace(goodDecision, `"variant":"imported"`, `"variant":"champion"`, 1),
		}, "\n"))}, []string{
			`bad.jsonl:2: model: "other", not --model "obd"`,
			"bad.jsonl:3: chosen_index 2 is out of range",
			"bad.jsonl:4: probabilities[1] (the chosen action's) is 0",
			"bad.jsonl:5: model_version: a JSON string where int goes",
			`bad.jsonl:6: json: unknown field "explore"`,
			"bad.jsonl:7: reward 5 is above the model's reward.max 1",
			"bad.jsonl:8: event_id is empty",
			"bad.jsonl:9: not a JSON object",
			`bad.jsonl:10: model_version must be at least 1 (0 only with variant "imported")`,
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var out bytes.Buffer
			args := append([]string{"import", "--config", cfg, "--model", "obd", "--dry-run", "--quiet"}, tc.args...)
			err := run(ctx, args, func(string) string { return "" }, &out, io.Discard)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("import: %v", err)
				}
				if !strings.Contains(out.String(), "dry run") {
					t.Fatalf("no summary: %q", out.String())
				}
				return
			}
			if err == nil {
				t.Fatalf("import succeeded; want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// obdLog is one OBD CSV file's rows: the logged propensity and the click.
type obdLog struct{ p, click []float64 }

func readOBD(t *testing.T, path string) obdLog {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	var l obdLog
	for _, r := range recs[1:] {
		p, err1 := strconv.ParseFloat(r[col["propensity_score"]], 64)
		c, err2 := strconv.ParseFloat(r[col["click"]], 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: %v %v", path, err1, err2)
		}
		l.p, l.click = append(l.p, p), append(l.click, c)
	}
	return l
}

// The Open Bandit Dataset sample (ZOZOTOWN, "all" campaign: 10,000
// impressions logged by Bernoulli Thompson Sampling, 10,000 by the uniform
// random policy, 80 items in 3 positions) through the whole path: the BTS
// logs are imported with a CSV mapping (the first 3,000 rows, as an import
// stopped midway leaves them; then the whole file, as running it again does;
// then the first rows once more), ingest writes them
// to ClickHouse, and `flywheel eval` judges version 1, the uniform-random
// policy, on them with IPS, SNIPS and DR. Every row counts once; the
// estimates are exactly those computed from the CSV by hand (so the logged
// propensities and clicks arrive intact); and they are compared with the
// click rate the random policy itself got, on the random logs.
func TestImportOBD(t *testing.T) {
	obd := testenv.OBD(t)
	kafkaAddr, chAddr := strings.Join(testenv.Kafka(t), ","), testenv.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	suffix := time.Now().UnixNano()
	db := fmt.Sprintf("import_%d", suffix)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "flywheel.yaml", importConfig)
	mapping := writeFile(t, dir, "obd.yaml", fmt.Sprintf(obdMapping, filepath.Join(obd, "bts/all/item_context.csv")))
	env := map[string]string{
		"FLYWHEEL_CLICKHOUSE_DSN":     fmt.Sprintf("clickhouse://%s/%s", chAddr, db),
		"FLYWHEEL_KAFKA_BROKERS":      kafkaAddr,
		"FLYWHEEL_KAFKA_TOPIC_PREFIX": fmt.Sprintf("import%d.", suffix),
		"FLYWHEEL_LOG_LEVEL":          "warn",
	}
	getenv := func(k string) string { return env[k] }
	flywheel := func(args ...string) string {
		t.Helper()
		var out, errs bytes.Buffer
		if err := run(ctx, append(args, "--config", cfg), getenv, &out, &errs); err != nil {
			t.Fatalf("flywheel %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errs.String())
		}
		return out.String()
	}
	bts := filepath.Join(obd, "bts/all/all.csv")
	raw, err := os.ReadFile(bts)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(raw, []byte("\n"))
	prefix := writeFile(t, dir, "bts-prefix.csv", string(bytes.Join(lines[:3001], nil))) // the header and 3,000 rows

	start := time.Now()
	t.Log(strings.TrimSpace(flywheel("import", "--model", "obd", "--mapping", mapping, "--quiet", prefix)))
	conn := testDB(t, ctx, chAddr, db) // created by the import's migration; dropped at cleanup
	ingCtx, stopIngest := context.WithCancel(ctx)
	ingDone := make(chan error, 1)
	var ingLog syncWriter
	ingLog.w = &bytes.Buffer{}
	go func() { ingDone <- run(ingCtx, []string{"ingest", "--config", cfg}, getenv, &ingLog, &ingLog) }()
	defer func() {
		stopIngest()
		if err := <-ingDone; err != nil {
			t.Errorf("ingest: %v", err)
		}
	}()
	for _, f := range []string{bts, prefix} { // the rest, then the first rows a third time
		t.Log(strings.TrimSpace(flywheel("import", "--model", "obd", "--mapping", mapping, "--quiet", f)))
	}
	imported := time.Since(start)
	// JSON lines in the topics' schema, for another model, twice: a decision
	// with its defaults filled in, one served by a version, and feedback
	// without ids of its own.
	hist := writeFile(t, dir, "hist.jsonl", `{"event_id":"h1","ts":"2019-11-24T00:00:00Z","kind":"ranker","context":{"user":{"tags":["a","b"],"age":3}},"actions":[{"id":"x","features":{"item":{"p":1}}},{"id":"y"}],"probabilities":[0.25,0.75],"chosen_index":1}
{"schema":1,"event_id":"h2","ts":"2019-11-24T00:01:00Z","model":"hist","kind":"ranker","model_version":1,"variant":"champion","context":{},"actions":[{"id":"x"},{"id":"y"}],"probabilities":[0.5,0.5],"chosen_index":0,"chosen":"x","explored":true,"reward":{"window_s":600,"default":0,"aggregate":"sum"}}
{"event_id":"h1","ts":"2019-11-24T00:00:05Z","reward":1,"type":"click"}
{"event_id":"h2","ts":"2019-11-24T00:01:05Z","reward":0.5}
`)
	for range 2 {
		t.Log(strings.TrimSpace(flywheel("import", "--model", "hist", "--quiet", hist)))
	}

	// Wait until ingest has consumed every record and the examples closed.
	kcfg := kafka.Config{Brokers: testenv.Kafka(t), TopicPrefix: env["FLYWHEEL_KAFKA_TOPIC_PREFIX"]}
	topics := kcfg.Topics()
	var rep retrain.Report
	waitFor(t, ctx, "every imported record ingested and its example closed", func() bool {
		lag, err := kafka.GroupLag(ctx, kcfg, env["FLYWHEEL_KAFKA_TOPIC_PREFIX"]+"flywheel-ingest", topics.Decisions, topics.Feedback)
		if err != nil {
			return false
		}
		for _, n := range lag {
			if n > 0 {
				return false
			}
		}
		var out, errs bytes.Buffer
		if run(ctx, []string{"eval", "--config", cfg, "--model", "obd", "--version", "1", "--from", "2019-11-01", "--to", "2019-12-01", "--json"}, getenv, &out, &errs) != nil {
			return false
		}
		return json.Unmarshal(out.Bytes(), &rep) == nil && rep.Examples >= 10000
	})
	var histDecisions, histFeedback uint64
	var histReward float64
	var histVersions string
	waitFor(t, ctx, "the JSON lines ingested", func() bool {
		err := conn.QueryRow(ctx, "SELECT count(), toString(groupArray(version)) FROM (SELECT version FROM "+db+".decisions FINAL WHERE model = 'hist' ORDER BY event_id)").Scan(&histDecisions, &histVersions)
		if err == nil {
			err = conn.QueryRow(ctx, "SELECT count(), sum(reward) FROM "+db+".feedback FINAL WHERE event_id IN ('h1', 'h2')").Scan(&histFeedback, &histReward)
		}
		return err == nil && histDecisions >= 2 && histFeedback >= 2
	})
	if histDecisions != 2 || histFeedback != 2 || histReward != 1.5 || histVersions != "[0,1]" {
		t.Errorf("JSON lines imported twice: %d decisions (versions %s), %d feedback with reward %v; want 2 (versions [0,1]), 2 with 1.5",
			histDecisions, histVersions, histFeedback, histReward)
	}
	var decisions, feedback, clicks uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".decisions FINAL WHERE model = 'obd'").Scan(&decisions); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT count(), toUInt64(sum(reward)) FROM "+db+".feedback FINAL WHERE event_id NOT IN ('h1', 'h2')").Scan(&feedback, &clicks); err != nil {
		t.Fatal(err)
	}
	btsLog, random := readOBD(t, bts), readOBD(t, filepath.Join(obd, "random/all/all.csv"))
	wantClicks := 0.0
	for _, c := range btsLog.click {
		wantClicks += c
	}
	if rep.Examples != 10000 || decisions != 10000 || feedback != 10000 || float64(clicks) != wantClicks {
		t.Fatalf("after importing 3,000 rows, all 10,000, then the 3,000 again: %d examples, %d decisions, %d feedback with %d clicks; want 10000 of each and %v clicks",
			rep.Examples, decisions, feedback, clicks, wantClicks)
	}

	// The estimates by hand, from the CSV: the uniform policy gives each of
	// the 80 items 1/80 in every position.
	var sw, swr, swr2 float64
	n := float64(len(btsLog.p))
	for i, p := range btsLog.p {
		w := (1.0 / 80) / p
		sw, swr, swr2 = sw+w, swr+w*btsLog.click[i], swr2+w*w*btsLog.click[i]
	}
	ips, snips := swr/n, swr/sw
	c := rep.Comparison.Candidate
	for _, x := range []struct {
		name      string
		got, want float64
	}{{"IPS", c.IPS.Value, ips}, {"SNIPS", c.SNIPS.Value, snips}} {
		if math.Abs(x.got-x.want) > 1e-9*x.want {
			t.Errorf("%s = %v; by hand from the CSV it is %v", x.name, x.got, x.want)
		}
	}

	// The truth: the click rate of the random policy on its own logs, with
	// its standard error.
	var rc float64
	for _, c := range random.click {
		rc += c
	}
	rn := float64(len(random.click))
	rate := rc / rn
	rateSE := math.Sqrt(rate * (1 - rate) / rn)
	t.Logf("random logs: %d impressions, %v clicks, click rate %.5f ± %.5f (95%%)", int(rn), rc, rate, 1.96*rateSE)
	t.Logf("BTS logs: %d impressions, %v clicks, click rate %.5f; ESS of the uniform policy's weights %.0f", int(n), wantClicks, wantClicks/n, c.ESS)
	t.Logf("imported 3,000 + 10,000 + 3,000 rows in %v; eval:\n%s", imported.Round(time.Millisecond), strings.TrimSpace(flywheel("eval", "--model", "obd", "--version", "1", "--from", "2019-11-01", "--to", "2019-12-01")))
	for _, x := range []struct {
		name string
		e    retrain.Estimate
	}{{"IPS", c.IPS}, {"SNIPS", c.SNIPS}, {"DR", c.DR}} {
		se := (x.e.Upper - x.e.Lower) / (2 * 1.96)
		z := (x.e.Value - rate) / math.Hypot(se, rateSE)
		t.Logf("%-5s %.5f [%.5f, %.5f]  relative error %+.1f%%  z of the difference %+.2f", x.name, x.e.Value, x.e.Lower, x.e.Upper, 100*(x.e.Value-rate)/rate, z)
		// The estimate and the random logs' rate are independent estimates
		// of the same value (the uniform policy's click rate): their
		// difference must lie within its 95% interval.
		if math.Abs(z) > 1.96 {
			t.Errorf("%s %.5f is %.2f standard errors from the random logs' click rate %.5f", x.name, x.e.Value, z, rate)
		}
	}
	// And the random policy's click rate lies in SNIPS's 95% interval.
	if rate < c.SNIPS.Lower || rate > c.SNIPS.Upper {
		t.Errorf("the random logs' click rate %.5f is outside SNIPS's interval [%.5f, %.5f]", rate, c.SNIPS.Lower, c.SNIPS.Upper)
	}

	// A later version: retrain learns version 2 from the imported history,
	// and eval judges it on the same logs against version 1 (its own
	// training data mostly, so the figures say it works, not how good it is).
	t.Log(strings.TrimSpace(flywheel("retrain", "--now", "--model", "obd")))
	var out, errs bytes.Buffer
	if err := run(ctx, []string{"eval", "--config", cfg, "--model", "obd", "--version", "2", "--from", "2019-11-01", "--to", "2019-12-01", "--json"}, getenv, &out, &errs); err != nil {
		t.Fatalf("eval --version 2: %v\n%s", err, errs.String())
	}
	var rep2 retrain.Report
	if err := json.Unmarshal(out.Bytes(), &rep2); err != nil {
		t.Fatal(err)
	}
	c2 := rep2.Comparison.Candidate
	t.Logf("v2 on the BTS logs: IPS %.5f [%.5f, %.5f], SNIPS %.5f [%.5f, %.5f], DR %.5f [%.5f, %.5f], ESS %.0f",
		c2.IPS.Value, c2.IPS.Lower, c2.IPS.Upper, c2.SNIPS.Value, c2.SNIPS.Lower, c2.SNIPS.Upper, c2.DR.Value, c2.DR.Lower, c2.DR.Upper, c2.ESS)
	if rep2.Examples != 10000 || rep2.Champion != 1 && rep2.Champion != 2 {
		t.Errorf("eval --version 2: %d examples against champion v%d; want 10000", rep2.Examples, rep2.Champion)
	}
}
