package retrain

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"math"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/bytedance/sonic"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

// Training sets are streamed from ClickHouse, never held in memory: each
// pass over the training window and the holdout is one query read block by
// block, so memory stays flat as the data grows.

// scanBlockRows bounds the rows ClickHouse sends per block, and so what one
// block of examples (20 actions of JSON each) costs in memory here.
const scanBlockRows = 2048

// window is the closed examples of a model to learn from: [fromMs, toMs],
// the holdout being those at or after holdFrom.
type window struct {
	fromMs, toMs    uint64
	rows, trainRows int
	holdFrom        uint64
}

// window sizes the closed examples of name in [fromMs, toMs] and puts the
// newest holdout share of them in the holdout, cutting by time so that the
// examples of one millisecond stay on one side.
func (r *Retrainer) window(ctx context.Context, name string, fromMs, toMs uint64, holdout float64) (window, error) {
	w := window{fromMs: fromMs}
	var n, lo, hi uint64
	if err := r.conn.QueryRow(ctx, `SELECT count(), min(ts_ms), max(ts_ms) FROM `+r.db+`.examples
		WHERE model = ? AND kind = 'ranker' AND ts_ms >= ? AND ts_ms <= ?`, name, fromMs, toMs).Scan(&n, &lo, &hi); err != nil {
		return w, fmt.Errorf("size the training window of %s: %w", name, err)
	}
	if n == 0 {
		return w, nil
	}
	w.fromMs, w.toMs, w.rows = lo, hi, int(n) // later examples are for the next run
	cut := uint64(float64(n) * (1 - holdout))
	if cut >= n {
		w.holdFrom, w.trainRows = math.MaxUint64, int(n)
		return w, nil
	}
	if err := r.conn.QueryRow(ctx, `SELECT ts_ms FROM `+r.db+`.examples
		WHERE model = ? AND kind = 'ranker' AND ts_ms >= ? AND ts_ms <= ? ORDER BY ts_ms LIMIT 1 OFFSET ?`,
		name, w.fromMs, w.toMs, cut).Scan(&w.holdFrom); err != nil {
		return w, fmt.Errorf("find the holdout cut of %s: %w", name, err)
	}
	var train uint64
	if err := r.conn.QueryRow(ctx, `SELECT count() FROM `+r.db+`.examples
		WHERE model = ? AND kind = 'ranker' AND ts_ms >= ? AND ts_ms < ?`, name, w.fromMs, w.holdFrom).Scan(&train); err != nil {
		return w, fmt.Errorf("count the training rows of %s: %w", name, err)
	}
	w.trainRows = int(train)
	return w, nil
}

// scan calls fn with every closed example of name with fromMs <= ts_ms <=
// toMs, oldest first (ties by event id). Examples that cannot be decoded are
// logged and skipped. fn must not keep the example.
func (r *Retrainer) scan(ctx context.Context, name string, fromMs, toMs uint64, fn func(*flywheel.Example)) error {
	ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"max_block_size": scanBlockRows}))
	rows, err := r.conn.Query(ctx, `SELECT event_id, ts_ms, version, context_json, actions_json, probabilities, chosen_index, reward, feedback_count
		FROM `+r.db+`.examples WHERE model = ? AND kind = 'ranker' AND ts_ms >= ? AND ts_ms <= ? ORDER BY ts_ms, event_id`, name, fromMs, toMs)
	if err != nil {
		return fmt.Errorf("query examples of %s: %w", name, err)
	}
	defer rows.Close()
	var (
		tsMs             uint64
		version          uint32
		ctxJSON, actJSON string
		chosen           uint16
		fbCount          uint64
	)
	for rows.Next() {
		var ex flywheel.Example
		if err := rows.Scan(&ex.EventID, &tsMs, &version, &ctxJSON, &actJSON, &ex.Probabilities, &chosen, &ex.Reward, &fbCount); err != nil {
			return fmt.Errorf("scan example: %w", err)
		}
		if err := sonic.UnmarshalString(ctxJSON, &ex.Context); err != nil {
			r.log.Warn("skipping example with undecodable context", "event_id", ex.EventID, "err", err)
			continue
		}
		if err := sonic.UnmarshalString(actJSON, &ex.Actions); err != nil {
			r.log.Warn("skipping example with undecodable actions", "event_id", ex.EventID, "err", err)
			continue
		}
		ex.Time = time.UnixMilli(int64(tsMs)).UTC()
		ex.Version, ex.ChosenIndex, ex.HasFeedback = int(version), int(chosen), fbCount > 0
		if ex.ChosenIndex >= len(ex.Actions) || len(ex.Probabilities) != len(ex.Actions) {
			continue
		}
		fn(&ex)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read examples of %s: %w", name, err)
	}
	return nil
}

