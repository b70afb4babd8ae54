package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel/internal/testenv"
	"github.com/flywheel-dev/flywheel/retrain"
)

// Manual retrains go through the elected scheduler: the admin API of a
// `serve` process, which has no retrainer, and `retrain --now` get the
// report of a run that `flywheel retrain` made (recorded in retrain_runs
// by it); with no scheduler running, the API answers 503 naming the cause
// and `retrain --now` retrains itself, saying so.
func TestManualRetrainThroughTheElectedScheduler(t *testing.T) {
	kafkaAddr, chAddr := services(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	suffix := time.Now().UnixNano()
	db := fmt.Sprintf("elected_%d", suffix)
	addr := testenv.FreeAddr(t)
	url := "http://" + addr
	cfgText := fmt.Sprintf(`
kafka: {brokers: [%q], topic_prefix: "elected%d."}
clickhouse: {dsn: "clickhouse://%s/%s"}
auth: {app_keys: [%q], admin_keys: [%q]}
models:
  homepage:
    kind: ranker
    interactions: [[user, item]]
    retrain: {schedule: "@every 1h", min_new_examples: 10}
`, kafkaAddr, suffix, chAddr, db, e2eAppKey, e2eAdminKey)
	cfgPath := filepath.Join(t.TempDir(), "flywheel.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	stopScheduler := inProcess(t, ctx, "flywheel retrain", "retrain", "--config", cfgPath)
	defer stopScheduler()
	defer inProcess(t, ctx, "flywheel serve", "serve", "--config", cfgPath, "--addr", addr)()
	waitReady(t, ctx, url)
	conn := testDB(t, ctx, chAddr, db)

	// The scheduler answers once it is elected: until then the API says
	// that no scheduler answered.
	var code int
	var body []byte
	waitFor(t, ctx, "the elected scheduler to answer the admin API", func() bool {
		var err error
		code, body, err = postJSON(url+"/v1/models/homepage/retrain", e2eAdminKey, map[string]any{})
		return err == nil && code != http.StatusServiceUnavailable
	})
	var res retrain.Result
	if err := json.Unmarshal(body, &res); err != nil || code != http.StatusOK {
		t.Fatalf("retrain through serve: %d %s (%v)", code, body, err)
	}
	t.Logf("through serve's admin API: %s: %s (took %s)", res.Outcome, res.Reason, res.Took)
	if res.Outcome != retrain.Skipped || !strings.Contains(res.Reason, "new examples") || res.Took == "" {
		t.Fatalf("the scheduler's report: %+v", res)
	}
	var runs uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".retrain_runs WHERE model = 'homepage' AND outcome = 'skipped'").Scan(&runs); err != nil || runs == 0 {
		t.Fatalf("retrain_runs holds %d skipped runs (%v); want the scheduler's", runs, err)
	}

	now := func() (string, string, error) {
		var out, errOut bytes.Buffer
		err := run(ctx, []string{"retrain", "--config", cfgPath, "--now", "--model", "homepage", "--json"}, func(string) string { return "" }, &out, &errOut)
		return out.String(), errOut.String(), err
	}
	out, progress, err := now()
	if err != nil || !strings.Contains(progress, "run by the elected retrain scheduler") || !strings.Contains(out, `"outcome":"skipped"`) {
		t.Fatalf("retrain --now with a scheduler: %v\n%s\n%s", err, progress, out)
	}
	t.Logf("retrain --now: %s", strings.TrimSpace(out))

	stopScheduler()
	start := time.Now()
	code, body, err = postJSON(url+"/v1/models/homepage/retrain", e2eAdminKey, map[string]any{})
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(string(body), "flywheel retrain") {
		t.Fatalf("retrain through serve without a scheduler: %d %s %v", code, body, err)
	}
	t.Logf("without a scheduler, after %.1fs: %d %s", time.Since(start).Seconds(), code, body)
	out, progress, err = now()
	if err != nil || !strings.Contains(progress, "retraining here") || !strings.Contains(out, `"outcome":"skipped"`) {
		t.Fatalf("retrain --now without a scheduler: %v\n%s\n%s", err, progress, out)
	}
}
