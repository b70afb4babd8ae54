package retrain

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/deploy"
	"github.com/flywheel-dev/flywheel/model"
)

// Outcomes of a run.
const (
	Promoted = "promoted"
	Canaried = "canary" // passed the gate; serving a share of traffic until the canary is judged
	Rejected = "rejected"
	Skipped  = "skipped"
	Failed   = "failed"
	// Superseded: passed the gate, but the champion or the canary moved
	// while the run trained (a promotion, a manual canary): registered and
	// left alone, since it was judged against a version no longer serving.
	Superseded = "superseded"
)

// Result is what one run did and why.
type Result struct {
	Model     string `json:"model"`
	Outcome   string `json:"outcome"`
	Reason    string `json:"reason"`
	Version   int    `json:"version,omitempty"`
	Champion  int    `json:"champion"`
	TrainRows int    `json:"train_rows"`
	Holdout   int    `json:"holdout_rows"` // examples held out of training (0 under progressive validation)
	// Evidence is what the candidate was judged on (flywheel.EvidenceProgressive
	// or EvidenceHoldout, evidence.go), Judged how many examples.
	Evidence   string      `json:"evidence,omitempty"`
	Judged     int         `json:"judged_rows"`
	Comparison *Comparison `json:"comparison,omitempty"`
	// Estimator is promote.estimator, which the gate read Comparison by.
	Estimator string `json:"estimator,omitempty"`
	// Classification is set instead of Comparison for classifiers.
	Classification *ClassifierComparison `json:"classification,omitempty"`
	// Gate is the promotion rule's decision, with the evidence.
	Gate *Decision `json:"gate,omitempty"`
	// Training is TrainedFull or TrainedIncremental, and FullReason why a
	// full candidate is full.
	Training   string `json:"training,omitempty"`
	FullReason string `json:"full_reason,omitempty"`
	Took       string `json:"took"`
}

// Manifest is stored with every version: what it was trained on and how.
type Manifest struct {
	DataFromMs uint64 `json:"data_from_ms"`
	DataToMs   uint64 `json:"data_to_ms"` // watermark: newest example's ts_ms
	// IngestedThrough is ClickHouse's ingestion watermark when the window
	// was read: the newest ingested_at of the model's decisions. Rows
	// ingested later (late events) are not in this version's data.
	IngestedThrough time.Time `json:"ingested_through"`
	// Order is how the rows were fed to the learner. Training draws no
	// random numbers (exploration draws are keyed by event id), so the order
	// and the data determine the weights: there is no seed to record.
	Order       string `json:"order"`
	HoldoutFrom uint64 `json:"holdout_from_ms"`
	Rows        int    `json:"rows"`
	DataSHA256  string `json:"data_sha256"` // of the event ids and rewards, in training order
	TrainRows   int    `json:"train_rows"`
	HoldoutRows int    `json:"holdout_rows"`
	// Evidence is what the version was judged on (evidence.go): under
	// progressive validation the JudgedRows examples from EvidenceFromMs
	// on, each before it learned it; under a holdout the HoldoutRows from
	// HoldoutFrom on.
	Evidence       string               `json:"evidence,omitempty"`
	EvidenceFromMs uint64               `json:"evidence_from_ms,omitempty"`
	JudgedRows     int                  `json:"judged_rows,omitempty"`
	ConfigHash     string               `json:"config_hash"`
	Config         flywheel.ModelConfig `json:"config"`
	// WarmStartFrom is the version whose weights (not its optimizer state)
	// a version trained before incremental training started from; new
	// versions record their Chain instead.
	WarmStartFrom int `json:"warm_start_from,omitempty"`
	// Chain is how the version was trained: full or incremental, from
	// which parent, between which cutoffs (incremental.go).
	Chain
	Passes      int       `json:"passes"`
	CodeVersion string    `json:"code_version"`
	TrainedAt   time.Time `json:"trained_at"`
	// FeatureProfile summarises the features of the rows this version
	// learned from (an incremental version's, its parent's merged with the
	// rows after the parent's cutoff: the chain's): what serving compares
	// live traffic with. Versions trained before it was kept have none.
	FeatureProfile *model.FeatureProfile `json:"feature_profile,omitempty"`
}

