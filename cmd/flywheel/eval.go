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
	return e.eval(ctx, *modelName, *ver, *window, *asJSON)
}

func (e *env) eval(ctx context.Context, name string, ver int, window time.Duration, asJSON bool) error {
	if name == "" || ver < 1 {
		return errors.New("eval needs --model NAME and --version N")
	}
	p, rt, err := e.offline(ctx)
	if err != nil {
		return err
	}
	defer p.Close()
	now := time.Now()
	rep, err := rt.Evaluate(ctx, name, ver, now.Add(-window), now)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(e.stdout).Encode(rep)
	}
	fmt.Fprint(e.stdout, rep.String())
	return nil
}
