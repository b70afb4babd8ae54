package model

import (
	"math"

	"github.com/flywheel-dev/flywheel"
)

// Ranker training objectives (VW's --cb_type).
const (
	// MTR regresses the chosen action's reward with importance weight
	// 1/(K·p): VW's default for contextual bandits with action features.
	MTR = flywheel.ObjectiveMTR
	// IPS regresses every action on its inverse-propensity reward estimate:
	// r/p for the chosen action, 0 for the others.
	IPS = flywheel.ObjectiveIPS
	// DR regresses every action on its doubly robust estimate: the current
	// prediction, corrected by (r - prediction)/p for the chosen action.
	DR = flywheel.ObjectiveDR
)

// TrainConfig tunes learning.
type TrainConfig struct {
	// Objective of a ranker: MTR (default), IPS or DR.
	Objective string
	// FTRL-Proximal parameters of a classifier (McMahan et al. 2013):
	// Alpha (default 0.1), Beta (default 1), L1 and L2 (default 0).
	Alpha, Beta, L1 float64
	// LearningRate scales every adaptive step; default 1.
	LearningRate float64
	// MaxImportanceWeight clips 1/(K·p), the weight of a logged ranker
	// example under MTR. The default, 1, makes MTR a plain regression of the
	// chosen action's reward (unbiased for the reward model, though not for
	// the logging policy's covariate shift), which did best in the learner
	// benchmark on both data sets; raise it to weight by inverse propensity.
	MaxImportanceWeight float64
	// L2 is an L2 penalty per step; default 0.
	L2 float64
	// PriorSteps damps a ranker's first steps on each weight: its AdaGrad
	// sum starts at PriorSteps times the square of the first gradient it
	// sees, as if the weight had already taken that many steps like it, so
	// that its first step is 1/sqrt(1+PriorSteps) of a full one. Without it
	// (0) a weight's first step moves it the whole learning rate, whatever
	// the evidence, and the many weights of crosses that few examples touch
	// learn those examples' noise. It is scale-free (a reward in cents damps
	// as one in dollars) and leaves a resumed weight, which has its sum,
	// alone.
	PriorSteps float64
	// Names bounds the dictionary of readable names behind the hashed
	// features and crosses that the trainer keeps (VW's --invert_hash): the
	// first Names distinct ones it sees, with how often it saw them.
	// Trainer.MarshalBinary stores it (format 4) and Explain reads it; 0
	// keeps none (format 3). DefaultNames is what retraining uses.
	Names int
}

func (c TrainConfig) withDefaults() TrainConfig {
	if c.LearningRate <= 0 {
		c.LearningRate = 1
	}
	if c.MaxImportanceWeight <= 0 {
		c.MaxImportanceWeight = 1
	}
	if c.Objective == "" {
		c.Objective = MTR
	}
	if c.Alpha <= 0 {
		c.Alpha = 0.1
	}
	if c.Beta <= 0 {
		c.Beta = 1
	}
	return c
}

// Trainer updates a model with adaptive, normalized per-coordinate steps
// (AdaGrad scaled by the largest magnitude each feature has shown, so a
// feature's scale does not change how fast predictions move). It is
// not safe for concurrent use; Model returns the model learned so far.
type Trainer struct {
	cfg     TrainConfig
	m       *Model
	g2      []float32 // running sum of squared gradients per weight
	sc      []float32 // largest |value| seen per weight, for normalized steps
	z, n    []float64 // FTRL-Proximal state of a classifier, made on first use
	normSum float64   // sum over steps of the example's squared normalized norm
	steps   float64
	cf      []feature
	af      []feature
	keys    keyBuf
	cb      crossBuf
	names   *names    // nil when TrainConfig.Names is 0
	pending []pending // examples held until the bins are fitted (bins.go)
}

// NewTrainer returns a trainer that starts from m (which it copies, so m
// itself is never modified).
func NewTrainer(m *Model, cfg TrainConfig) *Trainer {
	return &Trainer{cfg: cfg.withDefaults(), m: m.Clone(), g2: make([]float32, len(m.weights)), sc: make([]float32, len(m.weights)), names: newNames(cfg.Names)}
}

