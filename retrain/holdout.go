package retrain

import (
	"context"
	"math"
)

// sizer counts a model's closed examples: the store's ClosedSpan and
// HoldoutCut for one model and kind, or a backtest's log.
type sizer interface {
	// span returns how many closed examples have fromMs <= ts_ms <= toMs,
	// and the ts_ms of the first and the last.
	span(fromMs, toMs uint64) (rows, firstMs, lastMs uint64, err error)
	// cut returns the ts_ms of the closed example at offset (from 0, in
	// ts_ms order) among those in [fromMs, toMs], and how many of them are
	// before that time.
	cut(fromMs, toMs, offset uint64) (cutMs, before uint64, err error)
}

// planWindow sizes the closed examples at or after fromMs and splits them
// into training and holdout. The holdout is the newest holdout share of the
// examples at or after cutoff, the first time neither reference (champion,
// anchor) learned from, cut by time so that the examples of one millisecond
// stay on one side; the candidate trains on everything before it. So the
// evidence is data neither model trained on, and it grows with the time
// since the champion's cutoff: while candidates are rejected, each next one
// is judged on more. It costs what the examples after fromMs cost, not the
// retrain window: an incremental run passes its parent's cutoff.
//
// It returns the window and how many of its training examples are at or
// after cutoff: what the candidate learns that the references did not.
func planWindow(sz sizer, fromMs, cutoff uint64, holdout float64) (window, int, error) {
	w := window{fromMs: fromMs}
	n, lo, hi, err := sz.span(fromMs, math.MaxUint64)
	if err != nil || n == 0 {
		return w, 0, err
	}
	w.fromMs, w.toMs, w.rows = lo, hi, int(n) // later examples are for the next run
	freshFrom, fresh := lo, n
	if cutoff > lo {
		freshFrom = cutoff
		if fresh, _, _, err = sz.span(cutoff, hi); err != nil {
			return w, 0, err
		}
	}
	c := uint64(float64(fresh) * (1 - holdout))
	if c >= fresh { // no example to hold out
		w.holdFrom, w.trainRows = math.MaxUint64, int(n)
		return w, int(fresh), nil
	}
	holdFrom, before, err := sz.cut(freshFrom, hi, c)
	if err != nil {
		return w, 0, err
	}
	w.holdFrom, w.trainRows = holdFrom, int(n-fresh+before)
	return w, int(before), nil
}

// storeSizer is a sizer of one model's examples in the store.
type storeSizer struct {
	ctx         context.Context
	store       Windows
	model, kind string
}

func (s storeSizer) span(fromMs, toMs uint64) (uint64, uint64, uint64, error) {
	return s.store.ClosedSpan(s.ctx, s.model, s.kind, fromMs, toMs)
}

func (s storeSizer) cut(fromMs, toMs, offset uint64) (uint64, uint64, error) {
	return s.store.HoldoutCut(s.ctx, s.model, s.kind, fromMs, toMs, offset)
}
