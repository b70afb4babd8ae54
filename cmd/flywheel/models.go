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

// modelsUsage is the error of `flywheel models` without a subcommand.
const modelsUsage = "models: list | show NAME | promote NAME --version N | rollback NAME | history NAME | canary NAME (--version N | --end) | explain NAME [--version N] [--top K] [--json]"

// modelArgs is what a models subcommand on one model was given.
type modelArgs struct {
	name    string
	version int  // --version
	end     bool // --end
	asJSON  bool // --json
}

func (e *env) models(ctx context.Context, args []string, ver int, end, asJSON bool) error {
	if len(args) == 0 {
		return errors.New(modelsUsage)
	}
	sub := args[0]
	// Only moves are published to Kafka; reading needs ClickHouse alone.
	p, err := e.connect(ctx, sub == "promote" || sub == "rollback" || sub == "canary")
	if err != nil {
		return err
	}
	defer p.Close()
	var run func(context.Context, *parts, modelArgs) error
	switch sub {
	case "list":
		return e.listModels(ctx, p)
	case "show":
		run = e.showModel
	case "history":
		run = e.modelHistory
	case "promote":
		run = e.promoteModel
	case "canary":
		run = e.canaryModel
	case "explain": // reached with flags before "explain"; --top only after it (explain.go)
		run = e.explainModel
	case "rollback":
		run = e.rollbackModel
	default:
		return fmt.Errorf("models: unknown subcommand %q", sub)
	}
	m := modelArgs{version: ver, end: end, asJSON: asJSON}
	if len(args) > 1 {
		m.name = args[1]
	}
	if m.name == "" {
		return fmt.Errorf("models %s needs a model name", sub)
	}
	return run(ctx, p, m)
}

// printJSON writes v to w as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// actor is who the registry records as moving an alias from the command
// line: "cli", with the user's name when $USER has it.
func (e *env) actor() string {
	if u := e.getenv("USER"); u != "" {
		return "cli:" + u
	}
	return "cli"
}

// listModels is `models list`: every configured model, in name order, with
// its champion and latest versions.
func (e *env) listModels(ctx context.Context, p *parts) error {
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
}

// showModel is `models show NAME`.
func (e *env) showModel(ctx context.Context, p *parts, m modelArgs) error {
	d, err := e.describeWithLift(ctx, p, m.name, 0)
	if err != nil {
		return err
	}
	return printJSON(e.stdout, d)
}

// modelHistory is `models history NAME [--json]`.
func (e *env) modelHistory(ctx context.Context, p *parts, m modelArgs) error {
	h, err := p.registry.History(ctx, m.name)
	if err != nil {
		return err
	}
	if m.asJSON {
		return printJSON(e.stdout, h)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tALIAS\tVERSION\tFROM\tACTOR\tREASON")
	for _, d := range h {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", d.Time.Format(time.RFC3339), d.Alias, d.Version, d.PreviousVersion, d.Actor, d.Reason)
	}
	return tw.Flush()
}

// promoteModel is `models promote NAME --version N`.
func (e *env) promoteModel(ctx context.Context, p *parts, m modelArgs) error {
	if m.version < 1 {
		return errors.New("models promote needs --version N")
	}
	if err := p.registry.Promote(ctx, m.name, m.version, e.actor(), "manual promotion from the CLI"); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: champion is now v%d\n", m.name, m.version)
	return nil
}

// canaryModel is `models canary NAME (--version N | --end)`.
func (e *env) canaryModel(ctx context.Context, p *parts, m modelArgs) error {
	if m.end {
		if err := p.registry.EndCanary(ctx, m.name, e.actor(), "ended from the CLI"); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s: canary ended\n", m.name)
		return nil
	}
	if m.version < 1 {
		return errors.New("models canary needs --version N or --end")
	}
	if err := p.registry.StartCanary(ctx, m.name, m.version, e.actor(), "started from the CLI"); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: v%d is the canary, with promote.canary.share of traffic\n", m.name, m.version)
	return nil
}

// explainModel is `models [--version N] [--json] explain NAME`, with the
// default --top.
func (e *env) explainModel(ctx context.Context, p *parts, m modelArgs) error {
	x, err := p.registry.Explain(ctx, m.name, m.version, defaultExplainTop)
	if err != nil {
		return err
	}
	if m.asJSON {
		return printJSON(e.stdout, x)
	}
	_, err = fmt.Fprint(e.stdout, x.String())
	return err
}

// rollbackModel is `models rollback NAME`.
func (e *env) rollbackModel(ctx context.Context, p *parts, m modelArgs) error {
	v, err := p.registry.Rollback(ctx, m.name, e.actor(), "manual rollback from the CLI")
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: champion is now v%d\n", m.name, v)
	return nil
}
