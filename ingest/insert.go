package ingest

import (
	"context"
	"fmt"
	"time"

	"github.com/flywheel-dev/flywheel"
)

const decisionColumns = `event_id, ts, ts_ms, model, kind, version, variant,
	context_names, context_values, context_numbers, action_ids, probabilities,
	chosen, chosen_index, chosen_probability, chosen_names, chosen_values, chosen_numbers,
	explored, score, reward_window_s, reward_default, reward_aggregate,
	context_json, actions_json, ingested_at`

func (in *Ingester) insertDecisions(ctx context.Context, rows []*row) error {
	start := time.Now()
	b, err := in.conn.PrepareBatch(ctx, "INSERT INTO "+in.db+".decisions ("+decisionColumns+")")
	if err != nil {
		return fmt.Errorf("prepare decisions batch: %w", err)
	}
	now := in.now().UTC()
	for _, r := range rows {
		d := &r.d
		explored := uint8(0)
		if d.Explored {
			explored = 1
		}
		err := b.Append(d.EventID, d.Time, uint64(d.Time.UnixMilli()), d.Model, d.Kind, uint32(d.Version), d.Variant,
			r.ctxNames, r.ctxValues, r.ctxNumbers, r.actionIDs, d.Probabilities,
			d.Chosen, uint16(d.ChosenIndex), r.chosenProbability, r.chNames, r.chValues, r.chNumbers,
			explored, d.Score, uint32(d.Reward.WindowSeconds), d.Reward.Default, d.Reward.Aggregate,
			r.ctxJSON, r.actJSON, now)
		if err != nil {
			b.Abort()
			return fmt.Errorf("append decision %s: %w", d.EventID, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert decisions batch: %w", err)
	}
	in.rows.WithLabelValues("decisions").Add(float64(len(rows)))
	in.batches.WithLabelValues("decisions").Observe(time.Since(start).Seconds())
	return nil
}

func (in *Ingester) insertFeedback(ctx context.Context, fs []*flywheel.Feedback) error {
	start := time.Now()
	b, err := in.conn.PrepareBatch(ctx, "INSERT INTO "+in.db+".feedback (event_id, feedback_id, ts, ts_ms, reward, type, ingested_at)")
	if err != nil {
		return fmt.Errorf("prepare feedback batch: %w", err)
	}
	now := in.now().UTC()
	for _, f := range fs {
		if err := b.Append(f.EventID, f.FeedbackID, f.Time, uint64(f.Time.UnixMilli()), f.Reward, f.Type, now); err != nil {
			b.Abort()
			return fmt.Errorf("append feedback %s: %w", f.FeedbackID, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert feedback batch: %w", err)
	}
	in.rows.WithLabelValues("feedback").Add(float64(len(fs)))
	in.batches.WithLabelValues("feedback").Observe(time.Since(start).Seconds())
	return nil
}

func flat(f flywheel.Features) (names, values []string, numbers []float64) {
	fl := f.Flatten()
	names, values, numbers = make([]string, len(fl)), make([]string, len(fl)), make([]float64, len(fl))
	for i, x := range fl {
		names[i], values[i], numbers[i] = x.Name, x.Value, x.Number
	}
	return names, values, numbers
}
