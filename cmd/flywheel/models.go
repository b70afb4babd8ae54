package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/flywheel-dev/flywheel/deploy"
)

// runModels is `flywheel models SUBCOMMAND`: the registry from the command
// line.
func runModels(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "explain" { // its own flags (--top): explain.go
		return runExplain(ctx, args[1:], getenv, stdout, stderr)
	}
	c := newCommand("models", getenv, stdout, stderr)
	ver := c.fs.Int("version", 0, "promote, canary: the version")
	end := c.fs.Bool("end", false, "canary: end the canary")
	asJSON := c.fs.Bool("json", false, "history: print JSON")
	rest, err := c.parse(args)
	if err != nil {
		return err
	}
	e, err := c.env()
	if err != nil {
		return err
	}
	return e.models(ctx, rest, *ver, *end, *asJSON)
}

// versionCell prints a version in a table: "-" for none.
func versionCell(v int) string {
	if v == 0 {
		return "-"
	}
	return strconv.Itoa(v)
}

func (e *env) models(ctx context.Context, args []string, ver int, end, asJSON bool) error {
	if len(args) == 0 {
		return errors.New("models: list | show NAME | promote NAME --version N | rollback NAME | history NAME | canary NAME (--version N | --end) | explain NAME [--version N] [--top K] [--json]")
	}
	// Only moves are published to Kafka; reading needs ClickHouse alone.
	p, err := e.connect(ctx, args[0] == "promote" || args[0] == "rollback" || args[0] == "canary")
	if err != nil {
		return err
	}
	defer p.Close()
	sub := args[0]
	name := ""
	if len(args) > 1 {
		name = args[1]
	}
	need := func() error {
		if name == "" {
			return fmt.Errorf("models %s needs a model name", sub)
		}
		return nil
	}
	out := func(v any) error {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	actor := "cli"
	if u := e.getenv("USER"); u != "" {
		actor += ":" + u
	}
	switch sub {
	case "list":
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "MODEL\tKIND\tCHAMPION\tLATEST")
		for _, name := range slices.Sorted(maps.Keys(e.cfg.Models)) {
			c, err := p.registry.Alias(ctx, name, deploy.Champion)
			if err != nil {
				return fmt.Errorf("models list: the champion of %s: %w", name, err)
			}
			l, err := p.registry.Latest(ctx, name)
			if err != nil {
				return fmt.Errorf("models list: the latest version of %s: %w", name, err)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, e.cfg.Models[name].Kind, versionCell(c), versionCell(l))
		}
		return tw.Flush()
	case "show":
		if err := need(); err != nil {
			return err
		}
		d, err := e.describeWithLift(ctx, p, name, 0)
		if err != nil {
			return err
		}
		return out(d)
	case "history":
		if err := need(); err != nil {
			return err
		}
		h, err := p.registry.History(ctx, name)
		if err != nil {
			return err
		}
		if asJSON {
			return out(h)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tALIAS\tVERSION\tFROM\tACTOR\tREASON")
		for _, d := range h {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", d.Time.Format(time.RFC3339), d.Alias, d.Version, d.PreviousVersion, d.Actor, d.Reason)
		}
		return tw.Flush()
	case "promote":
		if err := need(); err != nil {
			return err
		}
		if ver < 1 {
			return errors.New("models promote needs --version N")
		}
		if err := p.registry.Promote(ctx, name, ver, actor, "manual promotion from the CLI"); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s: champion is now v%d\n", name, ver)
		return nil
	case "canary":
		if err := need(); err != nil {
			return err
		}
		if end {
			if err := p.registry.EndCanary(ctx, name, actor, "ended from the CLI"); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s: canary ended\n", name)
			return nil
		}
		if ver < 1 {
			return errors.New("models canary needs --version N or --end")
		}
		if err := p.registry.StartCanary(ctx, name, ver, actor, "started from the CLI"); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s: v%d is the canary, with promote.canary.share of traffic\n", name, ver)
		return nil
	case "explain": // reached with flags before "explain"; --top only after it (explain.go)
		if err := need(); err != nil {
			return err
		}
		x, err := p.registry.Explain(ctx, name, ver, defaultExplainTop)
		if err != nil {
			return err
		}
		if asJSON {
			return out(x)
		}
		_, err = fmt.Fprint(e.stdout, x.String())
		return err
	case "rollback":
		if err := need(); err != nil {
			return err
		}
		v, err := p.registry.Rollback(ctx, name, actor, "manual rollback from the CLI")
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s: champion is now v%d\n", name, v)
		return nil
	}
	return fmt.Errorf("models: unknown subcommand %q", sub)
}
