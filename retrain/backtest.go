package retrain

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/deploy"
	"github.com/flywheel-dev/flywheel/model"
)

// A backtest plays a simulated world through the loop in virtual time, in
// process: the served policy (the champion, exploring with its exact
// probabilities) draws every decision, the world's hidden truth draws its
// reward, and on the retrain schedule (a cron spec read in virtual time) a
// run does what a scheduled run does, on the decisions whose reward window
// has closed: the same window, the same time-ordered holdout after the
// references' cutoff, the same learner (full, or incremental from the
// champion's artifact with its optimizer state), the same evaluation and the
// same promotion rule (Decide, with the anchor). What it leaves out: Kafka and
// ClickHouse (a decision closes IngestLag after its reward window ends, as
// if the closing watermark always stood that far behind: 0, no lag). With
// promote.canary.share, a candidate that passes (or whose evidence is
// inconclusive) serves that share of the decisions as the canary, the runs
// wait, and every CheckInterval the judge's rule (deploy.CanaryVerdict)
// decides on the closed decisions since it began, as the canary judge does.

// World is a simulated product: Draw returns one request's context and
// offered actions and the expected reward of each action, the hidden truth.
// sim's worlds are ones.
type World interface {
	Draw(rng *rand.Rand) (ctx flywheel.Features, actions []flywheel.Action, truth []float64)
}

// BacktestOptions configure a backtest.
type BacktestOptions struct {
	// Model is the model's configuration (defaults are applied): its
	// exploration, retrain (Retrain.Schedule is read in virtual time),
	// promotion rule and canary.
	Model flywheel.ModelConfig
	World World
	// Decisions to play; required.
	Decisions int
	// Rate is decisions per virtual second; default 100.
	Rate float64
	// Every is the decisions per reported window; default 5000.
	Every int
	// Seed draws the traffic and the rewards; default 1. The same seed gives
	// the same contexts in every setting, so settings compare on the same
	// users.
	Seed uint64
	// IngestLag is how long after its reward window ends a decision closes
	// (virtual time): ingest's watermark interval, batches and spool claims,
	// 1–2 s in normal operation, minutes when ingest falls behind. Default 0.
	IngestLag time.Duration
	// CheckInterval is how often the canary is judged (deploy.check_interval),
	// in virtual time; default 15 s.
	CheckInterval time.Duration
}

// BacktestResult is what a backtest served and what its runs did.
type BacktestResult struct {
	Decisions  int              `json:"decisions"`
	Windows    []BacktestWindow `json:"windows"`
	Runs       []BacktestRun    `json:"runs"`
	Promotions int              `json:"promotions"`
	Rejections int              `json:"rejections"`
	Skips      int              `json:"skips"`
	Champion   int              `json:"champion"` // at the end
	// The gate's record against the truth (BacktestRun.CandidateValue):
	// promotions of a candidate truly worse than the champion it replaced,
	// at all and by more than the margin (promote.margin, a share of the
	// champion's value), and rejections of one truly better by more than
	// the margin.
	WorsePromotions       int `json:"worse_promotions"`
	WorseBeyondMargin     int `json:"worse_beyond_margin_promotions"`
	BetterBeyondMarginOut int `json:"better_beyond_margin_rejections"`

	value, random, oracle []float64 // prefix sums per decision
}

// BacktestWindow is the reward of decisions [From, To).
type BacktestWindow struct {
	From int `json:"from"`
	To   int `json:"to"`
	// Reward is the expected reward of the served policy, exploration
	// included, on these contexts (Σ probability × truth); Observed is the
	// share of decisions rewarded.
	Reward   float64 `json:"reward"`
	Observed float64 `json:"observed"`
	Random   float64 `json:"random"`
	Oracle   float64 `json:"oracle"`
	Versions []int   `json:"versions"` // served in the window, in order
}

