package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// `flywheel backtest` plays every world through every setting (the product
// of its list flags) and prints a table, or JSON.
func TestBacktestCommand(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	noenv := func(string) string { return "" }
	var out, errs bytes.Buffer
	args := []string{"backtest", "--world", "homepage,shop", "--decisions", "3000", "--every", "1000", "--final", "1000",
		"--schedule", "500;@every 10s", "--rule", "non-inferior,superior", "--exploration", "squarecb", "--json"}
	if err := run(ctx, args, noenv, &out, &errs); err != nil {
		t.Fatalf("%v\n%s", err, errs.String())
	}
	var got struct {
		Worlds []struct {
			World string `json:"world"`
			Runs  []struct {
				Setting struct{ Schedule, Rule string }
				Result  struct {
					Windows []struct{ From, To int }
					Runs    []struct{ Outcome string }
				}
				Final struct{ From, To int }
			}
		}
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(got.Worlds) != 2 || got.Worlds[1].World != "shop" || len(got.Worlds[0].Runs) != 4 {
		t.Fatalf("worlds: %+v", got.Worlds)
	}
	r := got.Worlds[0].Runs[0]
	if r.Setting.Schedule != "500" || len(r.Result.Windows) != 3 || len(r.Result.Runs) != 5 || r.Final.From != 2000 {
		t.Errorf("first setting: %+v", r)
	}
	out.Reset()
	if err := run(ctx, []string{"backtest", "--decisions", "2000", "--every", "1000"}, noenv, &out, &errs); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"world homepage", "A: schedule @every 20s, rule non-inferior, margin 0.05, exploration squarecb, training full", "1000–2000", "final 0–2000", "% of oracle", "promoted/runs"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, out.String())
		}
	}
	for _, bad := range [][]string{
		{"--world", "moon"}, {"--rule", "better"}, {"--margin", "x"}, {"--exploration", "thompson"},
		{"--exploration", "epsilon-greedy:2"}, {"--training", "partial"}, {"--schedule", "sometimes"}, {"--schedule", "0"}, {"--decisions", "0"}, {"extra"},
	} {
		if err := run(ctx, append([]string{"backtest", "--decisions", "100"}, bad...), noenv, &out, &errs); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}
