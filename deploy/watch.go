package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/kafka"
)

// Watch reads model events from the model-events topic, starting at its end,
// and calls fn for each, until ctx ends. Every caller sees every event (no
// consumer group). Undecodable events are logged and skipped.
func Watch(ctx context.Context, cfg kafka.Config, log *slog.Logger, fn func(flywheel.ModelEvent)) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r, err := kafka.NewTailReader(cfg, cfg.Topics().ModelEvents, kafkago.LastOffset)
	if err != nil {
		return err
	}
	defer r.Close()
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return fmt.Errorf("read model events: %w", err)
		}
		var e flywheel.ModelEvent
		if err := json.Unmarshal(m.Value, &e); err != nil || e.Model == "" {
			log.Warn("skipping undecodable model event", "offset", m.Offset, "err", err)
			continue
		}
		fn(e)
	}
}
