// Package sim is simulated product apps (worlds) with a hidden ground truth.
// In the default world, "homepage", users belong to segments; items belong
// to categories; each segment strongly prefers one category, and items differ
// in quality. The best item therefore depends on the segment × category
// interaction: ranking by popularity is far from optimal. The second world,
// "shop" (Shop), has continuous effects that depend on other continuous
// features and many more items than a request offers. The simulator asks
// Flywheel to rank, draws a click from the truth for the chosen item, and
// reports the reward rate of each model version next to a random and an
// oracle policy on the same contexts; backtests (retrain.Backtest) draw from
// the same worlds in process.
package sim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/client"
)

// Config configures a run.
type Config struct {
	URL         string  // base URL of a Flywheel server
	Model       string  // ranker to call; default homepage
	Events      int     // decisions to ask for
	Concurrency int     // parallel users; default 4
	Rate        float64 // events per second overall; 0: as fast as possible
	Seed        uint64  // ground truth and traffic; default 1
	// World names the simulated product (see Worlds); default "homepage".
	World  string
	APIKey string // app key, if the server wants one
	// PublishReferences stores the random and oracle reward rates measured
	// on this run's contexts as the model's references, which the
	// dashboard draws next to the versions.
	PublishReferences bool
	Timeout           time.Duration // per request; default 5s
	// Window is the number of decisions of each Result.Windows entry, by
	// the decisions' order of asking; default 10,000.
	Window int
	Client *http.Client
}

// Env is a simulated product: a hidden ground truth that draws requests.
// Draw returns one request's context and offered actions, and the expected
// reward (the click probability) of each action, which only the simulator
// knows. The worlds are safe for concurrent use; rng is the caller's.
type Env interface {
	Name() string
	Draw(rng *rand.Rand) (ctx flywheel.Features, actions []flywheel.Action, truth []float64)
}

// Default is the name of the default world.
const Default = "homepage"

// Worlds are the names of the simulated products, the default first.
func Worlds() []string { return []string{Default, "shop"} }

// NewEnv returns the world of that name for a seed ("" is Default), or an
// error naming the worlds there are.
func NewEnv(name string, seed uint64) (Env, error) {
	switch name {
	case "", Default:
		return NewWorld(seed), nil
	case "shop":
		return NewShop(seed), nil
	}
	return nil, fmt.Errorf("sim: unknown world %q (worlds: %s)", name, strings.Join(Worlds(), ", "))
}

var (
	_ Env = (*World)(nil)
	_ Env = (*Shop)(nil)
)

// World is the hidden ground truth of the default world, "homepage".
type World struct {
	Segments  []string
	Items     []Item
	favourite map[string]string // segment → category
}

// Item is one product.
type Item struct {
	ID       string
	Category string
	Price    float64
	Quality  float64
}

// NewWorld builds the ground truth for a seed: 5 segments, 5 categories,
// 10 items (two per category).
func NewWorld(seed uint64) *World {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	w := &World{favourite: map[string]string{}}
	cats := []string{"shoes", "books", "games", "garden", "music"}
	perm := rng.Perm(len(cats)) // every segment prefers a different category
	for i, s := range []string{"students", "parents", "gamers", "gardeners", "musicians"} {
		w.Segments = append(w.Segments, s)
		w.favourite[s] = cats[perm[i]]
	}
	for i := 0; i < 10; i++ {
		w.Items = append(w.Items, Item{
			ID: fmt.Sprintf("item-%02d", i), Category: cats[i%len(cats)],
			Price: math.Round((5+rng.Float64()*95)*100) / 100, Quality: 0.5 + rng.Float64()*0.5,
		})
	}
	return w
}

// ClickProbability is the truth: a small base rate, a bonus for quality, and
// a large bonus when the item's category is the segment's favourite.
func (w *World) ClickProbability(segment string, it Item) float64 {
	p := 0.03 + 0.1*it.Quality
	if w.favourite[segment] == it.Category {
		p += 0.6 * it.Quality
	}
	return p
}

// Name returns "homepage".
func (w *World) Name() string { return Default }

// Draw returns a user of a random segment (with an age the truth ignores)
// and every item.
func (w *World) Draw(rng *rand.Rand) (flywheel.Features, []flywheel.Action, []float64) {
	seg := w.Segments[rng.IntN(len(w.Segments))]
	age := rng.Float64()*50 + 18
	ctx := flywheel.Features{"user": {"segment": seg, "age": math.Round(age)}}
	actions := make([]flywheel.Action, len(w.Items))
	truth := make([]float64, len(w.Items))
	for i, it := range w.Items {
		actions[i] = flywheel.Action{ID: it.ID, Features: flywheel.Features{"item": {"id": it.ID, "category": it.Category, "price": it.Price}}}
		truth[i] = w.ClickProbability(seg, it)
	}
	return ctx, actions, truth
}

