package model

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/flywheel-dev/flywheel"
)

// The cuts are the distinct values at the quantiles, above the smallest; a
// feature with one value gets none; zeros count; the fit is the same
// whatever the maps' order.
func TestFitBinsQuantiles(t *testing.T) {
	t.Parallel()
	var exs []pending
	for i := 0; i < 100; i++ {
		exs = append(exs, pending{ex: flywheel.Example{Context: flywheel.Features{"u": {"x": float64(i), "flat": 3.0, "tag": "a"}}}})
	}
	cuts := fitBins(4, exs)
	x := fnvString(fnvString(nsHash("u"), "^"), "x")
	if got := cuts[x]; !slices.Equal(got, []float64{25, 50, 75}) {
		t.Fatalf("cuts of 0..99 in 4 bins: %v, want [25 50 75]", got)
	}
	if len(cuts) != 1 {
		t.Fatalf("%d features binned, want 1 (a constant and a string get none)", len(cuts))
	}
	for _, tc := range []struct {
		v    float64
		want int
	}{{-1, 0}, {0, 0}, {24.9, 0}, {25, 1}, {74, 2}, {75, 3}, {1e9, 3}} {
		if got := binOf(cuts[x], tc.v); got != tc.want {
			t.Errorf("bin of %v: %d, want %d", tc.v, got, tc.want)
		}
	}
	// Mostly zeros: the zeros fill one bin, the rest are split among the others.
	exs = exs[:0]
	for i := 0; i < 100; i++ {
		v := 0.0
		if i >= 90 {
			v = float64(i)
		}
		exs = append(exs, pending{ex: flywheel.Example{Context: flywheel.Features{"u": {"x": v}}}})
	}
	if got := fitBins(4, exs)[x]; !slices.Equal(got, []float64{90, 94, 97}) {
		t.Fatalf("cuts of 90 zeros and 90..99: %v, want [90 94 97]", got)
	}
}

// bumpExamples are uniformly logged decisions over 8 items with a price,
// for users with a budget: an item pays most when its price is near the
// user's budget, which no slope of price, budget or price × budget can
// express.
func bumpExamples(n int, seed uint64) []flywheel.Example {
	rng := rand.New(rand.NewPCG(seed, 2))
	var acts []flywheel.Action
	for i := 0; i < 8; i++ {
		acts = append(acts, flywheel.Action{ID: fmt.Sprint("i", i), Features: flywheel.Features{"item": {"price": float64(10 * (i + 1))}}})
	}
	probs := slices.Repeat([]float64{1.0 / 8}, 8)
	out := make([]flywheel.Example, n)
	for i := range out {
		budget := float64(10 * (1 + rng.IntN(8)))
		c := rng.IntN(8)
		r := 0.0
		if rng.Float64() < math.Exp(-math.Abs(acts[c].Features["item"]["price"].(float64)-budget)/10) {
			r = 1
		}
		out[i] = flywheel.Example{EventID: fmt.Sprint(i), Context: flywheel.Features{"user": {"budget": budget}}, Actions: acts,
			ChosenIndex: c, Probabilities: probs, Reward: r}
	}
	return out
}

// With bins, a ranker learns an effect that peaks in the middle; without,
// it cannot. Measured as how often the greedy choice is the item priced at
// the budget.
func TestBinsLearnNonMonotoneEffects(t *testing.T) {
	t.Parallel()
	exs := bumpExamples(20000, 3)
	hit := func(bins int) float64 {
		cfg := Config{Kind: flywheel.KindRanker, Bits: 16, Interactions: [][2]string{{"user", "item"}},
			Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.05}, Bins: bins}
		tr := NewTrainer(mustModel(t, cfg), TrainConfig{LearningRate: 0.25})
		for i := range exs {
			if err := tr.LearnRanker(&exs[i]); err != nil {
				t.Fatal(err)
			}
		}
		m := tr.Model()
		if bins > 0 && m.BinnedFeatures() != 2 {
			t.Fatalf("%d features binned, want 2 (budget and price)", m.BinnedFeatures())
		}
		var r Ranking
		good := 0
		for b := 1; b <= 8; b++ {
			if err := m.Rank("k", flywheel.Features{"user": {"budget": float64(10 * b)}}, exs[0].Actions, &r); err != nil {
				t.Fatal(err)
			}
			if argmax(r.Scores) == b-1 {
				good++
			}
		}
		return float64(good) / 8
	}
	with, without := hit(8), hit(0)
	t.Logf("greedy choice at the budget: %.0f%% with 8 bins, %.0f%% without", 100*with, 100*without)
	if with < 0.75 || without > 0.5 {
		t.Fatalf("greedy choice at the budget: %.0f%% with bins (want at least 75%%), %.0f%% without (want at most 50%%)", 100*with, 100*without)
	}
}

