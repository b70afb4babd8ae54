package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestFlagsBelongToTheirCommand checks that each command takes only its own
// flags and the common ones: a flag of another command is refused, naming
// it, before anything is read or connected; a command's own flags parse
// (the run then stops at the check of a ClickHouse DSN that cannot be
// valid, before any connection).
func TestFlagsBelongToTheirCommand(t *testing.T) {
	t.Parallel()
	const badDSN = "clickhouse://127.0.0.1:1/bad-name"
	for _, tc := range []struct {
		args []string
		want string // in the error
	}{
		// refused: another command's flag
		{[]string{"serve", "--now"}, "flag provided but not defined: -now"},
		{[]string{"serve", "--window", "3h"}, "flag provided but not defined: -window"},
		{[]string{"serve", "--embedded-kafka-port", "9999"}, "flag provided but not defined: -embedded-kafka-port"},
		{[]string{"ingest", "--model", "homepage"}, "flag provided but not defined: -model"},
		{[]string{"migrate", "--events", "10"}, "flag provided but not defined: -events"},
		{[]string{"migrate", "--json"}, "flag provided but not defined: -json"},
		{[]string{"sim", "--now"}, "flag provided but not defined: -now"},
		{[]string{"retrain", "--window", "3h"}, "flag provided but not defined: -window"},
		{[]string{"retrain", "--end"}, "flag provided but not defined: -end"},
		{[]string{"eval", "--now", "--model", "homepage", "--version", "2"}, "flag provided but not defined: -now"},
		{[]string{"models", "promote", "homepage", "--now"}, "flag provided but not defined: -now"},
		{[]string{"models", "list", "--window", "3h"}, "flag provided but not defined: -window"},
		{[]string{"models", "explain", "homepage", "--now"}, "flag provided but not defined: -now"},
		{[]string{"models", "explain", "homepage", "--top", "0"}, "--top must be at least 1"},
		{[]string{"dev", "--reproduce"}, "flag provided but not defined: -reproduce"},
		{[]string{"import", "--now", "--model", "homepage", "f.csv"}, "flag provided but not defined: -now"},
		{[]string{"import", "--window", "3h", "--model", "homepage", "f.csv"}, "flag provided but not defined: -window"},
		{[]string{"import", "--model", "homepage"}, "import needs --model NAME and at least one FILE"},
		{[]string{"eval", "--model", "homepage", "--version", "2", "--from", "yesterday"}, "--from \"yesterday\" is not an RFC 3339 time"},
		{[]string{"eval", "--model", "homepage", "--version", "2", "--to", "2019-12-01"}, "--to needs --from"},
		// accepted: the command's own flags and the common ones
		{[]string{"retrain", "--now", "--model", "homepage", "--json", "--clickhouse", badDSN}, "clickhouse.dsn"},
		{[]string{"retrain", "--reproduce", "--model", "homepage", "--version", "2", "--clickhouse", badDSN}, "clickhouse.dsn"},
		{[]string{"retrain", "--kafka", "127.0.0.1:1", "--clickhouse", badDSN}, "clickhouse.dsn"},
		{[]string{"eval", "--model", "homepage", "--version", "2", "--window", "3h", "--json", "--clickhouse", badDSN}, "clickhouse.dsn"},
		{[]string{"models", "promote", "homepage", "--version", "3", "--clickhouse", badDSN}, "clickhouse.dsn"},
		{[]string{"models", "canary", "homepage", "--end", "--clickhouse", badDSN}, "clickhouse.dsn"},
		{[]string{"models", "history", "homepage", "--json", "--clickhouse", badDSN}, "clickhouse.dsn"},
		{[]string{"models", "explain", "homepage", "--version", "2", "--top", "5", "--json", "--clickhouse", badDSN}, "clickhouse.dsn"},
		{[]string{"eval", "--explain", "ev-1", "--model", "homepage", "--json", "--clickhouse", badDSN}, "clickhouse.dsn"},
		{[]string{"dev", "--embedded-kafka-port", "0", "--addr", "127.0.0.1:0", "--clickhouse", badDSN}, "clickhouse.dsn"},
		{[]string{"serve", "--addr", "127.0.0.1:0", "--kafka", "127.0.0.1:1", "--clickhouse", badDSN}, "clickhouse.dsn"},
		{[]string{"ingest", "--kafka", "127.0.0.1:1", "--clickhouse", badDSN}, "clickhouse.dsn"},
		{[]string{"migrate", "--clickhouse", badDSN}, "clickhouse.dsn"},
		{[]string{"import", "--model", "homepage", "--mapping", "m.yaml", "--dry-run", "--max-errors", "3", "--quiet", "f.csv", "--clickhouse", badDSN}, "clickhouse.dsn"},
		{[]string{"eval", "--model", "homepage", "--version", "2", "--from", "2019-11-01", "--to", "2019-12-01T00:00:00Z", "--clickhouse", badDSN}, "clickhouse.dsn"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var out strings.Builder
			err := run(ctx, tc.args, func(string) string { return "" }, &out, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