// BacktestRun is one scheduled run.
type BacktestRun struct {
	Decision    int           `json:"decision"` // decisions served before it
	At          time.Duration `json:"at_ns"`    // virtual time since the start
	Outcome     string        `json:"outcome"`
	Reason      string        `json:"reason"`
	Version     int           `json:"version,omitempty"`
	Champion    int           `json:"champion"`
	Training    string        `json:"training,omitempty"` // TrainedFull or TrainedIncremental
	TrainRows   int           `json:"train_rows,omitempty"`
	HoldoutRows int           `json:"holdout_rows,omitempty"`
	JudgedRows  int           `json:"judged_rows,omitempty"` // the evidence: the holdout, or the examples judged progressively
	// CandidateValue and ChampionValue are the true expected reward of the
	// candidate's policy and of the champion's, exploration included, on
	// the same fixed sample of the world's requests (truthContexts of
	// them): what the gate estimated from logged data, known exactly.
	// Both are set for a run that trained a candidate and for a canary
	// verdict.
	CandidateValue float64 `json:"candidate_true_value,omitempty"`
	ChampionValue  float64 `json:"champion_true_value,omitempty"`
}

// truthContexts is how many requests of the world the true values of the
// candidates are measured on: the same ones for every model, so that a
// difference between two models is not sampling noise.
const truthContexts = 2000

// truthSample is a fixed sample of a world's requests with their truth.
type truthSample struct {
	ids     []string
	ctx     []flywheel.Features
	actions [][]flywheel.Action
	truth   [][]float64
	values  map[int]float64 // by version
	rk      model.Ranking
}

func newTruthSample(w World, seed uint64) *truthSample {
	rng := rand.New(rand.NewPCG(seed, 0x7e57ed))
	t := &truthSample{values: map[int]float64{}}
	for range truthContexts {
		c, a, tr := w.Draw(rng)
		t.ids = append(t.ids, fmt.Sprintf("truth-%d", len(t.ids)))
		t.ctx, t.actions, t.truth = append(t.ctx, c), append(t.actions, a), append(t.truth, tr)
	}
	return t
}

// value returns the expected reward of version v's policy, m, on the
// sample (cached by version), or NaN if m cannot rank a request of it.
func (t *truthSample) value(v int, m *model.Model) float64 {
	if x, ok := t.values[v]; ok {
		return x
	}
	sum := 0.0
	for i := range t.ctx {
		if err := m.Rank(t.ids[i], t.ctx[i], t.actions[i], &t.rk); err != nil {
			return math.NaN()
		}
		for j, pr := range t.truth[i] {
			sum += t.rk.Probabilities[j] * pr
		}
	}
	x := sum / float64(len(t.ctx))
	t.values[v] = x
	return x
}

// score sets run's true values, candidate cand (version run.Version) and
// the champion's, and counts in res a promotion of a worse candidate or a
// rejection of a better one (by the margin, a share of the champion's
// value, as the gate's is of its estimate).
func (b *backtest) score(run *BacktestRun, cand *model.Model, res *BacktestResult) {
	if cand == nil || b.truth == nil {
		return
	}
	champ := b.versions[run.Champion]
	if champ == nil {
		return
	}
	run.CandidateValue = b.truth.value(run.Version, cand)
	run.ChampionValue = b.truth.value(run.Champion, champ.m)
	margin := b.mc.Promote.Margin * run.ChampionValue
	switch run.Outcome {
	case Promoted:
		if run.CandidateValue < run.ChampionValue {
			res.WorsePromotions++
		}
		if run.CandidateValue < run.ChampionValue-margin {
			res.WorseBeyondMargin++
		}
	case Rejected:
		if run.CandidateValue > run.ChampionValue+margin {
			res.BetterBeyondMarginOut++
		}
	}
}

// Mean returns the mean expected reward of the served policy, of random
// choice and of the oracle over decisions [from, to), clipped to those
// played (zeros when none are).
func (r *BacktestResult) Mean(from, to int) (reward, random, oracle float64) {
	from, to = max(from, 0), min(to, r.Decisions)
	if to <= from {
		return 0, 0, 0
	}
	n := float64(to - from)
	return (r.value[to] - r.value[from]) / n, (r.random[to] - r.random[from]) / n, (r.oracle[to] - r.oracle[from]) / n
}

// btVersion is a registered version as a run needs it: the model, the
// first time it did not learn from (trainedBefore), its anchor and, under
// incremental training, its artifact with the optimizer state and its link
// in the chain.
type btVersion struct {
	m      *model.Model
	cutoff uint64
	anchor int
	art    []byte
	link   int
}