// Registry is what retraining needs of the model registry.
type Registry interface {
	Champion(ctx context.Context, name string) (int, []byte, error)
	Get(ctx context.Context, name string, version int) (*deploy.Version, error)
	Latest(ctx context.Context, name string) (int, error)
	Register(ctx context.Context, name, kind string, artifact []byte, manifest, metrics any) (int, error)
	Alias(ctx context.Context, name, alias string) (int, error)
	// PromoteFrom and StartCanaryFrom deploy version only if champion is
	// still the champion and no canary runs, in one compare-and-set on the
	// alias history; otherwise they return an ECONFLICT error saying what
	// moved.
	PromoteFrom(ctx context.Context, name string, version, champion int, actor, reason string) error
	StartCanaryFrom(ctx context.Context, name string, version, champion int, actor, reason string) error
}

var _ Registry = (*deploy.Registry)(nil)

// Runs is what a run needs of ClickHouse besides its examples: how many
// closed examples of a model are newer than its latest version's data, and
// where to record the run.
type Runs interface {
	FreshCount(ctx context.Context, model, kind string, afterMs uint64) (uint64, error)
	RecordRun(ctx context.Context, run clickhouse.RunRecord) error
}

// Store is everything retraining reads from ClickHouse and writes to it.
type Store interface {
	Runs
	Windows
	Examples
}

var _ Store = (*clickhouse.Training)(nil)

