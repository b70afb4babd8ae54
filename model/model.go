package model

import (
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/flywheel-dev/flywheel"
)

// Exploration policies, re-exported for convenience.
const (
	EpsilonGreedy = flywheel.EpsilonGreedy
	Softmax       = flywheel.Softmax
	SquareCB      = flywheel.SquareCB
)

// Exploration configures how a ranker spreads probability over actions.
type Exploration = flywheel.Exploration

// Config describes a model's shape. It is stored in the artifact, so a
// version always scores as it was trained.
type Config struct {
	Kind         string      // flywheel.KindRanker or flywheel.KindClassifier
	Bits         int         // 2^Bits weights; default 18
	Interactions [][2]string // namespace pairs to cross (VW's -q)
	Exploration  Exploration // rankers only
	// Bins is how many quantile bins every numeric feature is also learned
	// by (bins.go); 0 learns numbers by their value only.
	Bins int
	// BinShape is how the bins are features: BinsOneHot (or empty, the
	// shape before BinsLinear) or BinsLinear.
	BinShape string
}

// Validate reports an EINVALID error naming the bad field.
func (c Config) Validate() error {
	switch c.Kind {
	case flywheel.KindRanker:
		if err := c.Exploration.Validate("exploration"); err != nil {
			return err
		}
	case flywheel.KindClassifier:
	default:
		return flywheel.Errorf(flywheel.EINVALID, "kind must be ranker or classifier; got %q", c.Kind)
	}
	if c.Bits < 1 || c.Bits > MaxBits {
		return flywheel.Errorf(flywheel.EINVALID, "bits must be in [1, %d]; got %d", MaxBits, c.Bits)
	}
	if c.Bins < 0 || c.Bins == 1 || c.Bins > MaxBins {
		return flywheel.Errorf(flywheel.EINVALID, "numeric_bins must be 0 (off) or in [2, %d]; got %d", MaxBins, c.Bins)
	}
	if c.BinShape != "" && c.BinShape != BinsOneHot && c.BinShape != BinsLinear {
		return flywheel.Errorf(flywheel.EINVALID, "numeric_bin_shape must be %s or %s; got %q", BinsLinear, BinsOneHot, c.BinShape)
	}
	for i, p := range c.Interactions {
		if p[0] == "" || p[1] == "" {
			return flywheel.Errorf(flywheel.EINVALID, "interactions[%d] names an empty namespace", i)
		}
	}
	return nil
}

// Model is a trained (or fresh, all-zero) model. It is immutable and safe for
// concurrent use.
type Model struct {
	scratch *sync.Pool // of *scratch; the only mutable part, safe for concurrent use
	cfg     Config
	mask    uint64
	pairs   [][2]uint64 // hashed namespace pairs
	weights []float32
	trained uint64 // examples seen in training
	// cuts holds the fitted bins' cut points by numeric feature hash; nil
	// until fitted (a fresh model of Bins > 0), never modified after.
	cuts map[uint64][]float64
}