// A binned model's artifact (format 5) decodes to the same scores, with
// and without optimizer state; a trainer resumed from it goes on bit for
// bit and keeps its bins; resuming with other bins is a change of shape;
// damaged bins are refused.
func TestBinsArtifact(t *testing.T) {
	t.Parallel()
	cfg := Config{Kind: flywheel.KindRanker, Bits: 12, Interactions: [][2]string{{"user", "item"}},
		Exploration: Exploration{Policy: SquareCB, GammaScale: 10, GammaExponent: 0.5}, Bins: 16}
	tc := TrainConfig{LearningRate: 0.25, Names: 200}
	exs := rankerExamples(6000, 11)
	learn := func(tr *Trainer, exs []flywheel.Example) { learnRankerAll(t, tr, exs) }
	whole := NewTrainer(mustModel(t, cfg), tc)
	learn(whole, exs)
	want, err := whole.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if n := whole.Model().BinnedFeatures(); n < 1 {
		t.Fatalf("%d features binned, want at least 1 (age)", n)
	}
	first := NewTrainer(mustModel(t, cfg), tc)
	learn(first, exs[:FitExamples+500])
	half, _ := first.MarshalBinary()
	resumed, err := Resume(half, cfg, tc)
	if err != nil {
		t.Fatal(err)
	}
	learn(resumed, exs[FitExamples+500:])
	got, _ := resumed.MarshalBinary()
	if !bytes.Equal(got, want) {
		t.Fatal("resumed binned trainer: artifact differs from learning all at once")
	}
	serving := mustMarshal(t, whole.Model())
	for name, b := range map[string][]byte{"with state": want, "without state": serving} {
		m, err := DecodeAs(b, cfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var r1, r2 Ranking
		for i := 0; i < 50; i++ {
			_ = m.Rank("k", exs[i].Context, exs[i].Actions, &r1)
			_ = whole.Model().Rank("k", exs[i].Context, exs[i].Actions, &r2)
			if !slices.Equal(r1.Scores, r2.Scores) {
				t.Fatalf("%s: decoded scores %v, trained %v", name, r1.Scores, r2.Scores)
			}
		}
	}
	other := cfg
	other.Bins = 8
	if _, err := Resume(want, other, tc); !errors.Is(err, ErrShape) {
		t.Fatalf("resume with 8 bins from 16: %v, want ErrShape", err)
	}
	// A fresh binned model (version 1) encodes and decodes with no bins fitted.
	fresh := mustMarshal(t, mustModel(t, cfg))
	if m, err := Decode(fresh); err != nil || m.BinnedFeatures() != 0 {
		t.Fatalf("fresh binned model: %v", err)
	}
	// Cuts out of order, re-checksummed, are refused.
	bad := corruptCuts(t, serving)
	if _, err := Decode(bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("descending cuts: %v, want ErrCorrupt", err)
	}
}

// corruptCuts swaps the first two cuts of the first binned feature in a
// format 5 artifact and fixes its checksum.
func corruptCuts(t *testing.T, b []byte) []byte {
	t.Helper()
	h, err := parseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	var first []float64
	for _, c := range h.cuts {
		if len(c) >= 2 {
			first = c
			break
		}
	}
	if first == nil {
		t.Fatal("no feature with two cuts")
	}
	body := bytes.Clone(b[:len(b)-checksumSize])
	enc := func(v float64) []byte { return le64(math.Float64bits(v)) }
	i := bytes.Index(body, append(enc(first[0]), enc(first[1])...))
	if i < 0 {
		t.Fatal("cuts not found")
	}
	copy(body[i:], append(enc(first[1]), enc(first[0])...))
	return reseal(body)
}

func le64(x uint64) []byte {
	b := make([]byte, 8)
	for i := range b {
		b[i] = byte(x >> (8 * i))
	}
	return b
}

// reseal appends body's checksum.
func reseal(body []byte) []byte {
	s := sha256.Sum256(body)
	return append(body, s[:]...)
}

// Linear bins: a value between two cuts is both knots, weighted by
// nearness; beyond the cuts, the end knot alone. A trained model's score is
// then continuous in the value, where one-hot bins jump at every cut.
func TestLinearBinsInterpolate(t *testing.T) {
	t.Parallel()
	c := []float64{10, 20, 40}
	for _, tc := range []struct {
		v    float64
		want map[int]float64
	}{
		{-5, map[int]float64{0: 1}}, {10, map[int]float64{0: 1}}, {15, map[int]float64{0: 0.5, 1: 0.5}},
		{25, map[int]float64{1: 0.75, 2: 0.25}}, {40, map[int]float64{2: 1}}, {1e9, map[int]float64{2: 1}},
	} {
		got := map[int]float64{}
		binning{linear: true}.eachBin(c, tc.v, func(k int, w float64) { got[k] = w })
		if !maps.Equal(got, tc.want) {
			t.Errorf("knots of %v: %v, want %v", tc.v, got, tc.want)
		}
		var fs []feature
		fs = binning{linear: true}.appendBins(fs, 7, c, tc.v, 1)
		sum := 0.0
		for _, f := range fs {
			if w, ok := tc.want[knotOf(f.h, 7, len(c))]; !ok || w != f.v {
				t.Errorf("appendBins(%v): feature %v not among %v", tc.v, f, tc.want)
			}
			sum += f.v
		}
		if len(fs) != len(tc.want) || sum != 1 {
			t.Errorf("appendBins(%v): %d features summing to %v, want %d summing to 1", tc.v, len(fs), sum, len(tc.want))
		}
	}
	exs := bumpExamples(6000, 5)
	jump := func(shape string) float64 {
		cfg := Config{Kind: flywheel.KindRanker, Bits: 16, Interactions: [][2]string{{"user", "item"}},
			Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.05}, Bins: 8, BinShape: shape}
		tr := NewTrainer(mustModel(t, cfg), TrainConfig{LearningRate: 0.25})
		for i := range exs {
			if err := tr.LearnRanker(&exs[i]); err != nil {
				t.Fatal(err)
			}
		}
		m := tr.Model()
		var worst float64
		var r1, r2 Ranking
		for b := 10.0; b < 80; b += 10 { // the budgets are the cuts: just below and just above each
			_ = m.Rank("k", flywheel.Features{"user": {"budget": b - 1e-9}}, exs[0].Actions, &r1)
			_ = m.Rank("k", flywheel.Features{"user": {"budget": b + 1e-9}}, exs[0].Actions, &r2)
			for i := range r1.Scores {
				worst = max(worst, math.Abs(r1.Scores[i]-r2.Scores[i]))
			}
		}
		return worst
	}
	lin, hot := jump(BinsLinear), jump(BinsOneHot)
	t.Logf("largest jump of a score across a cut: %.2g linear, %.2g one-hot", lin, hot)
	if lin > 1e-6 || hot < 0.01 {
		t.Fatalf("largest jump across a cut: %.2g linear (want ~0), %.2g one-hot (want a step)", lin, hot)
	}
}