// Model returns the model learned so far, first fitting the bins on the
// examples held for them and learning those (a trainer that has seen fewer
// than FitExamples). The trainer goes on owning it: call Model only when
// done learning, or Clone the result.
func (t *Trainer) Model() *Model {
	t.fit()
	return t.m
}

// Learning returns the model as learned so far without fitting its bins,
// for scoring an example before it is learned (progressive validation); nil
// while the trainer holds examples back for its bins, when the model cannot
// score yet. It is the trainer's own model: it changes with every example
// learned, and is valid until Model is called.
func (t *Trainer) Learning() *Model {
	if t.needsFit() {
		return nil
	}
	return t.m
}

// Fit fits the numeric bins now, on the examples held for them so far (at
// least MinFitExamples), and learns those, if the trainer has not fitted
// them yet: so that it can score an example before it learns it
// (Learning). It does nothing when fewer are held.
func (t *Trainer) Fit() {
	if t.needsFit() && len(t.pending) >= MinFitExamples {
		t.fit()
	}
}

// LearnRanker learns the reward of the chosen action of one logged decision
// by importance-weighted squared-loss regression: the weight is 1/(K·p),
// clipped, so uniformly logged data has weight 1. It returns an EINVALID
// error for an example that is not usable (no actions, chosen index out of
// range, probability not in (0, 1], reward not finite).
//
// A trainer whose model bins numeric features and has no cut points yet
// holds the first FitExamples examples back (a copy of each, sharing its
// maps and slices: the caller must not modify an example it has passed),
// fits the bins on them and then learns them in order.
func (t *Trainer) LearnRanker(ex *flywheel.Example) error {
	if err := CheckRanker(ex); err != nil {
		return err
	}
	if t.needsFit() {
		t.hold(pending{ex: *ex})
		return nil
	}
	t.learnRanker(ex)
	return nil
}

// CheckRanker returns an EINVALID error for a logged decision a ranker
// cannot learn from or be judged on: no actions, chosen index out of range,
// probability not in (0, 1], reward not finite.
func CheckRanker(ex *flywheel.Example) error {
	if n := ex.NumActions(); n == 0 || ex.ChosenIndex < 0 || ex.ChosenIndex >= n || ex.ChosenIndex >= len(ex.Probabilities) {
		return flywheel.Errorf(flywheel.EINVALID, "example %s: chosen action is out of range", ex.EventID)
	}
	p := ex.Probabilities[ex.ChosenIndex]
	if !(p > 0 && p <= 1) {
		return flywheel.Errorf(flywheel.EINVALID, "example %s: probability %v of the chosen action is not in (0, 1]", ex.EventID, p)
	}
	if math.IsNaN(ex.Reward) || math.IsInf(ex.Reward, 0) {
		return flywheel.Errorf(flywheel.EINVALID, "example %s: reward is not finite", ex.EventID)
	}
	return nil
}

// learnRanker learns a valid example.
func (t *Trainer) learnRanker(ex *flywheel.Example) {
	p := ex.Probabilities[ex.ChosenIndex]
	t.cf = appendFeatures(t.cf[:0], ex.Context, &t.keys, t.m.binning())
	switch t.cfg.Objective {
	case IPS, DR:
		for a := range ex.NumActions() {
			t.action(ex, a)
			pred := t.m.score(t.cf, t.af, &t.cb)
			target := 0.0
			if t.cfg.Objective == DR {
				target = pred
			}
			if a == ex.ChosenIndex {
				target += (ex.Reward - target) / p
			}
			t.step(pred - target)
		}
	default:
		iw := math.Min(1/(float64(ex.NumActions())*p), t.cfg.MaxImportanceWeight)
		t.action(ex, ex.ChosenIndex)
		pred := t.m.score(t.cf, t.af, &t.cb)
		t.step(iw * (pred - ex.Reward))
	}
	t.m.trained++
}

