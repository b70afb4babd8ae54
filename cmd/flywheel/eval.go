package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// runEval is `flywheel eval --model X --version N`: the offline evaluation
// of a version against the champion.
func runEval(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("eval", getenv, stdout, stderr)
	modelName := c.fs.String("model", "", "the model")
	ver := c.fs.Int("version", 0, "the version to evaluate")
	window := c.fs.Duration("window", 24*time.Hour, "judge on the closed examples of this last stretch of time")
	from := c.fs.String("from", "", "judge on the closed examples from this time (RFC 3339, or a date 2006-01-02), instead of --window; imported history is old")
	to := c.fs.String("to", "", "with --from: up to this time (default now)")
	asJSON := c.fs.Bool("json", false, "print JSON")
	explainID := c.fs.String("explain", "", "explain one decision's scores: its event id (with --model; --version N scores it with another version than the one that made it)")
	if _, err := c.parse(args); err != nil {
		return err
	}
	e, err := c.env()
	if err != nil {
		return err
	}
	if *explainID != "" {
		return e.explainDecision(ctx, *modelName, *explainID, *ver, *asJSON) // explain.go
	}
	now := time.Now()
	start, end := now.Add(-*window), now
	if *from != "" {
		if start, err = parseEvalTime("--from", *from); err != nil {
			return err
		}
	}
	if *to != "" {
		if *from == "" {
			return errors.New("--to needs --from")
		}
		if end, err = parseEvalTime("--to", *to); err != nil {
			return err
		}
	}
	if !start.Before(end) {
		return errors.New("--from must be before --to")
	}
	return e.eval(ctx, *modelName, *ver, start, end, *asJSON)
}

// parseEvalTime reads an RFC 3339 time or a date (UTC midnight).
func parseEvalTime(flag, s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%s %q is not an RFC 3339 time (2019-11-24T00:00:00Z) or a date (2019-11-24)", flag, s)
}

// eval evaluates version ver of name against the champion on the closed
// examples logged from from to to.
func (e *env) eval(ctx context.Context, name string, ver int, from, to time.Time, asJSON bool) error {
	if name == "" || ver < 1 {
		return errors.New("eval needs --model NAME and --version N")
	}
	p, rt, err := e.offline(ctx)
	if err != nil {
		return err
	}
	defer p.Close()
	rep, err := rt.Evaluate(ctx, name, ver, from, to)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(e.stdout).Encode(rep)
	}
	fmt.Fprint(e.stdout, rep.String())
	return nil
}
