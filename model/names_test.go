package model

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/flywheel-dev/flywheel"
)

// segmentWorld is n uniformly logged decisions where an item pays when its
// category is the user's segment's favourite (segment s likes category s):
// the effect is all in the user^segment × item^category cross.
func segmentWorld(n int, seed uint64) []flywheel.Example {
	rng := rand.New(rand.NewPCG(seed, 2))
	cats := []string{"shoes", "books", "games", "garden"}
	acts := make([]flywheel.Action, len(cats))
	for i, c := range cats {
		acts[i] = flywheel.Action{ID: c, Features: flywheel.Features{"item": {"category": c, "price": float64(10 * (i + 1))}}}
	}
	probs := []float64{0.25, 0.25, 0.25, 0.25}
	out := make([]flywheel.Example, n)
	for i := range out {
		seg, c := rng.IntN(len(cats)), rng.IntN(len(cats))
		r := 0.0
		if seg == c {
			r = 1
		}
		out[i] = flywheel.Example{EventID: fmt.Sprint(i), Context: flywheel.Features{"user": {"segment": cats[seg], "age": float64(20 + rng.IntN(40)), "vip": rng.IntN(2) == 0}},
			Actions: acts, ChosenIndex: c, Probabilities: probs, Reward: r}
	}
	return out
}

func mustTrain(t *testing.T, cfg Config, tc TrainConfig, exs []flywheel.Example) []byte {
	t.Helper()
	tr := NewTrainer(mustModel(t, cfg), tc)
	for i := range exs {
		if err := tr.LearnRanker(&exs[i]); err != nil {
			t.Fatal(err)
		}
	}
	b, err := tr.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The dictionary names the features and crosses of a known model: the
// largest effects are the segment × favourite-category crosses, each named
// as ns^name=value * ns^name=value; numbers are ns^name with their mean |x|.
// Training twice gives the same bytes, and serving still decodes it.
func TestExplainNamesAKnownModel(t *testing.T) {
	t.Parallel()
	cfg := Config{Kind: flywheel.KindRanker, Bits: 18, Interactions: [][2]string{{"user", "item"}}, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.1}}
	exs := segmentWorld(20000, 1)
	b := mustTrain(t, cfg, TrainConfig{Names: DefaultNames}, exs)
	if again := mustTrain(t, cfg, TrainConfig{Names: DefaultNames}, exs); !bytes.Equal(b, again) {
		t.Fatal("the same data trained twice gave different artifacts")
	}
	x, err := Explain(b, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", x)
	if !x.Dictionary || x.NameLimit != DefaultNames {
		t.Fatalf("no dictionary: %+v", x)
	}
	// User: 4 segments, age, vip; item: 4 categories, price; and their 6 × 5
	// crosses.
	if want := 4 + 1 + 1 + 4 + 1 + 6*5; x.Names != want {
		t.Errorf("%d names kept, want %d", x.Names, want)
	}
	for _, e := range x.Top {
		if len(e.Names) != 1 {
			t.Fatalf("top weight %d has names %v", e.Index, e.Names)
		}
		n := e.Names[0].Name
		seg, cat, ok := strings.Cut(n, " * ")
		if !ok || strings.TrimPrefix(seg, "user^segment=") != strings.TrimPrefix(cat, "item^category=") || !strings.HasPrefix(seg, "user^segment=") {
			t.Errorf("top effect %q is not a segment × its favourite category", n)
		}
	}
	all, _ := Explain(b, 0)
	var numbers []string
	for _, e := range all.Top {
		for _, n := range e.Names {
			if n.MeanAbsValue != 1 && !strings.Contains(n.Name, "*") {
				numbers = append(numbers, n.Name)
				if n.Name == "user^age" && (n.MeanAbsValue < 35 || n.MeanAbsValue > 45) {
					t.Errorf("user^age has mean |x| %v, want about 39.5", n.MeanAbsValue)
				}
			}
		}
	}
	slices.Sort(numbers)
	if !slices.Equal(numbers, []string{"item^price", "user^age"}) {
		t.Errorf("numbers named %v", numbers)
	}
	if !slices.ContainsFunc(all.Top, func(e Effect) bool { return len(e.Names) > 0 && e.Names[0].Name == "user^vip" }) {
		t.Error("the bool user^vip is not named")
	}
	if _, err := DecodeAs(b, cfg); err != nil {
		t.Fatalf("serving cannot decode format 4: %v", err)
	}
}

// The dictionary keeps at most its limit of names; weights beyond it show as
// indices, and the output says the dictionary is full.
func TestExplainDictionaryIsBounded(t *testing.T) {
	t.Parallel()
	cfg := Config{Kind: flywheel.KindRanker, Bits: 18, Interactions: [][2]string{{"user", "item"}}, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.1}}
	b := mustTrain(t, cfg, TrainConfig{Names: 7}, segmentWorld(2000, 2))
	x, err := Explain(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	if x.Names != 7 || x.NameLimit != 7 || NameLimit(b) != 7 {
		t.Fatalf("kept %d names of limit %d (NameLimit %d), want 7 of 7", x.Names, x.NameLimit, NameLimit(b))
	}
	unnamed := 0
	for _, e := range x.Top {
		if len(e.Names) == 0 {
			unnamed++
		}
	}
	if unnamed == 0 || !strings.Contains(x.String(), "full") || !strings.Contains(x.String(), "#") {
		t.Fatalf("a full dictionary should leave weights as indices and say so:\n%s", x)
	}
}

// Two names hashed to one weight are both listed under it.
func TestExplainListsCollisions(t *testing.T) {
	t.Parallel()
	cfg := Config{Kind: flywheel.KindRanker, Bits: 3, Interactions: [][2]string{{"user", "item"}}, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.1}}
	b := mustTrain(t, cfg, TrainConfig{Names: DefaultNames}, segmentWorld(500, 3))
	x, err := Explain(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	listed := 0
	collided := false
	for _, e := range x.Top {
		listed += len(e.Names)
		collided = collided || len(e.Names) > 1
	}
	if !collided || listed != x.Names+1 { // every name, and the bias
		t.Fatalf("on 8 weights, %d names (+ bias) listed %d times, collisions %v:\n%s", x.Names, listed, collided, x)
	}
	if !strings.Contains(x.String(), "(same index)") {
		t.Fatalf("collisions not shown:\n%s", x)
	}
}

// A version trained without names says so and shows hashed indices; a
// damaged dictionary is refused as corrupt.
func TestExplainWithoutDictionary(t *testing.T) {
	t.Parallel()
	cfg := Config{Kind: flywheel.KindRanker, Bits: 10, Interactions: [][2]string{{"user", "item"}}, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.1}}
	exs := segmentWorld(500, 4)
	old := mustTrain(t, cfg, TrainConfig{}, exs)
	x, err := Explain(old, 3)
	if err != nil {
		t.Fatal(err)
	}
	if x.Dictionary || NameLimit(old) != 0 || !strings.Contains(x.String(), "trained before names were kept") || len(x.Top) != 3 {
		t.Fatalf("format 3 explained as:\n%s", x)
	}
	b := mustTrain(t, cfg, TrainConfig{Names: 100}, exs)
	if !equalWeights(mustDecode(t, b).Weights(), mustDecode(t, old).Weights()) {
		t.Fatal("keeping names changed the weights")
	}
	bad := bytes.Clone(b[:len(b)-checksumSize-3])
	sum := sha256Sum(bad)
	if _, err := Explain(append(bad, sum...), 3); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a truncated dictionary: %v", err)
	}
}