// seen is what a training run read: counts, the first and last time, the
// fingerprint of the data (event ids and rewards, in order) and the judge.
type seen struct {
	rows, trainRows int
	firstMs, lastMs uint64
	hash            string
	cmp             *comparer
}

type fingerprint struct {
	h       hash.Hash
	n       int
	first   uint64
	last    uint64
	started bool
}

func (f *fingerprint) add(ex *flywheel.Example) {
	fmt.Fprintf(f.h, "%s\x00%v\x00", ex.EventID, ex.Reward)
	ms := ex.TimeMs()
	if !f.started {
		f.first, f.started = ms, true
	}
	f.last = ms
	f.n++
}

// trainOn learns a ranker of mc's shape from warm (nil: from zero) on the
// training part of win, in order, mc.Retrain.Passes times, then reads the
// holdout, judging the result with the comparer judge returns (judge nil:
// the holdout is only fingerprinted). It is deterministic: the same rows in
// the same order give the same weights, bit for bit.
func (r *Retrainer) trainOn(ctx context.Context, name string, mc flywheel.ModelConfig, warm *model.Model, win window, judge func(*model.Model) *comparer) (*model.Model, *seen, error) {
	start := warm
	if start == nil {
		m, err := model.FromConfig(mc)
		if err != nil {
			return nil, nil, err
		}
		start = m
	} else {
		start = warm.Clone()
	}
	tr := model.NewTrainer(start, model.TrainConfig{LearningRate: mc.Retrain.LearningRate, Objective: mc.Retrain.Objective})
	fp := &fingerprint{h: sha256.New()}
	skipped := 0
	learn := func(ex *flywheel.Example) {
		if err := tr.LearnRanker(ex); err != nil {
			skipped++
		}
	}
	for pass := 0; pass < mc.Retrain.Passes; pass++ {
		fn := learn
		if pass == 0 {
			fn = func(ex *flywheel.Example) { fp.add(ex); learn(ex) }
		}
		if win.holdFrom > win.fromMs {
			if err := r.scan(ctx, name, win.fromMs, min(win.holdFrom-1, win.toMs), fn); err != nil {
				return nil, nil, err
			}
		}
	}
	if skipped > 0 {
		r.log.Warn("skipped unusable examples", "model", name, "count", skipped)
	}
	out := &seen{trainRows: fp.n}
	m := tr.Model()
	if judge != nil {
		out.cmp = judge(m)
	}
	if win.holdFrom <= win.toMs {
		err := r.scan(ctx, name, win.holdFrom, win.toMs, func(ex *flywheel.Example) {
			fp.add(ex)
			if out.cmp != nil {
				out.cmp.add(ex)
			}
		})
		if err != nil {
			return nil, nil, err
		}
	}
	if out.cmp == nil {
		out.cmp = newComparer(m, m, m, 0.95)
	}
	out.rows, out.firstMs, out.lastMs, out.hash = fp.n, fp.first, fp.last, hex.EncodeToString(fp.h.Sum(nil))
	return m, out, nil
}
