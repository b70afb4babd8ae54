package main

import (
	"context"
	"fmt"
	"io"

	"github.com/flywheel-dev/flywheel/clickhouse"
)

// runMigrate is `flywheel migrate`: create or upgrade the ClickHouse schema.
func runMigrate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("migrate", getenv, stdout, stderr)
	if _, err := c.parse(args); err != nil {
		return err
	}
	e, err := c.env()
	if err != nil {
		return err
	}
	if err := clickhouse.Migrate(ctx, e.cfg.ClickHouse); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "database %s is at schema version %d\n", e.cfg.ClickHouse.Database(), clickhouse.SchemaVersion())
	return nil
}