// knotOf returns k such that h is binHash(base, k), or -1.
func knotOf(h, base uint64, n int) int {
	for k := range n + 1 {
		if binHash(base, k) == h {
			return k
		}
	}
	return -1
}

// A linear-binned artifact keeps its shape: it decodes to the same scores
// and resumes bit for bit as linear; resuming it as one-hot, or a one-hot
// artifact (or one written before bin shapes, which is one-hot) as linear,
// is a change of shape.
func TestLinearBinsArtifact(t *testing.T) {
	t.Parallel()
	cfg := Config{Kind: flywheel.KindRanker, Bits: 12, Interactions: [][2]string{{"user", "item"}},
		Exploration: Exploration{Policy: SquareCB, GammaScale: 10, GammaExponent: 0.5}, Bins: 8, BinShape: BinsLinear}
	tc := TrainConfig{LearningRate: 0.2, PriorSteps: 10, Names: 200}
	exs := rankerExamples(6000, 13)
	learn := func(tr *Trainer, exs []flywheel.Example) { learnRankerAll(t, tr, exs) }
	whole := NewTrainer(mustModel(t, cfg), tc)
	learn(whole, exs)
	want, _ := whole.MarshalBinary()
	first := NewTrainer(mustModel(t, cfg), tc)
	learn(first, exs[:FitExamples+700])
	half, _ := first.MarshalBinary()
	resumed, err := Resume(half, cfg, tc)
	if err != nil {
		t.Fatal(err)
	}
	learn(resumed, exs[FitExamples+700:])
	if got, _ := resumed.MarshalBinary(); !bytes.Equal(got, want) {
		t.Fatal("resumed linear-binned trainer: artifact differs from learning all at once")
	}
	m, err := DecodeAs(mustMarshal(t, whole.Model()), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m.Config().BinShape != BinsLinear {
		t.Fatalf("decoded bin shape %q, want linear", m.Config().BinShape)
	}
	var r1, r2 Ranking
	for i := 0; i < 50; i++ {
		_ = m.Rank("k", exs[i].Context, exs[i].Actions, &r1)
		_ = whole.Model().Rank("k", exs[i].Context, exs[i].Actions, &r2)
		if !slices.Equal(r1.Scores, r2.Scores) {
			t.Fatalf("decoded scores %v, trained %v", r1.Scores, r2.Scores)
		}
	}
	for _, shape := range []string{BinsOneHot, ""} {
		other := cfg
		other.BinShape = shape
		if _, err := Resume(want, other, tc); !errors.Is(err, ErrShape) {
			t.Fatalf("resume linear bins as %q: %v, want ErrShape", shape, err)
		}
		hot := NewTrainer(mustModel(t, other), tc)
		learn(hot, exs[:FitExamples+10])
		b, _ := hot.MarshalBinary()
		if _, err := Resume(b, cfg, tc); !errors.Is(err, ErrShape) {
			t.Fatalf("resume %q bins as linear: %v, want ErrShape", shape, err)
		}
		if _, err := Resume(b, other, tc); err != nil {
			t.Fatalf("resume %q bins as %q: %v", shape, shape, err)
		}
	}
}

// PriorSteps damps a weight's first step to 1/sqrt(1+PriorSteps) of an
// undamped one, whatever the reward's scale, and later steps less and less.
func TestPriorStepsDampFirstSteps(t *testing.T) {
	t.Parallel()
	cfg := Config{Kind: flywheel.KindRanker, Bits: 10, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.1}}
	ex := func(r float64) *flywheel.Example {
		return &flywheel.Example{EventID: "e", Context: flywheel.Features{"user": {"seg": "a"}},
			Actions:       []flywheel.Action{{ID: "x", Features: flywheel.Features{"item": {"id": "x"}}}, {ID: "y", Features: flywheel.Features{"item": {"id": "y"}}}},
			Probabilities: []float64{0.5, 0.5}, Reward: r}
	}
	first := func(prior, reward float64, steps int) float64 {
		tr := NewTrainer(mustModel(t, cfg), TrainConfig{LearningRate: 1, PriorSteps: prior})
		for range steps {
			if err := tr.LearnRanker(ex(reward)); err != nil {
				t.Fatal(err)
			}
		}
		return tr.Model().Predict(flywheel.Features{"user": {"seg": "a"}, "item": {"id": "x"}})
	}
	free, damped := first(0, 1, 1), first(10, 1, 1)
	if ratio := damped / free; math.Abs(ratio-1/math.Sqrt(11)) > 1e-6 {
		t.Fatalf("first step damped by %.6f, want 1/sqrt(11) = %.6f", ratio, 1/math.Sqrt(11))
	}
	if a, b := damped/free, first(10, 100, 1)/first(0, 100, 1); math.Abs(a-b) > 1e-9 {
		t.Fatalf("first step damped by %v for a reward of 1 and by %v for one of 100: the damping depends on the scale", a, b)
	}
	// Many steps on the same reward: both converge to it.
	if f, d := first(0, 1, 400), first(10, 1, 400); math.Abs(f-1) > 0.05 || math.Abs(d-1) > 0.05 {
		t.Fatalf("after 400 steps: %v undamped, %v damped; want both near the reward 1", f, d)
	}
}

