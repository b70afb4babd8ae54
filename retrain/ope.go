package retrain

import (
	"math"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

// Estimate is an off-policy estimate of a policy's expected reward.
type Estimate struct {
	Value float64 `json:"value"`
	Lower float64 `json:"lower"`
	Upper float64 `json:"upper"`
}

// Evaluation is a policy's estimated value on the holdout by three
// estimators, with the effective sample size of its importance weights.
type Evaluation struct {
	IPS   Estimate `json:"ips"`
	SNIPS Estimate `json:"snips"`
	DR    Estimate `json:"dr"`
	ESS   float64  `json:"ess"`
	N     int      `json:"n"`
}

// Get returns the estimate by name (ips, snips, dr).
func (e Evaluation) Get(estimator string) Estimate {
	switch estimator {
	case "ips":
		return e.IPS
	case "dr":
		return e.DR
	}
	return e.SNIPS
}

// Comparison is the candidate and the champion on the same events, with the
// paired differences of their estimates.
type Comparison struct {
	Candidate Evaluation `json:"candidate"`
	Champion  Evaluation `json:"champion"`
	// Diff is candidate minus champion by IPS, DiffSNIPS and DiffDR by the
	// other two, each with an interval from the paired per-event terms (so
	// what both policies share cancels out).
	Diff      Estimate `json:"diff"`
	DiffSNIPS Estimate `json:"diff_snips"`
	DiffDR    Estimate `json:"diff_dr"`
}

// DiffFor returns the paired difference by estimator (ips, snips, dr).
func (c Comparison) DiffFor(estimator string) Estimate {
	switch estimator {
	case "ips":
		return c.Diff
	case "dr":
		return c.DiffDR
	}
	return c.DiffSNIPS
}

// zFor returns the two-sided normal quantile for a confidence level (1.96
// for 0.95).
func zFor(confidence float64) float64 { return math.Sqrt2 * math.Erfinv(confidence) }

// compare evaluates both policies on the examples. q is the reward model
// used by the doubly robust estimator (the same for both policies).
func compare(examples []flywheel.Example, cand, champ, q *model.Model, confidence float64) Comparison {
	z := zFor(confidence)
	var rc, rh, rq model.Ranking
	n := len(examples)
	type acc struct{ w, wr, w2, dr []float64 }
	mk := func() acc {
		return acc{make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)}
	}
	a, b := mk(), mk()
	diff := make([]float64, n)
	for i := range examples {
		ex := &examples[i]
		p := ex.Probabilities[ex.ChosenIndex]
		cand.Policy(ex.Context, ex.Actions, &rc)
		champ.Policy(ex.Context, ex.Actions, &rh)
		q.Policy(ex.Context, ex.Actions, &rq)
		for _, x := range []struct {
			r   *model.Ranking
			acc acc
		}{{&rc, a}, {&rh, b}} {
			w := x.r.Probabilities[ex.ChosenIndex] / p
			x.acc.w[i], x.acc.wr[i], x.acc.w2[i] = w, w*ex.Reward, w*w
			dm := 0.0
			for j, pj := range x.r.Probabilities {
				dm += pj * rq.Scores[j]
			}
			x.acc.dr[i] = dm + w*(ex.Reward-rq.Scores[ex.ChosenIndex])
		}
		diff[i] = a.wr[i] - b.wr[i]
	}
	// snipsTerms returns the SNIPS value of x and each event's term of its
	// linearisation (delta method): (w·r - s·w) / mean(w).
	snipsTerms := func(x acc) (float64, []float64) {
		sw := sum(x.w)
		if sw <= 0 {
			return 0, make([]float64, n)
		}
		s, mw := sum(x.wr)/sw, sw/float64(n)
		t := make([]float64, n)
		for i := range x.w {
			t[i] = (x.wr[i] - s*x.w[i]) / mw
		}
		return s, t
	}
	eval := func(x acc) Evaluation {
		ev := Evaluation{N: n}
		ev.IPS = meanCI(x.wr, z)
		ev.DR = meanCI(x.dr, z)
		if sw := sum(x.w); sw > 0 {
			s, t := snipsTerms(x)
			e := meanCI(t, z) // the terms have mean 0; their spread is the estimate's
			ev.SNIPS = Estimate{Value: s, Lower: s + e.Lower, Upper: s + e.Upper}
			ev.ESS = sw * sw / sum(x.w2)
		}
		return ev
	}
	sa, ta := snipsTerms(a)
	sb, tb := snipsTerms(b)
	dsn, ddr := make([]float64, n), make([]float64, n)
	for i := range ddr {
		dsn[i], ddr[i] = ta[i]-tb[i], a.dr[i]-b.dr[i]
	}
	ds := meanCI(dsn, z)
	return Comparison{Candidate: eval(a), Champion: eval(b), Diff: meanCI(diff, z),
		DiffSNIPS: Estimate{Value: sa - sb, Lower: sa - sb + ds.Lower, Upper: sa - sb + ds.Upper}, DiffDR: meanCI(ddr, z)}
}

func sum(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s
}

func meanCI(xs []float64, z float64) Estimate {
	n := float64(len(xs))
	if n == 0 {
		return Estimate{}
	}
	m := sum(xs) / n
	var v float64
	for _, x := range xs {
		v += (x - m) * (x - m)
	}
	se := 0.0
	if n > 1 {
		se = math.Sqrt(v / (n - 1) / n)
	}
	return Estimate{Value: m, Lower: m - z*se, Upper: m + z*se}
}
