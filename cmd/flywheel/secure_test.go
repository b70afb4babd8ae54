package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/internal/testenv"
)

// The commands work against a ClickHouse that takes TLS and a password,
// configured by the environment: migrate creates the schema, models list
// bootstraps and reads the registry, import logs decisions and feedback to
// Kafka and ingest writes them to ClickHouse. A wrong password or a missing
// password file fails at start naming the setting; no output, log or error
// shows a password.
func TestCommandsOverTLSWithAPassword(t *testing.T) {
	t.Parallel()
	s := testenv.ClickHouseSecure(t)
	b, err := os.ReadFile(s.PasswordFile)
	if err != nil {
		t.Fatal(err)
	}
	pw := strings.TrimSpace(string(b))
	const wrong = "wrong-password-9b8a"
	db := fmt.Sprintf("e2e_tls_%d", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	t.Cleanup(func() {
		conn, err := clickhouse.Open(context.Background(), clickhouse.Config{DSN: "clickhouse://" + s.Addr + "/default", User: s.User,
			PasswordFile: s.PasswordFile, TLS: flywheel.TLSConfig{CAFile: s.CAFile}})
		if err == nil {
			conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
			conn.Close()
		}
	})
	env := map[string]string{
		"FLYWHEEL_CLICKHOUSE_DSN":         "clickhouse://" + s.Addr + "/" + db,
		"FLYWHEEL_CLICKHOUSE_USER":        s.User,
		"FLYWHEEL_CLICKHOUSE_PASSWORD":    pw,
		"FLYWHEEL_CLICKHOUSE_TLS_CA_FILE": s.CAFile,
		"FLYWHEEL_LOG_LEVEL":              "debug",
	}
	cli := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(ctx, args, func(k string) string { return env[k] }, &out, &out)
		shown := out.String()
		if err != nil {
			shown += err.Error()
		}
		if strings.Contains(shown, pw) || strings.Contains(shown, wrong) {
			t.Fatalf("flywheel %s shows a password:\n%s", strings.Join(args, " "), shown)
		}
		return out.String(), err
	}
	out, err := cli("migrate")
	if err != nil || !strings.Contains(out, fmt.Sprintf("database %s is at schema version %d", db, clickhouse.SchemaVersion())) {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	out, err = cli("models", "list")
	if err != nil || !strings.Contains(out, "homepage  ranker") {
		t.Fatalf("models list: %v\n%s", err, out)
	}
	env["FLYWHEEL_KAFKA_BROKERS"] = strings.Join(testenv.Kafka(t), ",")
	env["FLYWHEEL_KAFKA_TOPIC_PREFIX"] = db + "."
	ingestOverTLS(t, ctx, cli, env, s, db)

	env["FLYWHEEL_CLICKHOUSE_PASSWORD"] = wrong
	for _, args := range [][]string{{"migrate"}, {"models", "show", "homepage"}, {"ingest"}} {
		if _, err := cli(args...); err == nil || !strings.Contains(err.Error(), "clickhouse.user and clickhouse.password") {
			t.Fatalf("%v with a wrong password: %v; want an error naming clickhouse.user and clickhouse.password", args, err)
		}
	}
	env["FLYWHEEL_CLICKHOUSE_PASSWORD"] = ""
	env["FLYWHEEL_CLICKHOUSE_PASSWORD_FILE"] = filepath.Join(t.TempDir(), "missing")
	if _, err := cli("models", "list"); err == nil || !strings.Contains(err.Error(), "clickhouse.password_file") {
		t.Fatalf("models list with a missing password file: %v; want an error naming clickhouse.password_file", err)
	}
}

// ingestOverTLS imports two decisions and their feedback (to Kafka) and
// runs ingest until ClickHouse, read over TLS, has them; ingest's log
// shows no password (flywheel checks what it returns).
func ingestOverTLS(t *testing.T, ctx context.Context, cli func(...string) (string, error), env map[string]string, s testenv.SecureClickHouse, db string) {
	t.Helper()
	lines := filepath.Join(t.TempDir(), "history.jsonl")
	if err := os.WriteFile(lines, []byte(`{"event_id":"tls1","ts":"2026-01-02T00:00:00Z","kind":"ranker","context":{"user":{"age":3}},"actions":[{"id":"x"},{"id":"y"}],"probabilities":[0.25,0.75],"chosen_index":1}
{"event_id":"tls2","ts":"2026-01-02T00:01:00Z","kind":"ranker","context":{},"actions":[{"id":"x"},{"id":"y"}],"probabilities":[0.5,0.5],"chosen_index":0}
{"event_id":"tls1","ts":"2026-01-02T00:00:05Z","reward":1}
{"event_id":"tls2","ts":"2026-01-02T00:01:05Z","reward":0.5}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := cli("import", "--model", "homepage", "--quiet", lines); err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	ingCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	var ingLog syncWriter
	ingLog.w = &bytes.Buffer{}
	go func() {
		done <- run(ingCtx, []string{"ingest"}, func(k string) string { return env[k] }, &ingLog, &ingLog)
	}()
	conn, err := clickhouse.Open(ctx, clickhouse.Config{DSN: "clickhouse://" + s.Addr + "/" + db, User: s.User, PasswordFile: s.PasswordFile,
		TLS: flywheel.TLSConfig{CAFile: s.CAFile}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var decisions, feedback uint64
	var reward float64
	waitFor(t, ctx, "the imported decisions and feedback in ClickHouse", func() bool {
		err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".decisions FINAL WHERE event_id IN ('tls1', 'tls2')").Scan(&decisions)
		if err == nil {
			err = conn.QueryRow(ctx, "SELECT count(), sum(reward) FROM "+db+".feedback FINAL WHERE event_id IN ('tls1', 'tls2')").Scan(&feedback, &reward)
		}
		return err == nil && decisions >= 2 && feedback >= 2
	})
	stop()
	if err := <-done; err != nil {
		t.Fatalf("ingest: %v", err)
	}
	if decisions != 2 || feedback != 2 || reward != 1.5 {
		t.Fatalf("ingested %d decisions and %d feedback with reward %v; want 2, 2 and 1.5", decisions, feedback, reward)
	}
	ingLog.mu.Lock()
	defer ingLog.mu.Unlock()
	if log := ingLog.w.(*bytes.Buffer).String(); strings.Contains(log, env["FLYWHEEL_CLICKHOUSE_PASSWORD"]) {
		t.Fatalf("ingest's log shows the password:\n%s", log)
	}
}