// Options are what New builds a Retrainer from.
type Options struct {
	// Models are the configured models, by name.
	Models map[string]flywheel.ModelConfig
	// Store holds the examples and the record of runs: a
	// *clickhouse.Training. Required.
	Store Store
	// Registry is the model registry. Required.
	Registry Registry
	// CodeVersion is recorded in every manifest.
	CodeVersion string
	// Registerer registers the metrics; nil: they are not registered.
	Registerer prometheus.Registerer
	// Logger: nil discards.
	Logger *slog.Logger
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// Retrainer trains, evaluates, registers and promotes. Runs of one model
// never overlap; runs of different models may.
type Retrainer struct {
	models      map[string]flywheel.ModelConfig
	store       Store
	registry    Registry
	log         *slog.Logger
	now         func() time.Time
	codeVersion string
	locks       map[string]*sync.Mutex
	leader      Leader           // nil: this process runs every schedule
	events      deploy.Publisher // where requests are answered (AnswerWith); nil: they are not
	answering   sync.WaitGroup   // the requested runs in progress
	metrics
}

// New returns a retrainer for o.Models, or an error if a required option is
// missing, a model's configuration is invalid or the metrics cannot be
// registered.
func New(o Options) (*Retrainer, error) {
	if o.Store == nil || o.Registry == nil {
		return nil, errors.New("retrain: the store and the registry are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	r := &Retrainer{models: o.Models, store: o.Store, registry: o.Registry, log: o.Logger, now: o.Now, codeVersion: o.CodeVersion,
		locks: map[string]*sync.Mutex{}, metrics: m}
	for name, mc := range o.Models {
		if err := mc.Validate("models." + name); err != nil {
			return nil, err
		}
		r.locks[name] = &sync.Mutex{}
	}
	return r, nil
}

// ElectWith makes scheduled runs happen only while l says this process is
// the leader. Manual runs (Run) are not affected. Call before Schedule.
func (r *Retrainer) ElectWith(l Leader) { r.leader = l }

// Run retrains one model now. A run already in progress for the model makes
// this one return ECONFLICT. progress, if not nil, is told each step.
func (r *Retrainer) Run(ctx context.Context, name string, progress func(step string)) (*Result, error) {
	mc, ok := r.models[name]
	if !ok {
		return nil, flywheel.Errorf(flywheel.ENOTFOUND, "model %q is not configured", name)
	}
	mu := r.locks[name]
	if !mu.TryLock() {
		return nil, flywheel.Errorf(flywheel.ECONFLICT, "a retrain of %s is already running", name)
	}
	defer mu.Unlock()
	if progress == nil {
		progress = func(string) {}
	}
	start := r.now()
	res, err := r.run(ctx, name, mc, progress)
	if res == nil {
		res = &Result{Model: name}
	}
	res.Took = time.Since(start).Round(time.Millisecond).String()
	if err != nil {
		res.Outcome, res.Reason = Failed, err.Error()
	}
	r.runs.WithLabelValues(name, res.Outcome).Inc()
	r.seconds.WithLabelValues(name).Observe(time.Since(start).Seconds())
	r.record(ctx, res, start)
	r.log.Info("retrain finished", "model", name, "outcome", res.Outcome, "reason", res.Reason, "version", res.Version, "took", res.Took)
	return res, err
}

func (r *Retrainer) run(ctx context.Context, name string, mc flywheel.ModelConfig, progress func(string)) (*Result, error) {
	res := &Result{Model: name}
	p, err := r.prepare(ctx, name, mc, res, progress)
	if err != nil || p == nil { // an error, or res says why the run is skipped
		return res, err
	}
	art, man, metrics, err := r.trainAndJudge(ctx, name, mc, p, res, progress)
	if err != nil {
		return res, err
	}
	return res, r.registerAndDeploy(ctx, name, mc, p.champV, art, man, metrics, res, progress)
}

// plan is what a run prepared: the champion and the references the
// candidate is judged against, the window and its holdout, and the trainer
// the candidate starts from, with the chain it will belong to.
type plan struct {
	champV  int
	refs    refs
	win     window
	newRows int
	tr      *model.Trainer
	chain   Chain
}

// prepare finds the champion, checks that a run is due (no canary being
// judged, enough new closed examples, a holdout to judge on, something the
// champion has not learned) and plans it. A nil plan with a nil error
// means the run is skipped: res says why.
func (r *Retrainer) prepare(ctx context.Context, name string, mc flywheel.ModelConfig, res *Result, progress func(string)) (*plan, error) {
	skip := func(why string) (*plan, error) {
		res.Outcome, res.Reason = Skipped, why
		return nil, nil
	}
	progress("looking up the champion")
	champV, champArt, err := r.registry.Champion(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("champion of %s: %w", name, err)
	}
	res.Champion = champV
	if c, err := r.registry.Alias(ctx, name, deploy.Canary); err != nil {
		return nil, err
	} else if c != 0 {
		return skip(fmt.Sprintf("canary v%d is being judged; the next candidate waits for its verdict", c))
	}
	champ, err := model.Decode(champArt)
	if err != nil {
		return nil, fmt.Errorf("decode champion %s v%d: %w", name, champV, err)
	}
	watermark, err := r.latestDataTo(ctx, name)
	if err != nil {
		return nil, err
	}
	nowMs := uint64(r.now().UnixMilli())
	fromMs := nowMs - uint64(mc.Retrain.Window/time.Millisecond)
	progress("counting new examples")
	fresh, err := r.store.FreshCount(ctx, name, mc.Kind, watermark)
	if err != nil {
		return nil, err
	}
	if int(fresh) < mc.Retrain.MinNewExamples {
		return skip(fmt.Sprintf("%d new examples with a closed reward window since the last version; %d needed", fresh, mc.Retrain.MinNewExamples))
	}
	// The references the candidate is judged against: the champion and,
	// under the non-inferior rule, its anchor. The holdout begins after
	// both learned their last example.
	p := &plan{champV: champV}
	if p.refs, err = r.references(ctx, name, mc, champV, champ); err != nil {
		return nil, err
	}
	if p.tr, p.chain, err = r.startFrom(ctx, name, mc, champV); err != nil {
		return nil, err
	}
	res.Training, res.FullReason = p.chain.Training, p.chain.FullReason
	if p.chain.Training == TrainedIncremental {
		// Only what the champion has not learned: from its cutoff on.
		fromMs = max(fromMs, p.chain.ParentCutoffMs)
	}
	progress("sizing the window")
	ingested, err := r.store.IngestedThrough(ctx, name)
	if err != nil {
		return nil, err
	}
	if p.win, p.newRows, err = planEvidence(storeSizer{ctx, r.store, name, mc.Kind}, fromMs, p.refs.cutoff, mc.Retrain, p.tr.Learning() != nil); err != nil {
		return nil, err
	}
	p.win.ingestedThrough = ingested
	if !p.win.progressive && (p.win.trainRows == 0 || p.win.rows == p.win.trainRows) {
		return skip("too few examples to split into training and holdout")
	}
	if p.newRows == 0 {
		return skip(fmt.Sprintf("the candidate would learn nothing that champion v%d did not: no closed example between its cutoff and the holdout", champV))
	}
	return p, nil
}

// latestDataTo returns the time of the last example the latest version of
// name learned or was judged on (0 for the bootstrap version): examples
// after it are new.
func (r *Retrainer) latestDataTo(ctx context.Context, name string) (uint64, error) {
	latest, err := r.registry.Latest(ctx, name)
	if err != nil || latest == 0 {
		return 0, err
	}
	v, err := r.registry.Get(ctx, name, latest)
	if err != nil {
		return 0, err
	}
	var man Manifest
	_ = json.Unmarshal(v.Manifest, &man) // the bootstrap version has none: 0
	return man.DataToMs, nil
}

// trainAndJudge trains the planned candidate, judges it on the holdout by
// the promotion rule (res gets the verdict) and returns its artifact,
// manifest and metrics.
func (r *Retrainer) trainAndJudge(ctx context.Context, name string, mc flywheel.ModelConfig, p *plan, res *Result, progress func(string)) ([]byte, Manifest, map[string]any, error) {
	if p.chain.Training == TrainedIncremental {
		progress(fmt.Sprintf("training incrementally from v%d on %d examples after its cutoff, %d passes, streamed from ClickHouse", p.champV, p.newRows, mc.Retrain.Passes))
	} else {
		progress(fmt.Sprintf("training on %d examples, %d passes, streamed from ClickHouse (full: %s)", p.win.trainRows, mc.Retrain.Passes, p.chain.FullReason))
	}
	evidence := flywheel.EvidenceHoldout
	if p.win.progressive {
		evidence = flywheel.EvidenceProgressive
		progress(fmt.Sprintf("judging each of the %d examples since the cutoff as the candidate learns it (progressive validation)", p.newRows))
	}
	var ev evaluation
	tr, seen, err := r.trainOn(ctx, name, mc, p.tr, p.win, func(m *model.Model) judge {
		if !p.win.progressive {
			progress(fmt.Sprintf("evaluating on %d holdout examples", p.win.rows-p.win.trainRows))
		}
		return ev.judges(mc, m, p.refs)
	})
	if err != nil {
		return nil, Manifest{}, nil, err
	}
	r.rowsRead.WithLabelValues(name).Add(float64(seen.rows))
	res.TrainRows, res.Holdout = seen.trainRows, seen.rows-seen.trainRows
	res.Evidence, res.Judged = evidence, seen.judged
	metrics := map[string]any{"against": p.champV, "evidence": evidence, "judged_rows": seen.judged}
	var dec Decision
	if seen.judge == nil { // every example since the cutoff was unusable
		dec = noEvidence(mc.Promote.Rule)
	} else {
		dec = ev.decide(mc, p.refs, res, metrics)
	}
	res.Gate = &dec
	metrics["gate"] = dec
	res.Outcome, res.Reason = dec.Outcome, dec.Reason
	if res.Outcome == Inconclusive && mc.Promote.Canary.Share == 0 {
		res.Outcome, res.Reason = Rejected, res.Reason+"; no canary is configured to decide on live traffic (promote.canary.share)"
	}
	art, err := tr.MarshalBinary() // with the optimizer state, for the next incremental candidate
	if err != nil {
		return nil, Manifest{}, nil, err
	}
	chain := p.chain
	chain.CutoffMs, chain.Learned = cutoffOf(seen.lastMs, p.win.holdFrom), tr.Model().Trained()
	cfgJSON, _ := json.Marshal(mc)
	h := sha256.Sum256(cfgJSON)
	man := Manifest{
		DataFromMs: seen.firstMs, DataToMs: seen.lastMs, HoldoutFrom: p.win.holdFrom,
		Rows: seen.rows, DataSHA256: seen.hash,
		TrainRows: seen.trainRows, HoldoutRows: seen.rows - seen.trainRows, Evidence: evidence, JudgedRows: seen.judged, ConfigHash: hex.EncodeToString(h[:8]), Config: mc,
		Chain: chain, Passes: mc.Retrain.Passes, CodeVersion: r.codeVersion, TrainedAt: r.now().UTC(),
		IngestedThrough: p.win.ingestedThrough, Order: "ts_ms, event_id", FeatureProfile: p.chain.parentProfile.Merge(seen.profile),
	}
	if p.win.progressive {
		man.EvidenceFromMs = p.win.evidenceFrom
	}
	return art, man, metrics, nil
}

// registerAndDeploy registers the candidate whatever the verdict, then,
// if it passed and the aliases did not move while it trained, starts it as
// the canary (promote.canary.share > 0) or promotes it.
func (r *Retrainer) registerAndDeploy(ctx context.Context, name string, mc flywheel.ModelConfig, champV int, art []byte, man Manifest, metrics map[string]any, res *Result, progress func(string)) error {
	progress("registering")
	v, err := r.registry.Register(ctx, name, mc.Kind, art, man, metrics)
	if err != nil {
		return err
	}
	res.Version = v
	if res.Outcome != Promoted && res.Outcome != Inconclusive {
		return nil
	}
	deploy, what := r.registry.PromoteFrom, "promoting"
	if mc.Promote.Canary.Share > 0 {
		res.Outcome, deploy, what = Canaried, r.registry.StartCanaryFrom, "starting the canary"
	}
	progress(what)
	// A candidate judged against a version no longer alone in service is
	// not deployed over what an operator or another run put there.
	err = deploy(ctx, name, v, champV, "retrain", res.Reason)
	if flywheel.ErrorCode(err) == flywheel.ECONFLICT {
		res.Outcome, res.Reason = Superseded, res.Reason+"; not deployed: "+flywheel.ErrorMessage(err)+" while it trained"
		return nil
	}
	return err
}

// record stores the run in retrain_runs, for people and the dashboard. A
// failure is logged: the run itself is done.
func (r *Retrainer) record(ctx context.Context, res *Result, start time.Time) {
	cmp := []byte("{}")
	if res.Comparison != nil {
		cmp, _ = json.Marshal(res.Comparison)
	} else if res.Classification != nil {
		cmp, _ = json.Marshal(res.Classification)
	}
	// A run stopped by its context (leadership lost, shutdown) is still
	// recorded, within a bounded time of its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := r.store.RecordRun(ctx, clickhouse.RunRecord{
		Model: res.Model, Started: start, Took: time.Since(start), Outcome: res.Outcome, Reason: res.Reason,
		Version: res.Version, Champion: res.Champion, TrainRows: res.TrainRows, Holdout: res.Judged, Comparison: string(cmp)}) // holdout_rows: the evidence
	if err != nil {
		r.log.Warn("recording the retrain run failed", "model", res.Model, "err", err)
	}
}
