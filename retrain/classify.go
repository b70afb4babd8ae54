package retrain

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/bytedance/sonic"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

// A classifier (/v1/predict) learns P(positive outcome | features): an
// example is positive when its reward is above 0. It is judged on the
// holdout by log loss (with a paired interval against the champion), AUC
// and calibration.

// CalibrationBin is one tenth of the predicted-probability range.
type CalibrationBin struct {
	From          float64 `json:"from"`
	Count         int     `json:"count"`
	MeanPredicted float64 `json:"mean_predicted"`
	PositiveRate  float64 `json:"positive_rate"`
}

// ClassifierEval is how one classifier does on the holdout.
type ClassifierEval struct {
	N       int      `json:"n"`
	LogLoss Estimate `json:"log_loss"`
	AUC     float64  `json:"auc"`
	// ECE is the expected calibration error: over ten bins of predicted
	// probability, the count-weighted gap between mean prediction and the
	// observed positive rate.
	ECE           float64          `json:"ece"`
	MeanPredicted float64          `json:"mean_predicted"`
	PositiveRate  float64          `json:"positive_rate"`
	Calibration   []CalibrationBin `json:"calibration"`
}

// ClassifierComparison is the candidate and the champion on the same events.
type ClassifierComparison struct {
	Candidate ClassifierEval `json:"candidate"`
	Champion  ClassifierEval `json:"champion"`
	// LogLossDiff is candidate minus champion, per event, with its interval:
	// below 0 is better.
	LogLossDiff Estimate `json:"log_loss_diff"`
}

const aucBins = 2000

// classSums accumulates one classifier's holdout figures in constant memory.
type classSums struct {
	loss, loss2      float64
	p                float64
	pos, neg         [aucBins]float64 // positives and negatives by predicted bin, for AUC
	calN, calP, calY [10]float64
}

func (s *classSums) add(p float64, y bool) float64 {
	q := math.Min(math.Max(p, 1e-15), 1-1e-15)
	l := -math.Log(1 - q)
	if y {
		l = -math.Log(q)
	}
	s.loss += l
	s.loss2 += l * l
	s.p += p
	b := min(int(p*aucBins), aucBins-1)
	c := min(int(p*10), 9)
	s.calN[c]++
	s.calP[c] += p
	if y {
		s.pos[b]++
		s.calY[c]++
	} else {
		s.neg[b]++
	}
	return l
}

func (s *classSums) eval(n, z float64) ClassifierEval {
	ev := ClassifierEval{N: int(n), LogLoss: fromSums(n, s.loss, s.loss2, z)}
	if n == 0 {
		return ev
	}
	var P, N, below, area float64
	for b := 0; b < aucBins; b++ {
		P += s.pos[b]
		N += s.neg[b]
	}
	for b := 0; b < aucBins; b++ { // a positive outranks the negatives of lower bins, and half of its own bin's
		area += s.pos[b] * (below + s.neg[b]/2)
		below += s.neg[b]
	}
	if P > 0 && N > 0 {
		ev.AUC = area / (P * N)
	}
	ev.MeanPredicted, ev.PositiveRate = s.p/n, P/n
	for c := 0; c < 10; c++ {
		bin := CalibrationBin{From: float64(c) / 10, Count: int(s.calN[c])}
		if s.calN[c] > 0 {
			bin.MeanPredicted, bin.PositiveRate = s.calP[c]/s.calN[c], s.calY[c]/s.calN[c]
			ev.ECE += s.calN[c] / n * math.Abs(bin.MeanPredicted-bin.PositiveRate)
		}
		ev.Calibration = append(ev.Calibration, bin)
	}
	return ev
}

// classJudge judges a candidate classifier against the champion on holdout
// examples, one at a time.
type classJudge struct {
	cand, champ *model.Model
	z           float64
	n           float64
	a, b        classSums
	diff, diff2 float64
}

func newClassJudge(cand, champ *model.Model, confidence float64) *classJudge {
	return &classJudge{cand: cand, champ: champ, z: flywheel.TwoSidedZ(confidence)}
}

func (j *classJudge) add(ex *flywheel.Example) {
	y := ex.Reward > 0
	la := j.a.add(j.cand.Predict(ex.Context), y)
	lb := j.b.add(j.champ.Predict(ex.Context), y)
	j.n++
	j.diff += la - lb
	j.diff2 += (la - lb) * (la - lb)
}

func (j *classJudge) result() ClassifierComparison {
	return ClassifierComparison{Candidate: j.a.eval(j.n, j.z), Champion: j.b.eval(j.n, j.z), LogLossDiff: fromSums(j.n, j.diff, j.diff2, j.z)}
}

// scanClassified calls fn with every closed classifier example of name with
// fromMs <= ts_ms <= toMs, oldest first: its features (the context) and
// reward.
func (r *Retrainer) scanClassified(ctx context.Context, name string, fromMs, toMs uint64, fn func(*flywheel.Example)) error {
	var (
		tsMs, fb uint64
		version  uint32
		ctxJSON  string
	)
	return r.store.Classifiers(ctx, name, fromMs, toMs, func(scan func(dst ...any) error) error {
		var ex flywheel.Example
		if err := scan(&ex.EventID, &tsMs, &version, &ctxJSON, &ex.Reward, &fb); err != nil {
			return fmt.Errorf("scan example: %w", err)
		}
		if err := sonic.UnmarshalString(ctxJSON, &ex.Context); err != nil {
			r.log.Warn("skipping example with undecodable features", "event_id", ex.EventID, "err", err)
			return nil
		}
		ex.Time, ex.Version, ex.HasFeedback = time.UnixMilli(int64(tsMs)).UTC(), int(version), fb > 0
		fn(&ex)
		return nil
	})
}