// action hashes action a of ex into t.af (its map or its listed set, the
// same features either way) and notes its names.
func (t *Trainer) action(ex *flywheel.Example, a int) {
	if ex.Listed() {
		set := ex.ActionSet(a)
		t.af = appendListed(t.af[:0], set, &t.keys, t.m.binning())
		t.observe(ex.Context, nil, set)
		return
	}
	t.af = appendFeatures(t.af[:0], ex.Actions[a].Features, &t.keys, t.m.binning())
	t.observe(ex.Context, ex.Actions[a].Features, nil)
}

// LearnClassifier learns one labelled example with logistic loss by
// FTRL-Proximal with L1 and L2 regularisation (McMahan et al. 2013, algorithm
// 1); label is true for a positive outcome. Like LearnRanker, it holds the
// first examples back while the bins are unfitted.
func (t *Trainer) LearnClassifier(f flywheel.Features, label bool) {
	if t.needsFit() {
		t.hold(pending{ex: flywheel.Example{Context: f}, label: label, classifier: true})
		return
	}
	t.learnClassifier(f, label)
}

func (t *Trainer) learnClassifier(f flywheel.Features, label bool) {
	if t.z == nil {
		t.z, t.n = make([]float64, len(t.m.weights)), make([]float64, len(t.m.weights))
	}
	t.cf = appendFeatures(t.cf[:0], f, &t.keys, t.m.binning())
	t.af = t.af[:0]
	t.observe(f, nil, nil)
	y := 0.0
	if label {
		y = 1
	}
	// The model's weights are kept equal to FTRL's lazily computed weights
	// for every coordinate touched so far, so prediction is just a dot product.
	g := sigmoid(t.m.score(t.cf, nil, &t.cb)) - y
	w, z, n, c := t.m.weights, t.z, t.n, t.cfg
	t.m.visit(t.cf, t.af, &t.cb, func(i uint64, v float64, _ bool) {
		gi := g * v
		sigma := (math.Sqrt(n[i]+gi*gi) - math.Sqrt(n[i])) / c.Alpha
		z[i] += gi - sigma*float64(w[i])
		n[i] += gi * gi
		if math.Abs(z[i]) <= c.L1 {
			w[i] = 0
			return
		}
		w[i] = float32(-(z[i] - math.Copysign(c.L1, z[i])) / ((c.Beta+math.Sqrt(n[i]))/c.Alpha + c.L2))
	})
	t.m.trained++
}

// step applies gradient g (dLoss/dScore) to every feature of the current
// example (t.cf, t.af). Steps are adaptive (AdaGrad: each coordinate's step
// shrinks with its squared gradients), normalized per coordinate (by the
// largest magnitude the feature has shown, so a feature's scale does not
// matter) and normalized per example (by the running mean of the example's
// squared normalized norm, so the number of active features does not make
// predictions jump), as in VW's default learner.
func (t *Trainer) step(g float64) {
	w, g2, sc, l2, prior := t.m.weights, t.g2, t.sc, t.cfg.L2, t.cfg.PriorSteps
	var norm float64
	t.m.visit(t.cf, t.af, &t.cb, func(i uint64, v float64, raw bool) {
		a := math.Abs(v)
		if !raw {
			// A unit-scale feature (a knot of linear bins at a fraction
			// of its weight) is normalised as 1: the first example's
			// fraction is not its scale.
			a = max(a, 1)
		}
		if float32(a) > sc[i] {
			sc[i] = float32(a)
		}
		x := v / float64(sc[i])
		norm += x * x
	})
	t.normSum += norm
	t.steps++
	lr := t.cfg.LearningRate * float64(t.steps) / t.normSum
	t.m.visit(t.cf, t.af, &t.cb, func(i uint64, v float64, _ bool) {
		gi := g*v + l2*float64(w[i])
		if gi == 0 || sc[i] == 0 {
			return
		}
		if g2[i] == 0 {
			g2[i] = float32(prior * gi * gi)
		}
		g2[i] += float32(gi * gi)
		w[i] -= float32(lr * gi / (math.Sqrt(float64(g2[i])) * float64(sc[i])))
	})
}