// eachNamed hashes every feature as appendFeatures does.
func TestNamedHashesMatch(t *testing.T) {
	t.Parallel()
	f := flywheel.Features{"user": {"segment": "b", "age": 31.0, "vip": true, "tags": []any{"x", "y"}, "more": []string{"z"}}, "item": {"category": "shoes"}}
	var kb keyBuf
	var want []uint64
	for _, ft := range appendFeatures(nil, f, &kb, binning{}) {
		want = append(want, ft.h)
	}
	got := map[uint64]string{}
	eachNamed(f, binning{}, func(h uint64, name string) { got[h] = name })
	for _, h := range want {
		if _, ok := got[h]; !ok {
			t.Errorf("hash %x has no name (names %v)", h, got)
		}
	}
	if got[appendFeatures(nil, flywheel.Features{"user": {"tags": []any{"x"}}}, &kb, binning{})[0].h] != "user^tags=x" {
		t.Errorf("bag member misnamed: %v", got)
	}
}

func mustDecode(t *testing.T, b []byte) *Model {
	t.Helper()
	m, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// A decision's scores break into named terms that add up to them.
func TestExplainScoresAddUp(t *testing.T) {
	t.Parallel()
	cfg := Config{Kind: flywheel.KindRanker, Bits: 18, Interactions: [][2]string{{"user", "item"}}, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.1}}
	exs := segmentWorld(3000, 5)
	m := mustDecode(t, mustTrain(t, cfg, TrainConfig{}, exs))
	ex := exs[0]
	got := m.ExplainScores(ex.Context, ex.Actions)
	var r Ranking
	m.Policy(ex.Context, ex.Actions, &r)
	for i, as := range got {
		sum := 0.0
		for _, c := range as.Terms {
			if c.Name == "" {
				t.Fatalf("action %d: unnamed term %+v", i, c)
			}
			sum += c.Term
		}
		if math.Abs(sum-r.Scores[i]) > 1e-9 || as.Probability != r.Probabilities[i] {
			t.Fatalf("action %d: terms add to %v, score %v", i, sum, r.Scores[i])
		}
	}
	seg := ex.Context["user"]["segment"].(string)
	if top := got[slices.IndexFunc(ex.Actions, func(a flywheel.Action) bool { return a.ID == seg })].Terms[0].Name; top != "user^segment="+seg+" * item^category="+seg {
		t.Errorf("the favourite's largest term is %q", top)
	}
}
