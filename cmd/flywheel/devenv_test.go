package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flywheel-dev/flywheel/internal/testenv"
)

// devEnv is a `flywheel dev` of the default configuration on the real
// services, with its own address, database, topics and spool (set, with
// extra, through FLYWHEEL_* variables, as an operator would).
type devEnv struct {
	t      *testing.T
	ctx    context.Context
	url    string
	db     string
	conn   driver.Conn
	getenv func(string) string
}

// startDev starts it for the test's lifetime, named after prefix.
func startDev(t *testing.T, ctx context.Context, prefix string, extra map[string]string) *devEnv {
	t.Helper()
	kafkaAddr, chAddr := strings.Join(testenv.Kafka(t), ","), testenv.ClickHouse(t)
	suffix := time.Now().UnixNano()
	db := fmt.Sprintf("%s_%d", prefix, suffix)
	addr := testenv.FreeAddr(t)
	env := map[string]string{
		"FLYWHEEL_HTTP_ADDR":          addr,
		"FLYWHEEL_CLICKHOUSE_DSN":     fmt.Sprintf("clickhouse://%s/%s", chAddr, db),
		"FLYWHEEL_KAFKA_TOPIC_PREFIX": fmt.Sprintf("%s%d.", prefix, suffix),
		"FLYWHEEL_SERVE_SPOOL_DIR":    t.TempDir(),
		"FLYWHEEL_LOG_LEVEL":          "warn",
		// Runs only when a test asks: a cron tick (the default is every 15
		// minutes of the wall clock) landing inside a test would take the
		// examples its own `retrain --now` is to learn.
		"FLYWHEEL_MODELS_HOMEPAGE_RETRAIN_SCHEDULE": "manual",
	}
	for k, v := range extra {
		env[k] = v
	}
	d := &devEnv{t: t, ctx: ctx, url: "http://" + addr, db: db, getenv: func(k string) string { return env[k] }}
	var logs bytes.Buffer
	sw := &syncWriter{w: &logs}
	devCtx, stopDev := context.WithCancel(ctx)
	devDone := make(chan error, 1)
	go func() { devDone <- run(devCtx, []string{"dev", "--kafka", kafkaAddr}, d.getenv, sw, sw) }()
	t.Cleanup(func() {
		stopDev()
		if err := <-devDone; err != nil {
			t.Errorf("flywheel dev returned %v", err)
		}
		if t.Failed() {
			sw.mu.Lock()
			t.Logf("flywheel dev log:\n%s", logs.String())
			sw.mu.Unlock()
		}
	})
	waitReady(t, ctx, d.url)
	d.conn = testDB(t, ctx, chAddr, db)
	return d
}

// post sends body to path and decodes a 2xx answer into into (if not nil).
func (d *devEnv) post(path, body string, into any) {
	d.t.Helper()
	resp, err := http.Post(d.url+path, "application/json", strings.NewReader(body))
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		d.t.Fatalf("POST %s: %s", path, resp.Status)
	}
	if into != nil {
		if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
			d.t.Fatal(err)
		}
	}
}

// get decodes the answer to GET path into into.
func (d *devEnv) get(path string, into any) {
	d.t.Helper()
	resp, err := http.Get(d.url + path)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		d.t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		d.t.Fatal(err)
	}
}

// flywheel runs a command against this dev's configuration and returns
// what it printed.
func (d *devEnv) flywheel(args ...string) string {
	d.t.Helper()
	var buf bytes.Buffer
	out := &syncWriter{w: &buf}
	if err := run(d.ctx, args, d.getenv, out, out); err != nil {
		d.t.Fatalf("flywheel %s: %v\n%s", strings.Join(args, " "), err, buf.String())
	}
	return buf.String()
}
