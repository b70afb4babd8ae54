package deploy

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/kafka"
)

// Watch reads model events from the model-events topic, starting at its end,
// and calls fn for each, until ctx ends. Every caller sees every event (no
// consumer group). Undecodable events are logged and skipped. While Kafka is
// unreachable it retries with backoff (serving replicas then learn of new
// versions by their registry poll); it returns nil when ctx ends.
func Watch(ctx context.Context, cfg kafka.Config, log *slog.Logger, fn func(flywheel.ModelEvent)) error {
	r, err := kafka.NewEventReader(cfg, false)
	if err != nil {
		return err
	}
	return watch(ctx, r, log, fn)
}

// WatchFrom is Watch from offset (kafka.EventsEnd), so that fn sees every
// event published after the offset was read.
func WatchFrom(ctx context.Context, cfg kafka.Config, offset int64, log *slog.Logger, fn func(flywheel.ModelEvent)) error {
	r, err := kafka.NewEventReaderAt(cfg, offset)
	if err != nil {
		return err
	}
	return watch(ctx, r, log, fn)
}

// watchPause is the pause after a failed read: short, since the reader
// paces its own retries, and not nothing, so that a reader failing at once
// and forever does not pin a core; watchErrorLogEvery bounds how often
// failed reads are logged.
const (
	watchPause         = 20 * time.Millisecond
	watchErrorLogEvery = 5 * time.Second
)

func watch(ctx context.Context, r *kafka.EventReader, log *slog.Logger, fn func(flywheel.ModelEvent)) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	defer r.Close()
	var failed int       // errors since the last logged
	var logged time.Time // when the last was
	for {
		e, err := r.Read(ctx)
		if err != nil && !errors.Is(err, kafka.ErrUndecodable) {
			if ctx.Err() != nil || errors.Is(err, context.Canceled) {
				return nil
			}
			// The reader paces its own retries; the errors it met while a
			// broker was away wait in its queue and are drained without
			// waiting again (a growing pause per error kept a replica from
			// seeing a promotion for minutes after a broker came back).
			failed++
			if now := time.Now(); now.Sub(logged) >= watchErrorLogEvery {
				log.Warn("reading model events failed; retrying", "errors", failed, "err", err)
				failed, logged = 0, now
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(watchPause):
			}
			continue
		}
		if err != nil {
			log.Warn("skipping undecodable model event", "err", err)
			continue
		}
		fn(e)
	}
}
