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

func watch(ctx context.Context, r *kafka.EventReader, log *slog.Logger, fn func(flywheel.ModelEvent)) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	defer r.Close()
	backoff := 100 * time.Millisecond
	for {
		e, err := r.Read(ctx)
		if err != nil && !errors.Is(err, kafka.ErrUndecodable) {
			if ctx.Err() != nil || errors.Is(err, context.Canceled) {
				return nil
			}
			log.Warn("reading model events failed; retrying", "retry_in", backoff, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if err != nil {
			log.Warn("skipping undecodable model event", "err", err)
			continue
		}
		fn(e)
	}
}
