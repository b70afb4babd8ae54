package ingest

import (
	"context"
	"fmt"
	"time"

	"github.com/bytedance/sonic"

	"github.com/flywheel-dev/flywheel"
)

const decisionColumns = `event_id, ts, ts_ms, model, kind, version, variant,
	context_names, context_values, context_numbers, action_ids, probabilities,
	chosen, chosen_index, chosen_probability, chosen_names, chosen_values, chosen_numbers,
	explored, score, reward_window_s, reward_default, reward_aggregate,
	context_json, actions_json, ingested_at`

func (in *Ingester) insertDecisions(ctx context.Context, ds []*flywheel.Decision) error {
	start := time.Now()
	b, err := in.conn.PrepareBatch(ctx, "INSERT INTO "+in.db+".decisions ("+decisionColumns+")")
	if err != nil {
		return fmt.Errorf("prepare decisions batch: %w", err)
	}
	now := in.now().UTC()
	for _, d := range ds {
		cn, cv, cnum := flat(d.Context)
		ids := make([]string, len(d.Actions))
		for i, a := range d.Actions {
			ids[i] = a.ID
		}
		var chn, chv []string
		var chnum []float64
		chosenP := 0.0
		if d.Kind == flywheel.KindRanker && d.ChosenIndex < len(d.Actions) {
			chn, chv, chnum = flat(d.Actions[d.ChosenIndex].Features)
			chosenP = d.Probabilities[d.ChosenIndex]
		}
		ctxJSON, _ := sonic.Marshal(d.Context)
		actJSON, _ := sonic.Marshal(d.Actions)
		probs := d.Probabilities
		if probs == nil {
			probs = []float64{}
		}
		explored := uint8(0)
		if d.Explored {
			explored = 1
		}
		err := b.Append(d.EventID, d.Time, uint64(d.Time.UnixMilli()), d.Model, d.Kind, uint32(d.Version), d.Variant,
			cn, cv, cnum, ids, probs,
			d.Chosen, uint16(d.ChosenIndex), chosenP, chn, chv, chnum,
			explored, d.Score, uint32(d.Reward.WindowSeconds), d.Reward.Default, d.Reward.Aggregate,
			string(ctxJSON), string(actJSON), now)
		if err != nil {
			b.Abort()
			return fmt.Errorf("append decision %s: %w", d.EventID, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert decisions batch: %w", err)
	}
	in.rows.WithLabelValues("decisions").Add(float64(len(ds)))
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
