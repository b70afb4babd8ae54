package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/flywheel-dev/flywheel/sim"
)

// runSim is `flywheel sim`: the simulated product app, a client of the
// HTTP API. It reads no configuration, so it takes none of the common
// flags.
func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:8080", "Flywheel's base URL")
	events := fs.Int("events", 1000, "decisions to ask for")
	model := fs.String("model", "homepage", "ranker to call")
	conc := fs.Int("concurrency", 4, "parallel simulated users")
	rate := fs.Float64("rate", 0, "events per second (0: as fast as possible)")
	seed := fs.Uint64("seed", 1, "seed of the ground truth")
	world := fs.String("world", sim.Default, "the simulated product: "+strings.Join(sim.Worlds(), ", "))
	key := fs.String("key", "", "app API key")
	asJSON := fs.Bool("json", false, "print one JSON line")
	refs := fs.Bool("references", true, "store the random and oracle reward rates as the model's references (drawn by the dashboard; needs an admin --key when the API has keys)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	res, err := sim.Run(ctx, sim.Config{URL: strings.TrimRight(*url, "/"), Model: *model, Events: *events, Concurrency: *conc, Rate: *rate, Seed: *seed, World: *world, APIKey: *key, PublishReferences: *refs})
	if err != nil {
		return err
	}
	if res.ReferencesError != "" {
		fmt.Fprintf(stderr, "sim: the references were not stored: %s\n", res.ReferencesError)
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	printSim(stdout, res)
	return nil
}

func printSim(w io.Writer, r *sim.Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\tdecisions\treward rate\t± s.e.\t")
	for _, v := range r.Versions {
		fmt.Fprintf(tw, "model v%d\t%d\t%.3f\t%.3f\t\n", v.Version, v.Decisions, v.RewardRate, v.StdErr)
	}
	fmt.Fprintf(tw, "random (same contexts)\t%d\t%.3f\t\t\n", r.Events, r.RandomRewardRate)
	fmt.Fprintf(tw, "oracle (same contexts)\t%d\t%.3f\t\t\n", r.Events, r.OracleRewardRate)
	tw.Flush()
	if r.Errors > 0 {
		fmt.Fprintf(w, "%d requests failed\n", r.Errors)
	}
}