// Result is the report of a run.
type Result struct {
	Events int `json:"events"`
	Errors int `json:"errors"`
	// FirstError is what the first failed request failed with.
	FirstError       string          `json:"first_error,omitempty"`
	Versions         []VersionResult `json:"versions"`
	RandomRewardRate float64         `json:"random_reward_rate"`
	OracleRewardRate float64         `json:"oracle_reward_rate"`
	// Windows are the figures of consecutive windows of Config.Window
	// decisions (the last may be shorter), in order.
	Windows []WindowResult `json:"windows"`
	// ReferencesError says why publishing the references failed.
	ReferencesError string `json:"references_error,omitempty"`
	// EventIDs are the ids of every decision received, for checks.
	EventIDs []string `json:"-"`
}

// VersionResult is the observed reward rate of one model version, and its
// expected reward: the mean over its decisions of the truth's click
// probabilities weighted by the probabilities the server answered (the
// policy's exact value on those contexts, exploration included; the chosen
// action's click probability when the answer has no probabilities).
type VersionResult struct {
	Version        int     `json:"version"`
	Decisions      int     `json:"decisions"`
	RewardRate     float64 `json:"reward_rate"`
	StdErr         float64 `json:"std_err"`
	ExpectedReward float64 `json:"expected_reward"`
	// ExpectedStdErr is the standard error of ExpectedReward over contexts.
	ExpectedStdErr float64 `json:"expected_std_err"`
}

// WindowResult is one window of decisions: from Start (the index of its
// first decision) to End (one past its last). ExpectedReward is as in
// VersionResult; random and oracle are on the same contexts; Versions
// counts the decisions each model version answered in the window.
type WindowResult struct {
	Start            int         `json:"start"`
	End              int         `json:"end"`
	Decisions        int         `json:"decisions"`
	RewardRate       float64     `json:"reward_rate"`
	ExpectedReward   float64     `json:"expected_reward"`
	RandomRewardRate float64     `json:"random_reward_rate"`
	OracleRewardRate float64     `json:"oracle_reward_rate"`
	Versions         map[int]int `json:"versions"`
}

// acc sums one group of decisions.
type acc struct {
	n, clicks                    int
	expected, expectedSq, random float64
	oracle                       float64
	versions                     map[int]int
}

// expected is the policy's expected reward on one decision: Σ p·truth over
// the answered ranking's first-slot probabilities, or the chosen action's
// truth when the answer has none.
func expected(r *client.RankResponse, actions []flywheel.Action, truth []float64) float64 {
	byID := make(map[string]float64, len(actions))
	for j, a := range actions {
		byID[a.ID] = truth[j]
	}
	e, total := 0.0, 0.0
	for _, x := range r.Ranking {
		e += x.Probability * byID[x.ID]
		total += x.Probability
	}
	if total < 0.999 || total > 1.001 {
		return byID[r.Chosen]
	}
	return e
}

// Run plays cfg.Events users against the server and reports. It stops early,
// with what it has, when ctx ends. Requests that fail (after the client's
// retries) are counted in Errors.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	own := cfg.Client == nil
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if own {
		defer cfg.Client.CloseIdleConnections()
	}
	world, err := NewEnv(cfg.World, cfg.Seed)
	if err != nil {
		return nil, err
	}
	s := &session{cfg: cfg, world: world, runID: fmt.Sprintf("%x", time.Now().UnixNano()),
		api:   &client.Client{BaseURL: cfg.URL, Key: cfg.APIKey, HTTP: cfg.Client},
		res:   &Result{},
		byVer: map[int]*acc{}, windows: make([]acc, (cfg.Events+cfg.Window-1)/cfg.Window)}
	var interval time.Duration
	if cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(cfg.Concurrency) / cfg.Rate)
	}
	var wg sync.WaitGroup
	for w := 0; w < cfg.Concurrency; w++ {
		wg.Add(1)
		go func(worker int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(worker)+uint64(time.Now().UnixNano())))
			for {
				i, ok := s.take(ctx)
				if !ok {
					return
				}
				if interval > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(interval):
					}
				}
				s.play(ctx, rng, i)
			}
		}(w)
	}
	wg.Wait()
	return s.result(ctx), nil
}

