// Command flywheel runs Flywheel: `flywheel dev` runs the whole loop in one
// process; serve, ingest and retrain run its parts; models, migrate and sim
// are tools. main only dispatches: each command is in its own file with its
// own FlagSet (wire.go holds what they share), and every component lives in
// its own package.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/gin-gonic/gin"

	"github.com/flywheel-dev/flywheel"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		// No longer caught: a second SIGINT or SIGTERM takes its default
		// action and ends the process at once, whatever shutdown awaits.
		stop()
	}()
	gin.SetMode(gin.ReleaseMode)
	tuneGC(os.Getenv)
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		msg := err.Error()
		if flywheel.ErrorCode(err) != flywheel.EINTERNAL {
			msg = flywheel.ErrorMessage(err)
		}
		fmt.Fprintln(os.Stderr, "flywheel:", msg)
		os.Exit(1)
	}
}

const usage = `usage: flywheel COMMAND [flags]

commands:
  dev        everything in one process (embedded Kafka-protocol broker unless --kafka)
  serve      the HTTP API
  ingest     Kafka → ClickHouse
  retrain    the retrain scheduler; --now --model X runs once;
             --reproduce --model X --version N rebuilds a version and compares
  models     list | show X | promote X --version N | rollback X | history X |
             canary X --version N | canary X --end |
             explain X [--version N] [--top K] [--json]: the largest weights, named
  eval       --model X --version N [--window 24h | --from T --to T] [--json]: offline evaluation against the champion
             --explain EVENT_ID --model X [--version N]: one decision's scores, term by term
  import     --model X [--mapping MAP.yaml] FILE...: historical decisions and feedback (JSON lines
             in the topics' schema, or CSV with a column mapping) through Kafka; again is harmless
  migrate    create or upgrade the ClickHouse schema
  sim        the simulated product app: --url URL --events N [--world NAME] [--json]
  backtest   a simulated world through the learner, schedule and promotion rule in
             virtual time, in process: --world --schedule --rule --margin --exploration
             (lists) [--decisions N] [--json]
  version    print the version

common flags: --config FILE --addr HOST:PORT --kafka BROKERS --clickhouse DSN
`

// gcPercent is the garbage collector's target unless GOGC says otherwise:
// decoding requests allocates, the live heap is small (tens of MiB), and
// collecting four times less often halves the median latency of /v1/rank
// under load on a 2-core machine. GOMEMLIMIT, when set, still bounds memory.
const gcPercent = 400

func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

// run runs the command args[0] with the rest of args; a flag the command
// does not take is an error naming it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "version", "--version":
		return runVersion(stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "dev":
		return runDev(ctx, args, getenv, stdout, stderr)
	case "serve":
		return runServe(ctx, args, getenv, stdout, stderr)
	case "ingest":
		return runIngest(ctx, args, getenv, stdout, stderr)
	case "retrain":
		return runRetrain(ctx, args, getenv, stdout, stderr)
	case "models":
		return runModels(ctx, args, getenv, stdout, stderr)
	case "eval":
		return runEval(ctx, args, getenv, stdout, stderr)
	case "import":
		return runImport(ctx, args, getenv, stdout, stderr)
	case "migrate":
		return runMigrate(ctx, args, getenv, stdout, stderr)
	case "sim":
		return runSim(ctx, args, stdout, stderr)
	case "backtest":
		return runBacktest(ctx, args, getenv, stdout, stderr)
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}