// New returns a model of the given shape with all weights zero. A fresh
// ranker scores every action alike, so its policy is uniformly random: the
// first version of every ranker.
func New(cfg Config) (*Model, error) {
	if cfg.Bits == 0 {
		cfg.Bits = 18
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Model{cfg: cfg, mask: 1<<cfg.Bits - 1, weights: make([]float32, 1<<cfg.Bits), scratch: newScratchPool()}
	for _, p := range cfg.Interactions {
		m.pairs = append(m.pairs, [2]uint64{nsHash(p[0]), nsHash(p[1])})
	}
	return m, nil
}

// Config returns the model's shape.
func (m *Model) Config() Config { return m.cfg }

// Trained returns how many examples the model has learned from.
func (m *Model) Trained() uint64 { return m.trained }

// Weights returns the model's weights. The caller must not modify them.
func (m *Model) Weights() []float32 { return m.weights }

// Clone returns a deep copy, for warm starts.
func (m *Model) Clone() *Model {
	c := *m
	c.weights = append([]float32(nil), m.weights...)
	c.pairs = append([][2]uint64(nil), m.pairs...)
	c.scratch = newScratchPool()
	return &c
}

// crossBuf is working memory for interactions: the features of each side.
type crossBuf struct{ l, r []feature }

// gather appends the features of namespace ns, from the context then the
// action, to dst.
func gather(dst []feature, ns uint64, ctx, act []feature) []feature {
	for _, f := range ctx {
		if f.ns == ns {
			dst = append(dst, f)
		}
	}
	for _, f := range act {
		if f.ns == ns {
			dst = append(dst, f)
		}
	}
	return dst
}

// score returns w·x for the union of ctx and act features, plus the
// interactions and the bias.
func (m *Model) score(ctx, act []feature, cb *crossBuf) float64 {
	w := m.weights
	s := float64(w[biasHash&m.mask])
	for _, f := range ctx {
		s += float64(w[f.h&m.mask]) * f.v
	}
	for _, f := range act {
		s += float64(w[f.h&m.mask]) * f.v
	}
	for _, p := range m.pairs {
		cb.l, cb.r = gather(cb.l[:0], p[0], ctx, act), gather(cb.r[:0], p[1], ctx, act)
		for _, a := range cb.l {
			for _, b := range cb.r {
				s += float64(w[cross(a.h, b.h)&m.mask]) * a.v * b.v
			}
		}
	}
	return s
}

// visit calls fn with the weight index and value of every feature of the
// example, interactions included, in the same order as score, and whether
// the value is of a raw number (feature.raw; a cross is when either side
// is).
func (m *Model) visit(ctx, act []feature, cb *crossBuf, fn func(i uint64, v float64, raw bool)) {
	fn(biasHash&m.mask, 1, false)
	for _, f := range ctx {
		fn(f.h&m.mask, f.v, f.raw)
	}
	for _, f := range act {
		fn(f.h&m.mask, f.v, f.raw)
	}
	for _, p := range m.pairs {
		cb.l, cb.r = gather(cb.l[:0], p[0], ctx, act), gather(cb.r[:0], p[1], ctx, act)
		for _, a := range cb.l {
			for _, b := range cb.r {
				fn(cross(a.h, b.h)&m.mask, a.v*b.v, a.raw || b.raw)
			}
		}
	}
}

// Ranking is a ranker's answer. Probabilities and Scores are parallel to the
// actions given; Order lists action indexes in presentation order, Order[0]
// being Chosen.
type Ranking struct {
	Scores        []float64
	Probabilities []float64
	Order         []int
	Chosen        int
	Explored      bool
}

// Rank scores the actions for the context, computes the exploration policy's
// exact probability of showing each action first, and draws the first action
// reproducibly from key (the event id): the same key, context and actions
// always give the same answer. The rest follow by score. It returns an
// EINVALID error if actions is empty or the model is not a ranker.
func (m *Model) Rank(key string, ctx flywheel.Features, actions []flywheel.Action, out *Ranking) error {
	return m.RankExcluding(key, ctx, actions, nil, out)
}

// RankExcluding is Rank with the actions whose excluded entry is true (nil:
// none) left out of the draw: their probability is exactly 0, they are never
// chosen and come last in Order; the policy is that of the other actions
// alone, so their probabilities sum to 1. It returns an EINVALID error if no
// action is left.
func (m *Model) RankExcluding(key string, ctx flywheel.Features, actions []flywheel.Action, excluded []bool, out *Ranking) error {
	if err := m.prepare(len(actions), excluded, out); err != nil {
		return err
	}
	m.scores(ctx, actions, out.Scores)
	return m.draw(key, excluded, out)
}

// RankListed is RankExcluding for a request whose features are listed
// (flywheel.FeatureList, read from the request's bytes): the context is set
// ctx of l and action i is set actions[i]. It gives exactly what
// RankExcluding gives for the same features as maps.
func (m *Model) RankListed(key string, l *flywheel.FeatureList, ctx int, actions []int, excluded []bool, out *Ranking) error {
	if err := m.prepare(len(actions), excluded, out); err != nil {
		return err
	}
	sc := m.scratch.Get().(*scratch)
	sc.cf = appendListed(sc.cf[:0], l.Set(ctx), &sc.keys, m.binning())
	for i, a := range actions {
		sc.af = appendListed(sc.af[:0], l.Set(a), &sc.keys, m.binning())
		out.Scores[i] = m.score(sc.cf, sc.af, &sc.cb)
	}
	m.scratch.Put(sc)
	return m.draw(key, excluded, out)
}

// prepare checks a ranking's arguments (a ranker, n > 0 actions, excluded
// nil or one entry per action) and sizes out for n actions.
func (m *Model) prepare(n int, excluded []bool, out *Ranking) error {
	if m.cfg.Kind != flywheel.KindRanker {
		return flywheel.Errorf(flywheel.EINVALID, "model is a %s, not a ranker", m.cfg.Kind)
	}
	if n == 0 {
		return flywheel.Errorf(flywheel.EINVALID, "actions is empty")
	}
	if excluded != nil && len(excluded) != n {
		return flywheel.Errorf(flywheel.EINVALID, "excluded has %d entries for %d actions", len(excluded), n)
	}
	out.Scores = resize(out.Scores, n)
	out.Probabilities = resize(out.Probabilities, n)
	return nil
}

// draw turns out.Scores into the exploration policy's probabilities, draws
// the first action from key and orders the rest by score.
func (m *Model) draw(key string, excluded []bool, out *Ranking) error {
	if err := m.explorePolicy(out.Scores, excluded, out.Probabilities); err != nil {
		return err
	}
	u := uniform01(key, uint64(m.trained)*0x2545f4914f6cdd1d)
	chosen, best := -1, -1
	acc := 0.0
	for i, p := range out.Probabilities {
		if isExcluded(excluded, i) {
			continue
		}
		if best < 0 || out.Scores[i] > out.Scores[best] {
			best = i
		}
		acc += p
		if chosen < 0 && u < acc {
			chosen = i
		}
	}
	if chosen < 0 { // rounding left u above the sum: the last action that may be chosen
		for i := len(out.Scores) - 1; i >= 0; i-- {
			if !isExcluded(excluded, i) {
				chosen = i
				break
			}
		}
	}
	out.Chosen = chosen
	out.Order = append(out.Order[:0], chosen)
	out.Explored = out.Scores[chosen] < out.Scores[best]
	// The rest by score, ties in the order given: a sort, not a selection
	// per position, which took k³/6 steps (3 ms at 256 actions). Excluded
	// actions come last.
	for i := range out.Scores {
		if i != chosen {
			out.Order = append(out.Order, i)
		}
	}
	scores := out.Scores
	slices.SortStableFunc(out.Order[1:], func(a, b int) int {
		if xa, xb := isExcluded(excluded, a), isExcluded(excluded, b); xa != xb {
			if xa {
				return 1
			}
			return -1
		}
		switch {
		case scores[a] > scores[b]:
			return -1
		case scores[a] < scores[b]:
			return 1
		}
		return 0
	})
	return nil
}

func isExcluded(excluded []bool, i int) bool { return excluded != nil && excluded[i] }

// explorePolicy fills probs from scores by the exploration policy, over the
// actions not excluded; excluded ones get exactly 0.
func (m *Model) explorePolicy(scores []float64, excluded []bool, probs []float64) error {
	e := m.cfg.Exploration
	e.Gamma = m.Gamma()
	n := 0
	for i := range scores {
		if !isExcluded(excluded, i) {
			n++
		}
	}
	if n == 0 {
		return flywheel.Errorf(flywheel.EINVALID, "excluded_actions leaves no action to choose")
	}
	if n == len(scores) {
		explore(e, scores, probs)
		return nil
	}
	sub, subp := make([]float64, 0, n), make([]float64, n)
	for i, s := range scores {
		if !isExcluded(excluded, i) {
			sub = append(sub, s)
		}
	}
	explore(e, sub, subp)
	j := 0
	for i := range scores {
		if isExcluded(excluded, i) {
			probs[i] = 0
			continue
		}
		probs[i] = subp[j]
		j++
	}
	return nil
}

// Policy fills out.Scores and out.Probabilities for the context and actions:
// the probability, exploration included, of each action being shown first.
// It is what serving draws from and what off-policy evaluation asks.
func (m *Model) Policy(ctx flywheel.Features, actions []flywheel.Action, out *Ranking) {
	k := len(actions)
	out.Scores = resize(out.Scores, k)
	out.Probabilities = resize(out.Probabilities, k)
	m.scores(ctx, actions, out.Scores)
	e := m.cfg.Exploration
	e.Gamma = m.Gamma()
	explore(e, out.Scores, out.Probabilities)
}

// PolicyExample is Policy for the context and actions of a logged example,
// whose actions may be listed (flywheel.Example.ActionList): the same
// scores and probabilities either way.
func (m *Model) PolicyExample(ex *flywheel.Example, out *Ranking) {
	if !ex.Listed() {
		m.Policy(ex.Context, ex.Actions, out)
		return
	}
	k := ex.NumActions()
	out.Scores = resize(out.Scores, k)
	out.Probabilities = resize(out.Probabilities, k)
	sc := m.scratch.Get().(*scratch)
	sc.cf = appendFeatures(sc.cf[:0], ex.Context, &sc.keys, m.binning())
	for i := range k {
		sc.af = appendListed(sc.af[:0], ex.ActionSet(i), &sc.keys, m.binning())
		out.Scores[i] = m.score(sc.cf, sc.af, &sc.cb)
	}
	m.scratch.Put(sc)
	e := m.cfg.Exploration
	e.Gamma = m.Gamma()
	explore(e, out.Scores, out.Probabilities)
}

// scores fills dst (one entry per action) with the actions' scores.
func (m *Model) scores(ctx flywheel.Features, actions []flywheel.Action, dst []float64) {
	sc := m.scratch.Get().(*scratch)
	sc.cf = appendFeatures(sc.cf[:0], ctx, &sc.keys, m.binning()) // the context is hashed once per request
	for i, a := range actions {
		sc.af = appendFeatures(sc.af[:0], a.Features, &sc.keys, m.binning())
		dst[i] = m.score(sc.cf, sc.af, &sc.cb)
	}
	m.scratch.Put(sc)
}

// Gamma returns the greediness γ of a SquareCB ranker: the fixed
// Exploration.Gamma when set (or when no schedule is), else
// GammaScale·t^GammaExponent with t = Trained(), the examples learned so far
// (Foster and Rakhlin 2020; VW's --gamma_scale and --gamma_exponent). At t = 0
// it is 0, the uniform policy, which is what a model that has learned nothing
// should play. t is stored in the artifact, so a version explores the same on
// every replica and after every swap.
func (m *Model) Gamma() float64 {
	e := m.cfg.Exploration
	if e.Gamma > 0 || e.GammaScale == 0 {
		return e.Gamma
	}
	return e.GammaScale * math.Pow(float64(m.trained), e.GammaExponent)
}

// explore fills probs from scores according to the policy.
func explore(e Exploration, scores, probs []float64) {
	k := float64(len(scores))
	best := argmax(scores)
	switch e.Policy {
	case Softmax:
		var sum float64
		for i, s := range scores {
			probs[i] = math.Exp(e.Lambda * (s - scores[best]))
			sum += probs[i]
		}
		for i := range probs {
			probs[i] /= sum
		}
	case SquareCB:
		var rest float64
		for i, s := range scores {
			if i == best {
				continue
			}
			probs[i] = 1 / (k + e.Gamma*(scores[best]-s)) // e.Gamma is the γ in effect (Model.Gamma)
			rest += probs[i]
		}
		probs[best] = 1 - rest
	default: // epsilon-greedy; ties for the best share the greedy mass
		ties := 0
		for _, s := range scores {
			if s == scores[best] {
				ties++
			}
		}
		for i, s := range scores {
			probs[i] = e.Epsilon / k
			if s == scores[best] {
				probs[i] += (1 - e.Epsilon) / float64(ties)
			}
		}
	}
}

// Predict returns the classifier's probability of a positive outcome, or the
// ranker's raw score for the features as a single action with no context.
func (m *Model) Predict(f flywheel.Features) float64 {
	sc := m.scratch.Get().(*scratch)
	sc.cf = appendFeatures(sc.cf[:0], f, &sc.keys, m.binning())
	s := m.score(sc.cf, nil, &sc.cb)
	m.scratch.Put(sc)
	if m.cfg.Kind == flywheel.KindClassifier {
		return sigmoid(s)
	}
	return s
}

// scratch is per-call working memory, pooled.
type scratch struct {
	cf, af []feature
	keys   keyBuf
	cb     crossBuf
}

func newScratchPool() *sync.Pool {
	return &sync.Pool{New: func() any { return &scratch{cf: make([]feature, 0, 64), af: make([]feature, 0, 64)} }}
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

func argmax(s []float64) int {
	best := 0
	for i, v := range s {
		if v > s[best] {
			best = i
		}
	}
	return best
}

func resize(s []float64, n int) []float64 {
	if cap(s) < n {
		return make([]float64, n)
	}
	return s[:n]
}

// String describes the model for logs.
func (m *Model) String() string {
	if m.cfg.Exploration.Policy == SquareCB {
		return fmt.Sprintf("%s bits=%d interactions=%v bins=%d exploration=%s gamma=%.4g trained=%d", m.cfg.Kind, m.cfg.Bits, m.cfg.Interactions, m.cfg.Bins, m.cfg.Exploration.Policy, m.Gamma(), m.trained)
	}
	return fmt.Sprintf("%s bits=%d interactions=%v bins=%d exploration=%s trained=%d", m.cfg.Kind, m.cfg.Bits, m.cfg.Interactions, m.cfg.Bins, m.cfg.Exploration.Policy, m.trained)
}

// FromConfig returns a fresh model of the shape a model's configuration
// describes.
func FromConfig(mc flywheel.ModelConfig) (*Model, error) {
	return New(Shape(mc))
}

// Shape returns the model shape a model's configuration describes.
func Shape(mc flywheel.ModelConfig) Config {
	return Config{Kind: mc.Kind, Bits: mc.Bits, Interactions: mc.InteractionPairs(), Exploration: mc.Exploration, Bins: max(mc.Bins(), 0), BinShape: mc.NumericBinShape}
}