func (cfg Config) withDefaults() (Config, error) {
	if cfg.URL == "" {
		return cfg, errors.New("sim: url is empty")
	}
	if cfg.Events <= 0 {
		return cfg, errors.New("sim: events must be positive")
	}
	if cfg.Model == "" {
		cfg.Model = "homepage"
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Window <= 0 {
		cfg.Window = 10000
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: cfg.Timeout, Transport: client.Transport(cfg.Concurrency)}
	}
	return cfg, nil
}

// session is one run: the users it plays and what it has seen so far.
type session struct {
	cfg     Config
	world   Env
	runID   string
	api     *client.Client
	mu      sync.Mutex // guards what follows
	next    int
	res     *Result
	byVer   map[int]*acc
	windows []acc
	total   acc // every decision: random and oracle references
}

// take returns the index of the next decision to play, or false when all
// are taken or ctx ended.
func (s *session) take(ctx context.Context) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.next
	s.next++
	return i, i < s.cfg.Events && ctx.Err() == nil
}

// play draws user i, asks for a decision, draws the click from the truth,
// sends it as feedback, and records what happened.
func (s *session) play(ctx context.Context, rng *rand.Rand, i int) {
	reqCtx, actions, truth := s.world.Draw(rng)
	resp, err := s.api.Rank(ctx, client.RankRequest{Model: s.cfg.Model, EventID: fmt.Sprintf("sim-%s-%d", s.runID, i), Context: reqCtx, Actions: actions})
	if err != nil {
		s.failed("rank", err)
		return
	}
	pChosen, random, best := 0.0, 0.0, 0.0
	for j, a := range actions {
		random += truth[j] / float64(len(actions))
		best = math.Max(best, truth[j])
		if a.ID == resp.Chosen {
			pChosen = truth[j]
		}
	}
	click := rng.Float64() < pChosen
	if click {
		if _, err := s.api.SendFeedback(ctx, client.Feedback{EventID: resp.EventID, Reward: 1, Type: "click"}); err != nil {
			s.failed("feedback", err)
		}
	}
	exp := expected(resp, actions, truth)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.res.Events++
	s.res.EventIDs = append(s.res.EventIDs, resp.EventID)
	v := s.byVer[resp.ModelVersion]
	if v == nil {
		v = &acc{}
		s.byVer[resp.ModelVersion] = v
	}
	win := &s.windows[i/s.cfg.Window]
	for _, a := range []*acc{v, win, &s.total} {
		a.n++
		if click {
			a.clicks++
		}
		a.expected += exp
		a.expectedSq += exp * exp
		a.random += random
		a.oracle += best
	}
	if win.versions == nil {
		win.versions = map[int]int{}
	}
	win.versions[resp.ModelVersion]++
}

func (s *session) failed(what string, err error) {
	s.mu.Lock()
	s.res.Errors++
	if s.res.FirstError == "" {
		s.res.FirstError = fmt.Sprintf("%s at %s: %v", what, time.Now().Format(time.RFC3339Nano), err)
	}
	s.mu.Unlock()
}

// result sums up the session and, when asked, publishes the references.
func (s *session) result(ctx context.Context) *Result {
	res := s.res
	for v, a := range s.byVer {
		n := float64(a.n)
		r, e := float64(a.clicks)/n, a.expected/n
		res.Versions = append(res.Versions, VersionResult{Version: v, Decisions: a.n, RewardRate: r, StdErr: math.Sqrt(r * (1 - r) / n),
			ExpectedReward: e, ExpectedStdErr: math.Sqrt(math.Max(a.expectedSq/n-e*e, 0) / n)})
	}
	for k, a := range s.windows {
		if a.n == 0 {
			continue
		}
		n := float64(a.n)
		res.Windows = append(res.Windows, WindowResult{Start: k * s.cfg.Window, End: min((k+1)*s.cfg.Window, s.cfg.Events), Decisions: a.n,
			RewardRate: float64(a.clicks) / n, ExpectedReward: a.expected / n, RandomRewardRate: a.random / n,
			OracleRewardRate: a.oracle / n, Versions: a.versions})
	}
	sort.Slice(res.Versions, func(i, j int) bool { return res.Versions[i].Version < res.Versions[j].Version })
	if res.Events > 0 {
		res.RandomRewardRate = s.total.random / float64(res.Events)
		res.OracleRewardRate = s.total.oracle / float64(res.Events)
		if s.cfg.PublishReferences {
			refs := map[string]any{"references": map[string]float64{"random": res.RandomRewardRate, "oracle": res.OracleRewardRate}, "source": "simulator"}
			if err := s.api.Do(ctx, http.MethodPut, "/v1/models/"+s.cfg.Model+"/references", refs, nil); err != nil {
				res.ReferencesError = err.Error()
			}
		}
	}
	return res
}
