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
// bootstraps and reads the registry. A wrong password or a missing
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
	flywheel := func(args ...string) (string, error) {
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
	out, err := flywheel("migrate")
	if err != nil || !strings.Contains(out, fmt.Sprintf("database %s is at schema version %d", db, clickhouse.SchemaVersion())) {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	out, err = flywheel("models", "list")
	if err != nil || !strings.Contains(out, "homepage  ranker") {
		t.Fatalf("models list: %v\n%s", err, out)
	}

	env["FLYWHEEL_CLICKHOUSE_PASSWORD"] = wrong
	for _, args := range [][]string{{"migrate"}, {"models", "show", "homepage"}} {
		if _, err := flywheel(args...); err == nil || !strings.Contains(err.Error(), "clickhouse.user and clickhouse.password") {
			t.Fatalf("%v with a wrong password: %v; want an error naming clickhouse.user and clickhouse.password", args, err)
		}
	}
	env["FLYWHEEL_CLICKHOUSE_PASSWORD"] = ""
	env["FLYWHEEL_CLICKHOUSE_PASSWORD_FILE"] = filepath.Join(t.TempDir(), "missing")
	if _, err := flywheel("models", "list"); err == nil || !strings.Contains(err.Error(), "clickhouse.password_file") {
		t.Fatalf("models list with a missing password file: %v; want an error naming clickhouse.password_file", err)
	}
}
