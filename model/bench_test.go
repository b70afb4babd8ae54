package model

import (
	"fmt"
	"testing"

	"github.com/flywheel-dev/flywheel"
)

// benchRequest is a request of the serving benchmark's shape: 20 actions and
// about 30 features.
func benchRequest() (flywheel.Features, []flywheel.Action) {
	ctx := flywheel.Features{"user": {"segment": "b", "age": 31.0, "country": "fr", "device": "ios", "tags": []any{"x", "y", "z"}}}
	as := make([]flywheel.Action, 20)
	for i := range as {
		as[i] = flywheel.Action{ID: fmt.Sprint("a", i), Features: flywheel.Features{"item": {
			"id": fmt.Sprint("i", i), "category": fmt.Sprint("c", i%5), "price": float64(i) * 1.5, "new": i%3 == 0}}}
	}
	return ctx, as
}

func BenchmarkRank(b *testing.B) {
	m, _ := New(Config{Kind: flywheel.KindRanker, Bits: 18, Interactions: [][2]string{{"user", "item"}}, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.05}})
	ctx, as := benchRequest()
	var r Ranking
	_ = m.Rank("warm", ctx, as, &r)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = m.Rank("event", ctx, as, &r)
	}
}

func BenchmarkLearnRanker(b *testing.B) {
	m, _ := New(Config{Kind: flywheel.KindRanker, Bits: 18, Interactions: [][2]string{{"user", "item"}}, Exploration: Exploration{Policy: EpsilonGreedy, Epsilon: 0.05}})
	ctx, as := benchRequest()
	probs := make([]float64, len(as))
	for i := range probs {
		probs[i] = 1.0 / float64(len(as))
	}
	tr := NewTrainer(m, TrainConfig{})
	ex := &flywheel.Example{Context: ctx, Actions: as, Probabilities: probs, Reward: 1}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ex.ChosenIndex = i % len(as)
		_ = tr.LearnRanker(ex)
	}
}

func TestRankAllocatesNothing(t *testing.T) {
	m, _ := New(Config{Kind: flywheel.KindRanker, Bits: 18, Interactions: [][2]string{{"user", "item"}}, Exploration: Exploration{Policy: SquareCB, Gamma: 10}})
	ctx, as := benchRequest()
	var r Ranking
	_ = m.Rank("warm", ctx, as, &r)
	if n := testing.AllocsPerRun(200, func() { _ = m.Rank("event", ctx, as, &r) }); n != 0 {
		t.Fatalf("Rank allocates %.1f times per call in steady state", n)
	}
}
