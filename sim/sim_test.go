package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/flywheel-dev/flywheel"
)

// Popularity must not be optimal: the best item differs between segments, and
// the best single item for everyone is well below the oracle.
func TestWorldNeedsInteractions(t *testing.T) {
	t.Parallel()
	w := NewWorld(1)
	best := map[string]bool{}
	oracle := 0.0
	itemAvg := make([]float64, len(w.Items))
	for _, s := range w.Segments {
		b, bp := "", -1.0
		for i, it := range w.Items {
			p := w.ClickProbability(s, it)
			itemAvg[i] += p / float64(len(w.Segments))
			if p > bp {
				b, bp = it.ID, p
			}
		}
		best[b] = true
		oracle += bp / float64(len(w.Segments))
	}
	popular := 0.0
	for _, a := range itemAvg {
		popular = max(popular, a)
	}
	if len(best) != len(w.Segments) {
		t.Errorf("%d distinct best items for %d segments", len(best), len(w.Segments))
	}
	if popular > 0.6*oracle {
		t.Errorf("the most popular item earns %.3f, the oracle %.3f: popularity is nearly optimal", popular, oracle)
	}
	t.Logf("oracle %.3f, best single item %.3f", oracle, popular)
}

// meanRandomOracle is the expected reward of the uniformly random and of the
// oracle policy over n requests of w.
func meanRandomOracle(w Env, seed uint64, n int) (random, oracle float64) {
	rng := rand.New(rand.NewPCG(seed, 2))
	for range n {
		_, _, truth := w.Draw(rng)
		sum, best := 0.0, 0.0
		for _, p := range truth {
			sum += p
			best = max(best, p)
		}
		random += sum / float64(len(truth))
		oracle += best
	}
	return random / float64(n), oracle / float64(n)
}

// Every world leaves a learner much to gain: the oracle earns far more than
// random choice.
func TestWorldsOracleBeatsRandom(t *testing.T) {
	t.Parallel()
	for _, name := range Worlds() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			w, err := NewEnv(name, 1)
			if err != nil {
				t.Fatal(err)
			}
			if w.Name() != name {
				t.Errorf("NewEnv(%q) is named %q", name, w.Name())
			}
			random, oracle := meanRandomOracle(w, 1, 5000)
			if oracle < 2*random || oracle-random < 0.15 {
				t.Errorf("oracle %.3f, random %.3f: not a clear margin", oracle, random)
			}
			t.Logf("random %.3f, oracle %.3f", random, oracle)
		})
	}
	if _, err := NewEnv("nope", 1); err == nil || !strings.Contains(err.Error(), "shop") {
		t.Errorf("an unknown world: %v, want an error naming the worlds", err)
	}
}

// A world and its requests are a function of the seeds alone.
func TestWorldsDeterministic(t *testing.T) {
	t.Parallel()
	for _, name := range Worlds() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			draw := func(world, traffic uint64) string {
				w, _ := NewEnv(name, world)
				rng := rand.New(rand.NewPCG(traffic, 0))
				var b strings.Builder
				for range 50 {
					ctx, acts, truth := w.Draw(rng)
					fmt.Fprintf(&b, "%v %v %v\n", ctx, acts, truth)
				}
				return b.String()
			}
			a := draw(1, 1)
			if b := draw(1, 1); a != b {
				t.Error("the same seeds drew different requests")
			}
			if b := draw(2, 1); a == b {
				t.Error("another world seed drew the same requests and truth")
			}
			if b := draw(1, 2); a == b {
				t.Error("another traffic seed drew the same requests")
			}
		})
	}
}

// The shop's best offer depends on income × price: the liked price grows
// with income, and a price far from it, either way, costs clicks.
func TestShopPriceDependsOnIncome(t *testing.T) {
	t.Parallel()
	s := NewShop(1)
	cheap, dear := ShopItem{Category: "books", Price: 15, Quality: 0.5}, ShopItem{Category: "books", Price: 400, Quality: 0.5}
	if lo, hi := s.ClickProbability(10, 12, cheap), s.ClickProbability(10, 12, dear); lo <= hi {
		t.Errorf("a low income clicks a 15-dollar item %.3f, a 400-dollar one %.3f", lo, hi)
	}
	if lo, hi := s.ClickProbability(300, 12, cheap), s.ClickProbability(300, 12, dear); lo >= hi {
		t.Errorf("a high income clicks a 15-dollar item %.3f, a 400-dollar one %.3f", lo, hi)
	}
	if n := len(s.Items); n < 50 || n > 200 {
		t.Errorf("%d items", n)
	}
}

// Run plays the world it is given: the shop's requests carry 20 of its
// products and a user's income and hour.
func TestRunShop(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/rank" {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		var req struct {
			Context flywheel.Features `json:"context"`
			Actions []flywheel.Action `json:"actions"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Actions) != 20 || req.Context["user"]["income"] == nil {
			http.Error(w, fmt.Sprintf("bad request: %v, %d actions, context %v", err, len(req.Actions), req.Context), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, `{"event_id": "e", "model_version": 1, "chosen": %q}`, req.Actions[0].ID)
	}))
	defer srv.Close()
	res, err := Run(context.Background(), Config{URL: srv.URL, World: "shop", Events: 200, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 || res.Events != 200 || res.OracleRewardRate < 2*res.RandomRewardRate {
		t.Errorf("%+v", res)
	}
	if _, err := Run(context.Background(), Config{URL: srv.URL, World: "moon", Events: 1}); err == nil {
		t.Error("an unknown world ran")
	}
}

// A server answering the uniform policy's probabilities has, in every
// window and for its version, an expected reward equal to random's on the
// same contexts; the windows cover every decision in order.
func TestRunWindows(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/rank" {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		var req struct {
			Actions []flywheel.Action `json:"actions"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var ranking []string
		for _, a := range req.Actions {
			ranking = append(ranking, fmt.Sprintf(`{"id": %q, "probability": %g}`, a.ID, 1/float64(len(req.Actions))))
		}
		fmt.Fprintf(w, `{"event_id": "e", "model_version": 3, "chosen": %q, "ranking": [%s]}`, req.Actions[0].ID, strings.Join(ranking, ","))
	}))
	defer srv.Close()
	for _, world := range Worlds() {
		res, err := Run(context.Background(), Config{URL: srv.URL, World: world, Events: 250, Window: 100, Concurrency: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Windows) != 3 || res.Windows[2].Start != 200 || res.Windows[2].End != 250 || res.Windows[2].Decisions != 50 {
			t.Fatalf("%s: windows %+v", world, res.Windows)
		}
		near := func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
		for _, w := range res.Windows {
			if !near(w.ExpectedReward, w.RandomRewardRate) || w.Versions[3] != w.Decisions {
				t.Errorf("%s: window %+v: expected reward is not random's", world, w)
			}
		}
		if v := res.Versions[0]; !near(v.ExpectedReward, res.RandomRewardRate) {
			t.Errorf("%s: version %+v, random %v", world, v, res.RandomRewardRate)
		}
	}
}
