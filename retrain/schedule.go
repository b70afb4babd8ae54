package retrain

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/robfig/cron/v3"
)

// cronParser returns the parser of retrain schedules: five fields with an
// optional CRON_TZ= prefix, and descriptors such as @every 30s and @hourly.
// A function, not a package variable, so that nothing can change it.
func cronParser() cron.Parser {
	return cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
}

// ScheduleManual is the schedule of a model that is retrained only when
// asked (`flywheel retrain --now`, the admin API), e.g. by an orchestrator
// of the operators' own: the scheduler runs nothing for it on its own, but
// its elected instance still answers the requests.
const ScheduleManual = "manual"

// ParseSchedule checks a schedule spec (a cron spec or ScheduleManual); the
// error names the field.
func ParseSchedule(field, spec string) error {
	if spec == ScheduleManual {
		return nil
	}
	if _, err := cronParser().Parse(spec); err != nil {
		return fmt.Errorf("%s %q: %w", field, spec, err)
	}
	return nil
}

// Leader tells a scheduler whether it is the one that runs the schedules
// (*kafka.Elector is one).
type Leader interface {
	// Lead returns a context derived from ctx that is cancelled, with a
	// cause saying why (kafka.ErrNotLeader), as soon as this process stops
	// leading, and whether it leads now (if not, the context is already
	// cancelled). The caller calls the CancelFunc when done with the context.
	Lead(ctx context.Context) (context.Context, context.CancelFunc, bool)
}

// Schedule runs every configured model's retrain on its schedule until ctx
// ends. A panicking run is recovered and logged, and the scheduler goes on;
// a run still going when its next turn comes makes that turn skip. With an
// elector (ElectWith), only the elected scheduler runs the schedules, and a
// run's context ends when its scheduler loses the leadership.
func (r *Retrainer) Schedule(ctx context.Context) error {
	logger := cronLogger{r.log}
	// SkipIfStillRunning must wrap Recover, not the other way round: a panic
	// escaping SkipIfStillRunning's wrapper would keep its token, and every
	// later run would be skipped.
	c := cron.New(cron.WithParser(cronParser()), cron.WithChain(cron.SkipIfStillRunning(logger), cron.Recover(logger)))
	for name, mc := range r.models {
		name := name
		if mc.Retrain.Schedule == ScheduleManual {
			r.log.Info("retrain on request only", "model", name, "schedule", ScheduleManual)
			continue
		}
		if _, err := c.AddFunc(mc.Retrain.Schedule, func() {
			rctx := ctx
			if r.leader != nil {
				lctx, done, ok := r.leader.Lead(ctx)
				defer done()
				if !ok {
					r.log.Debug("scheduled retrain left to the elected scheduler", "model", name)
					return
				}
				rctx = lctx // ends when this process loses the leadership
			}
			if _, err := r.Run(rctx, name, nil); err != nil {
				r.log.Warn("scheduled retrain failed", "model", name, "err", err, "cause", context.Cause(rctx))
			}
		}); err != nil {
			return fmt.Errorf("models.%s.retrain.schedule %q: %w", name, mc.Retrain.Schedule, err)
		}
		r.log.Info("retrain scheduled", "model", name, "schedule", mc.Retrain.Schedule)
	}
	c.Start()
	<-ctx.Done()
	<-c.Stop().Done() // wait for running jobs
	r.answering.Wait()
	return nil
}

// cronLogger adapts slog to cron's logger.
type cronLogger struct{ log *slog.Logger }

func (l cronLogger) Info(msg string, kv ...any) { l.log.Debug("cron: "+msg, kv...) }
func (l cronLogger) Error(err error, msg string, kv ...any) {
	l.log.Error("cron: "+msg, append(kv, "err", err)...)
}
