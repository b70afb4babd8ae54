package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/serve"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "flywheel.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Keys are configured as plain strings (as before), "label:key" or
// {label, key}, in the file and in FLYWHEEL_AUTH_*; the rate limits default
// to flywheel.DefaultRatePerKey and 0 turns them off.
func TestKeyForms(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, `
auth:
  app_keys: ["plain-app-key-0123456789", "shop:shop-app-key-0123456789"]
  admin_keys: [{label: alice, key: "alice-admin-key-0123456789"}]
limits: {rate_per_key: 0}
`)
	c, err := loadConfig(path, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	want := []serve.Key{{Secret: "plain-app-key-0123456789"}, {Label: "shop", Secret: "shop-app-key-0123456789"}}
	if got := serveKeys(c.Auth.AppKeys); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("app keys %+v, want %+v", got, want)
	}
	if got := c.Auth.AdminKeys; len(got) != 1 || got[0].Label != "alice" || got[0].Secret != "alice-admin-key-0123456789" {
		t.Fatalf("admin keys %+v", got)
	}
	if c.Limits.RatePerKey != 0 {
		t.Fatalf("rate_per_key: 0 became %v", c.Limits.RatePerKey)
	}
	env := map[string]string{"FLYWHEEL_AUTH_ADMIN_KEYS": "bob:bob-admin-key-0123456789, carol-admin-key-0123456789"}
	c, err = loadConfig("", func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if got := serveKeys(c.Auth.AdminKeys); len(got) != 2 || got[0] != (serve.Key{Label: "bob", Secret: "bob-admin-key-0123456789"}) || got[1] != (serve.Key{Secret: "carol-admin-key-0123456789"}) {
		t.Fatalf("keys from the environment %+v", got)
	}
	if c.Limits.RatePerKey != flywheel.DefaultRatePerKey || c.Limits.Burst != flywheel.DefaultBurst {
		t.Fatalf("default rate limits %v/%d", c.Limits.RatePerKey, c.Limits.Burst)
	}
}

// A malformed FLYWHEEL_* value is named by its variable, never shown; a bad
// log.level is an error naming the field.
func TestConfigErrorsNameFieldsNotValues(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-value-that-must-not-print"
	for name, tc := range map[string]struct {
		env  map[string]string
		file string
		want string
	}{
		"integer":               {env: map[string]string{"FLYWHEEL_LIMITS_MAX_ACTIONS": secret}, want: "FLYWHEEL_LIMITS_MAX_ACTIONS is not a valid integer"},
		"duration":              {env: map[string]string{"FLYWHEEL_HTTP_READ_TIMEOUT": secret}, want: "FLYWHEEL_HTTP_READ_TIMEOUT is not a valid duration"},
		"number":                {env: map[string]string{"FLYWHEEL_LIMITS_RATE_PER_KEY": secret}, want: "FLYWHEEL_LIMITS_RATE_PER_KEY is not a valid number"},
		"list":                  {env: map[string]string{"FLYWHEEL_AUTH_APP_KEYS": "[" + secret}, want: "FLYWHEEL_AUTH_APP_KEYS is not a valid list"},
		"log level":             {env: map[string]string{"FLYWHEEL_LOG_LEVEL": secret}, want: "log.level must be debug, info, warn or error"},
		"log level in the file": {file: "log: {level: loud}\n", want: "log.level must be debug, info, warn or error"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if tc.file != "" {
				path = writeConfig(t, tc.file)
			}
			_, err := loadConfig(path, func(k string) string { return tc.env[k] })
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), secret) {
				t.Fatalf("error %v, want one containing %q and not the value", err, tc.want)
			}
		})
	}
}

// serve and dev check their whole configuration before their first side
// effect: with nothing listening at the configured ClickHouse and Kafka, a
// bad configuration is refused at once, naming the field (connecting would
// have waited a minute, and migrated, created topics and registered a
// version first if the services were there).
func TestConfigIsCheckedBeforeAnySideEffect(t *testing.T) {
	t.Parallel()
	const dead = `
kafka: {brokers: ["127.0.0.1:1"]}
clickhouse: {dsn: "clickhouse://127.0.0.1:1/nowhere"}
`
	for name, tc := range map[string]struct {
		cmd, cfg, want string
	}{
		"serve without keys":       {"serve", dead, "auth.app_keys and auth.admin_keys are both empty"},
		"short key":                {"serve", dead + `auth: {app_keys: ["short"]}`, "auth.app_keys[0] is shorter than 16 characters"},
		"bad label":                {"serve", dead + `auth: {admin_keys: [{label: "a b", key: "0123456789abcdef"}]}`, "auth.admin_keys[0].label"},
		"negative in-flight limit": {"dev", dead + `limits: {max_in_flight: -1}`, "limits.max_in_flight must not be negative"},
		"negative read timeout":    {"dev", dead + `http: {read_timeout: -1s}`, "http.read_timeout must not be negative"},
		"bad broker":               {"ingest", `kafka: {brokers: ["nohostport"]}`, "kafka.brokers[0]"},
		"bad dsn":                  {"migrate", `clickhouse: {dsn: "clickhouse://127.0.0.1:1/bad-name"}`, "clickhouse.dsn"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			var out strings.Builder
			err := run(ctx, []string{tc.cmd, "--config", writeConfig(t, tc.cfg)}, func(string) string { return "" }, &out, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%s: error %v after %v, want one naming %q", tc.cmd, err, time.Since(start), tc.want)
			}
		})
	}
}
