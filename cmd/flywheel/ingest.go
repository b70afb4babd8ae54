package main

import (
	"context"
	"io"
)

// runIngest is `flywheel ingest`: Kafka → ClickHouse.
func runIngest(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("ingest", getenv, stdout, stderr)
	if _, err := c.parse(args); err != nil {
		return err
	}
	e, err := c.env()
	if err != nil {
		return err
	}
	p, err := e.connect(ctx, true)
	if err != nil {
		return err
	}
	defer p.Close()
	in, err := e.newIngester(p, e.log)
	if err != nil {
		return err
	}
	return in.Run(ctx)
}