// A unit-scale feature (a knot of linear bins) first seen at a fraction of
// its weight is normalised as 1: its first step moves a full-valued
// example's score no more than a string's would. A raw number keeps its own
// scale, so that the scale of a number does not change how fast it learns.
func TestUnitScaleOfAFractionalKnot(t *testing.T) {
	t.Parallel()
	first := func(f feature) float64 {
		tr := NewTrainer(mustModel(t, Config{Kind: flywheel.KindRanker, Bits: 10, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.1}}),
			TrainConfig{LearningRate: 1, PriorSteps: 10})
		tr.cf, tr.af = []feature{f}, nil
		tr.step(-1) // the score is 1 too low
		return float64(tr.m.weights[f.h&tr.m.mask])
	}
	knot, raw := first(feature{h: 77, v: 0.05}), first(feature{h: 77, v: 0.05, raw: true})
	if lim := 1 / math.Sqrt(11); knot <= 0 || knot > lim*1.001 {
		t.Fatalf("a knot seen at 0.05 learned weight %v; want at most a damped full step, %v", knot, lim)
	}
	// The raw number is at its own full scale: with the bias, the example's
	// normalised norm is 2, which halves the step.
	if d, want := raw*0.05, 0.5/math.Sqrt(11); math.Abs(d-want) > 1e-6 {
		t.Fatalf("a raw number 0.05 moved its score by %v; want %v, as any number's first step", d, want)
	}
}

// learnRankerAll has tr learn every example of exs, failing t on the first
// that is refused.
func learnRankerAll(t *testing.T, tr *Trainer, exs []flywheel.Example) {
	t.Helper()
	for i := range exs {
		if err := tr.LearnRanker(&exs[i]); err != nil {
			t.Fatal(err)
		}
	}
}