type backtest struct {
	mc       flywheel.ModelConfig
	shape    model.Config
	log      []flywheel.Example
	ts       []uint64 // ts_ms of log
	versions map[int]*btVersion
	champV   int
	latest   int
	dataTo   uint64 // the latest version's DataToMs: FreshCount's watermark
	lag      time.Duration
	canaried []bool    // per decision of log: served by the canary
	canary   *btCanary // the live canary, nil without one
	truth    *truthSample
}

// btCanary is a backtest's live canary.
type btCanary struct {
	v      int
	since  time.Time
	strict bool // the gate's evidence was inconclusive
}

// Backtest plays o.Decisions decisions of o.World in virtual time and
// returns the reward by window and every run, or an error for an invalid
// option or configuration, or ctx's error when it ends first. It is
// deterministic: the same options give the same result.
func Backtest(ctx context.Context, o BacktestOptions) (*BacktestResult, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	p, err := newPlayer(o)
	if err != nil {
		return nil, err
	}
	for i := 0; i < o.Decisions; i++ {
		if i%1000 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		at := p.start.Add(time.Duration(float64(i) / o.Rate * float64(time.Second)))
		p.runsDue(i, at)
		if err := p.checkDue(i, at); err != nil {
			return nil, err
		}
		if err := p.decide(i, at); err != nil {
			return nil, err
		}
	}
	p.res.Decisions, p.res.Champion = o.Decisions, p.b.champV
	return p.res, nil
}

// withDefaults returns o with the defaults of its zero fields, or an error
// for a missing world, a number of decisions that is not positive or a
// rate that is negative or not finite.
func (o BacktestOptions) withDefaults() (BacktestOptions, error) {
	if o.World == nil || o.Decisions <= 0 {
		return o, errors.New("backtest: a world and a positive number of decisions are required")
	}
	if o.Rate == 0 {
		o.Rate = 100
	}
	if !(o.Rate > 0) || math.IsInf(o.Rate, 0) {
		return o, fmt.Errorf("backtest: rate must be positive; got %v", o.Rate)
	}
	if o.Every <= 0 {
		o.Every = 5000
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = 15 * time.Second
	}
	if o.IngestLag < 0 {
		return o, fmt.Errorf("backtest: ingest lag must not be negative; got %v", o.IngestLag)
	}
	return o, nil
}

// player plays the decisions of a backtest one by one, and does the
// scheduled runs as their time comes.
type player struct {
	o        BacktestOptions
	b        *backtest
	res      *BacktestResult
	sched    cron.Schedule
	start    time.Time // the virtual time of the first decision
	next     time.Time // of the next scheduled run
	check    time.Time // of the next check of a canary
	traffic  *rand.Rand
	split    *rand.Rand // who the canary serves
	rewards  *rand.Rand
	rk       model.Ranking
	win      *BacktestWindow // the window open, nil between windows
	observed float64         // the rewards in win
}

