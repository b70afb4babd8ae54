package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/deploy"
	"github.com/flywheel-dev/flywheel/internal/testenv"
	"github.com/flywheel-dev/flywheel/sim"
)

// chromium runs headless Chromium on url with the extra flags and returns
// what it printed.
func chromium(t *testing.T, ctx context.Context, url string, flags ...string) string {
	t.Helper()
	bin := os.Getenv("FLYWHEEL_TEST_CHROMIUM")
	if bin == "" {
		bin = "/usr/bin/chromium"
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("headless Chromium not found at %s (FLYWHEEL_TEST_CHROMIUM): `make test` installs Debian's chromium", bin)
	}
	cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=15000"}, flags...)
	out, err := exec.CommandContext(cctx, bin, append(args, url)...).Output()
	if err != nil {
		t.Fatalf("chromium %v: %v", flags, err)
	}
	return string(out)
}

// TestDashboardInBrowser starts the loop with the simulator, opens /ui in
// headless Chromium and checks that the charts and tables show the versions,
// reward rates, references and deployments that ClickHouse and the registry
// hold, then saves a screenshot as docs/dashboard.png.
func TestDashboardInBrowser(t *testing.T) {
	kafkaAddr, chAddr := services(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	suffix := time.Now().UnixNano()
	db := fmt.Sprintf("ui_%d", suffix)
	addr := testenv.FreeAddr(t)
	url := "http://" + addr
	cfgPath := filepath.Join(t.TempDir(), "flywheel.yaml")
	cfg := fmt.Sprintf(`
http: {addr: %q}
kafka: {brokers: [%q], topic_prefix: "ui%d.", partitions: 4}
clickhouse: {dsn: "clickhouse://%s/%s"}
ingest: {batch_wait: 200ms}
deploy: {check_interval: 500ms}
models:
  homepage:
    kind: ranker
    interactions: [[user, item]]
    exploration: {policy: epsilon-greedy, epsilon: 0.1}
    reward: {window: 1s, default: 0, aggregate: sum}
    retrain: {schedule: "@every 2s", window: 1h, holdout: 0.3, min_new_examples: 1000, passes: 2}
    promote: {policy: auto, min_improvement: 0.05, canary: {share: 0.3, duration: 3s, min_decisions: 150}}
`, addr, kafkaAddr, suffix, chAddr, db)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	defer inProcess(t, ctx, "flywheel dev", "dev", "--config", cfgPath)()
	waitReady(t, ctx, url)
	conn := testDB(t, ctx, chAddr, db)
	reg, err := deploy.NewRegistry(clickhouse.NewRegistry(conn, db), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}

	// Traffic until a retrained version went through its canary and became
	// the champion, then a last round served by it.
	// Which version that is depends on the machine's speed: a canary whose
	// decisions do not close in time ends for too little data, and the next
	// candidate goes through its own canary.
	var last *sim.Result
	promoted := 0
	for i := 0; ; i++ {
		if champ, _ := reg.Alias(ctx, "homepage", deploy.Champion); champ >= 2 {
			promoted = champ
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no promoted version after %d rounds", i)
		}
		if last, err = sim.Run(ctx, sim.Config{URL: url, Events: 1000, Rate: 500, Seed: 7, PublishReferences: true}); err != nil || last.Errors != 0 {
			t.Fatalf("simulator: %v, %+v", err, last)
		}
	}
	if last, err = sim.Run(ctx, sim.Config{URL: url, Events: 1000, Rate: 500, Seed: 7, PublishReferences: true}); err != nil || last.Errors != 0 || last.ReferencesError != "" {
		t.Fatalf("simulator: %v, %+v", err, last)
	}

	// Wait until every decision is ingested and its reward window closed,
	// so that what the page shows and what ClickHouse holds stay equal.
	sent := 0
	waitFor(t, ctx, "every decision to be a closed example", func() bool {
		var n uint64
		if conn.QueryRow(ctx, "SELECT count() FROM "+db+".examples").Scan(&n) != nil {
			return false
		}
		var d uint64
		if conn.QueryRow(ctx, "SELECT uniqExact(event_id) FROM "+db+".decisions").Scan(&d) != nil {
			return false
		}
		sent = int(d)
		return n == d && d > 0
	})
	type want struct {
		decisions uint64
		rate      float64
	}
	expect := map[string]want{}
	rows, err := conn.Query(ctx, "SELECT version, variant, count(), avg(reward) FROM "+db+".examples GROUP BY version, variant")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var (
			v       uint32
			variant string
			w       want
		)
		if err := rows.Scan(&v, &variant, &w.decisions, &w.rate); err != nil {
			t.Fatal(err)
		}
		expect[fmt.Sprintf("v%d-%s", v, variant)] = w
	}
	rows.Close()
	for _, k := range []string{"v1-champion", fmt.Sprintf("v%d-canary", promoted), fmt.Sprintf("v%d-champion", promoted)} {
		if _, ok := expect[k]; !ok {
			t.Fatalf("ClickHouse has no %s decisions: %v", k, expect)
		}
	}

	dom := chromium(t, ctx, url+"/ui/", "--dump-dom")
	if !strings.Contains(dom, `data-state="ready"`) {
		t.Fatalf("the dashboard did not render:\n%s", dom[:min(len(dom), 3000)])
	}
	// The status strip shows the window's late feedback.
	late := regexp.MustCompile(`data-stat="late-feedback"[^>]*><div class="label">late feedback</div><div class="value">([^<]*)</div>`).FindStringSubmatch(dom)
	if late == nil || !regexp.MustCompile(`^(none|\d+ \(\d+\.\d%\), \d+ rescored)$`).MatchString(late[1]) {
		t.Errorf("the dashboard's late feedback: %q", late)
	}
	// Legend items carry the figures each line is drawn from.
	item := regexp.MustCompile(`data-series="(v\d+-[a-z]+)" data-version="\d+" data-variant="[a-z]+" data-rate="([0-9.]+)" data-decisions="(\d+)"`)
	shown := map[string]string{}
	for _, m := range item.FindAllStringSubmatch(dom, -1) {
		shown[m[1]] = m[2] + " " + m[3]
	}
	for k, w := range expect {
		if got, wantText := shown[k], fmt.Sprintf("%.3f %d", w.rate, w.decisions); got != wantText {
			t.Errorf("%s: the dashboard shows %q, ClickHouse holds %q", k, got, wantText)
		}
		if !strings.Contains(dom, `<path d="M`) || !strings.Contains(dom, `data-series="`+k+`"></path>`) {
			t.Errorf("no line drawn for %s", k)
		}
	}
	for _, ref := range []struct {
		name string
		v    float64
	}{{"random", last.RandomRewardRate}, {"oracle", last.OracleRewardRate}} {
		if s := fmt.Sprintf(`data-reference="%s" data-rate="%.3f"`, ref.name, ref.v); !strings.Contains(dom, s) {
			t.Errorf("reference %s %.3f from the simulator is not shown", ref.name, ref.v)
		}
	}
	for _, marker := range []string{`data-marker="canary_started-2"`, `data-marker="promoted-2"`} {
		if !strings.Contains(dom, marker) {
			t.Errorf("no %s on the time axis", marker)
		}
	}
	if !strings.Contains(dom, `data-run="canary"`) || !regexp.MustCompile(`<span class="badge champion">champion</span>`).MatchString(dom) {
		t.Errorf("the retrain run that started the canary or the champion badge is missing")
	}
	// The champion's top effects by their readable names, and its features
	// as live traffic carries them beside its training window.
	if !regexp.MustCompile(`data-name="user\^segment=[^" ]+ \* item\^`).MatchString(dom) {
		t.Errorf("the explanation panel shows no segment × item cross")
	}
	if !strings.Contains(dom, `data-feature="user^segment" data-presence="1.000" data-training-presence="1.000" data-missing="false"`) {
		t.Errorf("the feature health panel does not show user^segment in every decision, live and in training: %q, note %q",
			regexp.MustCompile(`<tr[^>]*data-feature="user\^segment"[^>]*>`).FindString(dom), regexp.MustCompile(`id="features-note">[^<]*`).FindString(dom))
	}
	t.Logf("dashboard shows %d series matching ClickHouse (%d decisions): %v; references random %.3f oracle %.3f",
		len(expect), sent, shown, last.RandomRewardRate, last.OracleRewardRate)

	shot, err := filepath.Abs(filepath.Join("..", "..", "docs", "dashboard.png"))
	if err != nil {
		t.Fatal(err)
	}
	chromium(t, ctx, url+"/ui/", "--window-size=1400,2000", "--screenshot="+shot)
	if st, err := os.Stat(shot); err != nil || st.Size() < 20000 {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	t.Logf("screenshot saved to %s", shot)
}