// newPlayer returns the player of o, which has its defaults, with version
// 1, o.Model's bootstrap model, the champion; or an error if o.Model (as a
// ranker without canary) is invalid.
func newPlayer(o BacktestOptions) (*player, error) {
	mc := o.Model.WithDefaults()
	mc.Kind = flywheel.KindRanker
	if err := mc.Validate("backtest"); err != nil {
		return nil, err
	}
	sched, err := cronParser().Parse(mc.Retrain.Schedule)
	if err != nil {
		return nil, fmt.Errorf("backtest: retrain.schedule %q: %w", mc.Retrain.Schedule, err)
	}
	boot, err := model.FromConfig(mc)
	if err != nil {
		return nil, err
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &player{
		o:       o,
		b:       &backtest{mc: mc, shape: boot.Config(), versions: map[int]*btVersion{1: {m: boot, anchor: 1}}, champV: 1, latest: 1, lag: o.IngestLag, truth: newTruthSample(o.World, o.Seed)},
		res:     &BacktestResult{value: []float64{0}, random: []float64{0}, oracle: []float64{0}},
		sched:   sched,
		start:   start,
		next:    sched.Next(start),
		traffic: rand.New(rand.NewPCG(o.Seed, 0x7aff1c)),
		rewards: rand.New(rand.NewPCG(o.Seed, 0x4e3a4d)),
		split:   rand.New(rand.NewPCG(o.Seed, 0x5c1a77)),
	}, nil
}

// runsDue does the runs scheduled up to virtual time at, decision i's, and
// counts their outcomes.
func (p *player) runsDue(i int, at time.Time) {
	for !p.next.After(at) {
		run, cand := p.b.run(p.next)
		run.Decision, run.At = i, p.next.Sub(p.start)
		p.b.score(&run, cand, p.res)
		switch run.Outcome {
		case Promoted:
			p.res.Promotions++
		case Rejected:
			p.res.Rejections++
		case Canaried:
			p.check = p.next.Add(p.o.CheckInterval)
		default:
			p.res.Skips++
		}
		p.res.Runs = append(p.res.Runs, run)
		p.next = p.sched.Next(p.next)
	}
}

// decide plays decision i at virtual time at: the champion ranks a request
// the world draws, the world rewards the choice, and the decision is
// logged and summed into its window, which it opens or closes as needed.
// It returns an error if the champion cannot rank the request.
func (p *player) decide(i int, at time.Time) error {
	b, res := p.b, p.res
	if p.win == nil {
		res.Windows = append(res.Windows, BacktestWindow{From: i})
		p.win, p.observed = &res.Windows[len(res.Windows)-1], 0
	}
	rctx, actions, truth := p.o.World.Draw(p.traffic)
	served, canaried := b.champV, false
	if b.canary != nil && p.split.Float64() < b.mc.Promote.Canary.Share {
		served, canaried = b.canary.v, true
	}
	eventID := fmt.Sprintf("bt-%d-%d", p.o.Seed, i)
	if err := b.versions[served].m.Rank(eventID, rctx, actions, &p.rk); err != nil {
		return fmt.Errorf("backtest: decision %d: %w", i, err)
	}
	p.sum(i, truth)
	reward := 0.0
	if p.rewards.Float64() < truth[p.rk.Chosen] {
		reward = 1
	}
	p.observed += reward
	if !slices.Contains(p.win.Versions, served) { // in the order they first served (a canary's interleave)
		p.win.Versions = append(p.win.Versions, served)
	}
	b.canaried = append(b.canaried, canaried)
	b.log = append(b.log, flywheel.Example{
		EventID: eventID, Time: at, Version: served, Context: rctx, Actions: actions,
		Probabilities: append([]float64(nil), p.rk.Probabilities...), ChosenIndex: p.rk.Chosen,
		Reward: reward, HasFeedback: reward > 0,
	})
	b.ts = append(b.ts, uint64(at.UnixMilli()))
	if i+1 == p.o.Decisions || i+1-p.win.From == p.o.Every {
		p.closeWindow(i + 1)
	}
	return nil
}

// sum adds decision i's expected reward to the prefix sums: that of the
// served policy (its probabilities times truth, each action's probability
// of a reward), of random choice and of the oracle.
func (p *player) sum(i int, truth []float64) {
	res := p.res
	value, sum, best := 0.0, 0.0, 0.0
	for j, pr := range truth {
		value += p.rk.Probabilities[j] * pr
		sum += pr
		best = max(best, pr)
	}
	res.value = append(res.value, res.value[i]+value)
	res.random = append(res.random, res.random[i]+sum/float64(len(truth)))
	res.oracle = append(res.oracle, res.oracle[i]+best)
}

// closeWindow closes the open window at decision to (exclusive) with its
// means.
func (p *player) closeWindow(to int) {
	win := p.win
	win.To, p.res.Decisions = to, to
	win.Reward, win.Random, win.Oracle = p.res.Mean(win.From, win.To)
	win.Observed = p.observed / float64(win.To-win.From)
	p.win = nil
}

// span counts the closed examples with fromMs <= ts_ms <= toMs among the
// first closed ones, and returns the index of the first.
func (b *backtest) span(closed int, fromMs, toMs uint64) (first, n int) {
	ts := b.ts[:closed]
	lo := sort.Search(len(ts), func(i int) bool { return ts[i] >= fromMs })
	hi := sort.Search(len(ts), func(i int) bool { return ts[i] > toMs })
	return lo, max(hi-lo, 0)
}

// logSizer sizes the first closed examples of a backtest's log.
type logSizer struct {
	b      *backtest
	closed int
}

func (l logSizer) span(fromMs, toMs uint64) (rows, firstMs, lastMs uint64, err error) {
	lo, n := l.b.span(l.closed, fromMs, toMs)
	if n == 0 {
		return 0, 0, 0, nil
	}
	return uint64(n), l.b.ts[lo], l.b.ts[lo+n-1], nil
}

func (l logSizer) cut(fromMs, toMs, offset uint64) (cutMs, before uint64, err error) {
	cutMs, before = l.b.cut(l.closed, fromMs, toMs, offset)
	return cutMs, before, nil
}

// cut returns the ts_ms of the closed example at offset among those in
// [fromMs, toMs], and how many of them are before that time (HoldoutCut).
func (b *backtest) cut(closed int, fromMs, toMs, offset uint64) (cutMs, before uint64) {
	lo, _ := b.span(closed, fromMs, toMs)
	cutMs = b.ts[lo+int(offset)]
	_, n := b.span(closed, fromMs, cutMs-1)
	return cutMs, uint64(n)
}

// run is one scheduled run at virtual time at, as Retrainer.run does it
// against ClickHouse and the registry; it returns the candidate it trained
// too (nil when it trained none), for score.
func (b *backtest) run(at time.Time) (BacktestRun, *model.Model) {
	mc := b.mc
	out := BacktestRun{Champion: b.champV}
	if b.canary != nil {
		out.Outcome, out.Reason = Skipped, fmt.Sprintf("canary v%d is being judged; the next candidate waits for its verdict", b.canary.v)
		return out, nil
	}
	nowMs := uint64(at.UnixMilli())
	closed := b.closed(at)
	if _, fresh := b.span(closed, b.dataTo+1, math.MaxUint64); fresh < mc.Retrain.MinNewExamples {
		out.Outcome = Skipped
		out.Reason = fmt.Sprintf("%d new examples with a closed reward window since the last version; %d needed", fresh, mc.Retrain.MinNewExamples)
		return out, nil
	}
	refs := b.references()
	tc := model.TrainConfig{LearningRate: mc.Retrain.LearningRate, Objective: mc.Retrain.Objective, PriorSteps: mc.Retrain.Prior()}
	tr, link := b.resume(tc)
	out.Training = TrainedFull
	incremental := tr != nil
	if incremental {
		out.Training = TrainedIncremental
	} else {
		m, err := model.FromConfig(b.mc)
		if err != nil {
			out.Outcome, out.Reason = Failed, err.Error()
			return out, nil
		}
		tr = model.NewTrainer(m, tc)
	}
	win, lo, skip := b.plan(closed, nowMs, refs, incremental, tr.Learning() != nil)
	if skip != "" {
		out.Outcome, out.Reason = Skipped, skip
		return out, nil
	}
	// Training (trainOn) and judging (evaluation) on the same rows:
	// incremental from the champion's state on what it has not learned, or
	// full over the window; judged as it learns (progressive validation)
	// or on the holdout once trained.
	train := b.log[lo : lo+win.trainRows]
	holdout := b.log[lo+win.trainRows : lo+win.rows]
	var ev evaluation
	var pv *progressive
	if win.progressive {
		pv = &progressive{from: win.evidenceFrom, tr: tr, newJudge: func(m *model.Model) judge { return ev.judges(b.mc, m, refs) }}
	}
	b.train(tr, train, pv)
	cand := tr.Model()
	if pv == nil {
		j := ev.judges(b.mc, cand, refs)
		for i := range holdout {
			j.add(&holdout[i])
		}
	}
	var dec Decision
	if pv != nil && pv.judge == nil {
		dec = noEvidence(b.mc.Promote.Rule)
	} else {
		dec = ev.decide(b.mc, refs, &Result{}, map[string]any{})
	}
	out.Outcome, out.Reason = dec.Outcome, dec.Reason
	if out.Outcome == Inconclusive && mc.Promote.Canary.Share == 0 {
		out.Outcome, out.Reason = Rejected, out.Reason+"; no canary is configured to decide on live traffic (promote.canary.share)"
	}
	out.TrainRows, out.HoldoutRows, out.JudgedRows = len(train), len(holdout), len(holdout)
	if pv != nil {
		out.JudgedRows = pv.judged
	}
	b.register(&out, cand, tr, link, dec.Anchor, win.holdFrom, b.ts[lo+win.rows-1])
	if out.Outcome == Canaried {
		b.canary = &btCanary{v: out.Version, since: at, strict: dec.Outcome == Inconclusive}
	}
	return out, cand
}

// closed is how many decisions of the log have closed at virtual time at:
// their reward window, and the ingest lag after it, have passed.
func (b *backtest) closed(at time.Time) int {
	nowMs, rwMs := uint64(at.UnixMilli()), uint64((b.mc.Reward.Window+b.lag)/time.Millisecond)
	return sort.Search(len(b.ts), func(i int) bool { return b.ts[i]+rwMs > nowMs })
}

// checkDue judges the live canary when a check is due at virtual time at,
// decision i's, on the closed decisions since it began, by the canary
// judge's rule; its verdict, when it acts, is recorded as a run (promoted,
// or rejected for an ended canary).
func (p *player) checkDue(i int, at time.Time) error {
	b := p.b
	if b.canary == nil || at.Before(p.check) {
		return nil
	}
	p.check = at.Add(p.o.CheckInterval)
	c, h := b.online(at)
	action, reason, err := deploy.CanaryVerdict(b.mc, c, h, at.Sub(b.canary.since), func() (bool, error) { return b.canary.strict, nil })
	if err != nil || action == deploy.ActionWaiting {
		return err
	}
	run := BacktestRun{Decision: i, At: at.Sub(p.start), Version: b.canary.v, Champion: b.champV, Reason: "canary judge: " + reason}
	cand := b.versions[b.canary.v].m
	if action == deploy.ActionPromoted {
		run.Outcome = Promoted
	} else {
		run.Outcome = Rejected
	}
	b.score(&run, cand, p.res)
	if action == deploy.ActionPromoted {
		b.champV = b.canary.v
		run.Outcome = Promoted
		p.res.Promotions++
	} else {
		delete(b.versions, b.canary.v)
		run.Outcome = Rejected
		p.res.Rejections++
	}
	b.canary = nil
	p.res.Runs = append(p.res.Runs, run)
	return nil
}

// online returns the canary's and the champion's online figures over the
// decisions closed at at since the canary began, as the judge reads them.
func (b *backtest) online(at time.Time) (canary, champion deploy.Online) {
	from := sort.Search(len(b.ts), func(i int) bool { return b.ts[i] >= uint64(b.canary.since.UnixMilli()) })
	var n, sum, sq [2]float64
	for i := from; i < b.closed(at); i++ {
		k := 0
		switch {
		case b.canaried[i] && b.log[i].Version == b.canary.v:
			k = 1
		case !b.canaried[i] && b.log[i].Version == b.champV:
		default:
			continue
		}
		r := b.log[i].Reward
		n[k], sum[k], sq[k] = n[k]+1, sum[k]+r, sq[k]+r*r
	}
	stat := func(k, version int, variant string) deploy.Online {
		o := deploy.Online{Version: version, Variant: variant, Decisions: int(n[k])}
		if n[k] > 0 {
			o.RewardRate = sum[k] / n[k]
		}
		if n[k] > 1 {
			v := (sq[k] - n[k]*o.RewardRate*o.RewardRate) / (n[k] - 1)
			o.StdErr = math.Sqrt(max(v, 0) / n[k])
		}
		return o
	}
	return stat(1, b.canary.v, flywheel.VariantCanary), stat(0, b.champV, flywheel.VariantChampion)
}

// references returns the champion and, under the non-inferior rule, its
// anchor, with their cutoff (references).
func (b *backtest) references() refs {
	champ := b.versions[b.champV]
	refs := refs{champV: b.champV, champ: champ.m, anchorV: b.champV, cutoff: champ.cutoff}
	if b.mc.Promote.Rule != flywheel.RuleSuperior && champ.anchor != b.champV {
		a := b.versions[champ.anchor]
		refs.anchorV, refs.anchor, refs.cutoff = champ.anchor, a.m, max(refs.cutoff, a.cutoff)
	}
	return refs
}

// resume returns the trainer of an incremental candidate, resumed from the
// champion's artifact, and its link in the chain; or nil and 0 when the
// candidate is trained in full: incremental training is off, the champion
// has no artifact, the chain is due a full retrain (retrain.full_every) or
// the artifact cannot be resumed.
func (b *backtest) resume(tc model.TrainConfig) (*model.Trainer, int) {
	champ := b.versions[b.champV]
	r := b.mc.Retrain
	if IncrementalOn(r) && champ.art != nil && !(r.FullEvery > 0 && champ.link+1 >= r.FullEvery) {
		if t, err := model.Resume(champ.art, b.shape, tc); err == nil {
			return t, champ.link + 1
		}
	}
	return nil, 0
}

// plan returns the window of the first closed examples that a run at nowMs
// trains and judges on, with its holdout after refs' cutoff (planWindow),
// from the champion's cutoff on when the run is incremental (startFrom),
// and the index in the log of its first example; or why the run is
// skipped.
func (b *backtest) plan(closed int, nowMs uint64, refs refs, incremental, ready bool) (win window, lo int, skip string) {
	mc := b.mc
	fromMs := nowMs - min(nowMs, uint64(mc.Retrain.Window/time.Millisecond))
	if incremental {
		fromMs = max(fromMs, b.versions[b.champV].cutoff)
	}
	win, newRows, _ := planEvidence(logSizer{b, closed}, fromMs, refs.cutoff, mc.Retrain, ready) // a log's sizer never fails
	lo, _ = b.span(closed, win.fromMs, math.MaxUint64)
	if !win.progressive && (win.trainRows == 0 || win.rows == win.trainRows) {
		return win, lo, "too few examples to split into training and holdout"
	}
	if newRows == 0 {
		return win, lo, fmt.Sprintf("the candidate would learn nothing that champion v%d did not: no closed example between its cutoff and the holdout", b.champV)
	}
	return win, lo, ""
}

// train makes retrain.passes passes of tr over train, judging the first
// pass's evidence before learning it when pv is not nil.
func (b *backtest) train(tr *model.Trainer, train []flywheel.Example, pv *progressive) {
	for pass := range b.mc.Retrain.Passes {
		for i := range train {
			if pass == 0 {
				pv.before(&train[i])
			}
			_ = tr.LearnRanker(&train[i]) // unusable examples are skipped, as a run does
		}
	}
}

// register registers cand, trained by tr, as the next version, its data up
// to lastMs and its holdout from holdFrom (the manifest's cutoff and
// watermark), with the gate's anchor decAnchor, and makes it the champion
// when out's outcome is Promoted. out gets the version, or the outcome
// Failed when tr cannot write the artifact an incremental successor needs.
func (b *backtest) register(out *BacktestRun, cand *model.Model, tr *model.Trainer, link, decAnchor int, holdFrom, lastMs uint64) {
	b.latest++
	v := b.latest
	out.Version = v
	cutoff := holdFrom
	if holdFrom > lastMs {
		cutoff = lastMs + 1
	}
	anchor := v
	if decAnchor > 0 && decAnchor < v {
		anchor = decAnchor
	}
	b.dataTo = lastMs
	if out.Outcome != Promoted && out.Outcome != Inconclusive { // inconclusive: only with a canary (run)
		return
	}
	canary := b.mc.Promote.Canary.Share > 0
	bv := &btVersion{m: cand, cutoff: cutoff, anchor: anchor, link: link}
	if IncrementalOn(b.mc.Retrain) {
		art, err := tr.MarshalBinary() // with the optimizer state, for the next incremental candidate
		if err != nil {
			out.Outcome, out.Reason = Failed, err.Error()
			return
		}
		bv.art = art
	}
	b.versions[v] = bv
	if canary {
		out.Outcome = Canaried // it serves its share until the canary judge decides (checkDue)
		return
	}
	b.champV = v
}
