package retrain

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/bytedance/sonic"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

// Training sets are streamed from ClickHouse, never held in memory: each
// pass over the training window and the holdout is one query read block by
// block, so memory stays flat as the data grows.

// Examples is what training reads: the closed examples of a model, oldest
// first (ties by event id), streamed one at a time to row, which reads the
// example's columns with scan; and the JSON of actions by key.
// *clickhouse.Training is one; see it for the columns.
type Examples interface {
	Rankers(ctx context.Context, model string, fromMs, toMs uint64, row func(scan func(dst ...any) error) error) error
	Classifiers(ctx context.Context, model string, fromMs, toMs uint64, row func(scan func(dst ...any) error) error) error
	Actions(ctx context.Context, keys []string, fn func(key, actionJSON string) error) error
}

// Windows is what sizing a training window needs: the ingestion watermark,
// how many closed examples there are in a time range and from when to when,
// and where the holdout begins. *clickhouse.Training is one.
type Windows interface {
	IngestedThrough(ctx context.Context, model string) (time.Time, error)
	ClosedSpan(ctx context.Context, model, kind string, fromMs, toMs uint64) (rows, firstMs, lastMs uint64, err error)
	HoldoutCut(ctx context.Context, model, kind string, fromMs, toMs, offset uint64) (cutMs, before uint64, err error)
}

// window is the closed examples of a model to learn from: [fromMs, toMs],
// the holdout being those at or after holdFrom.
type window struct {
	fromMs, toMs    uint64
	rows, trainRows int
	holdFrom        uint64
	ingestedThrough time.Time
	// progressive: the candidate is judged on the examples at or after
	// evidenceFrom as it learns them (evidence.go), and holds none out.
	progressive  bool
	evidenceFrom uint64
}

// scan calls fn with every closed example of name with fromMs <= ts_ms <=
// toMs, oldest first (ties by event id), from the calling goroutine.
// Examples that cannot be decoded are logged and skipped. fn must not keep
// the example.
//
// Decoding the JSON of the context and the actions costs more than training
// on them, so it runs on every core: one goroutine reads rows into chunks,
// workers decode the chunks, and fn sees them in their order.
func (r *Retrainer) scan(ctx context.Context, name string, fromMs, toMs uint64, fn func(*flywheel.Example)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := max(runtime.GOMAXPROCS(0), 1)
	sets := &actionSets{sets: map[string][]flywheel.Action{}}
	store := &actionStore{src: r.store, acts: map[string]flywheel.Action{}, sets: map[string][]flywheel.Action{}}
	jobs := make(chan *chunk, workers)
	ordered := make(chan *chunk, 2*workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range jobs {
				c.decode(r.log, sets)
				close(c.done)
			}
		}()
	}
	readErr := make(chan error, 1)
	var resolveErr error // set before readErr is sent
	go func() {
		defer close(ordered)
		defer close(jobs)
		readErr <- r.read(ctx, name, fromMs, toMs, func(c *chunk) bool {
			// A failed read of the actions fails the scan, as a failed
			// read of the examples does: training on fewer examples than
			// the window holds would not be reproducible.
			if err := store.resolve(ctx, c); err != nil {
				resolveErr = err
				cancel()
				return false
			}
			select {
			case jobs <- c:
			case <-ctx.Done():
				return false
			}
			select {
			case ordered <- c:
				return true
			case <-ctx.Done():
				return false
			}
		})
	}()
	for c := range ordered {
		<-c.done
		for i := range c.rows {
			if c.rows[i].ok {
				fn(&c.rows[i].ex)
			}
		}
	}
	wg.Wait()
	err := <-readErr
	if resolveErr != nil {
		return fmt.Errorf("read the actions of %s's examples: %w", name, resolveErr)
	}
	return err
}

const chunkRows = 256

// chunk is rows read from ClickHouse, decoded by a worker. Rows whose
// actions vary from decision to decision have them listed in list (sets
// indexed by idx), not decoded into maps.
type chunk struct {
	rows []rawExample
	done chan struct{}
	list flywheel.FeatureList
	idx  []int
}

type rawExample struct {
	ex               flywheel.Example
	ctxJSON, actJSON string // actJSON: the actions, when the decision carries them
	keys             string // else the actions' keys in the actions table, space-separated
	keyed            bool   // ex.Actions were read by key (resolve)
	tsMs             uint64
	version          uint32
	chosen           uint16
	fbCount          uint64
	ok               bool
}

// actionSets remembers decoded action lists by their JSON: a homepage or a
// catalogue offers the same candidates to many users, and decoding them
// costs more than learning from them. Cached lists are shared read-only.
type actionSets struct {
	mu           sync.Mutex
	sets         map[string][]flywheel.Action
	lookups, hit int
	off          bool // the candidates vary: looking them up costs more than it saves
}

const (
	maxActionSets = 256
	// after this many lookups, a hit rate below a tenth turns the cache off
	judgeAfter = 2048
)

// varies reports whether the cache found the candidates varying, and so
// turned itself off.
func (a *actionSets) varies() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.off
}

func (a *actionSets) decode(js string) ([]flywheel.Action, error) {
	a.mu.Lock()
	off := a.off
	var acts []flywheel.Action
	ok := false
	if !off {
		acts, ok = a.sets[js]
		a.lookups++
		if ok {
			a.hit++
		}
		if a.lookups == judgeAfter && a.hit*10 < a.lookups {
			a.off, a.sets = true, nil
		}
	}
	a.mu.Unlock()
	if ok {
		return acts, nil
	}
	if err := sonic.UnmarshalString(js, &acts); err != nil {
		return nil, err
	}
	if off {
		return acts, nil
	}
	a.mu.Lock()
	if a.sets != nil {
		if len(a.sets) >= maxActionSets {
			clear(a.sets)
		}
		a.sets[js] = acts
	}
	a.mu.Unlock()
	return acts, nil
}

// actionStore reads the actions that rows name by key from the actions
// table, decoding each once, and keeps up to maxStoredActions of them (the
// decoded actions are shared read-only by the rows), and the action lists
// of up to maxStoredSets distinct lists of keys (a catalogue offers the same
// list to many users: one lookup then serves the row).
//
// A key not in the table is read again, every missingRetryEvery, for up to
// missingWait in all over the scan: on a ClickHouse cluster the actions
// table is replicated, and the node read may not have fetched yet the
// actions that the decisions read from another replica name (a node back
// from a restart catches up once its ZooKeeper session is renewed, which
// can take half a minute). Only a key still missing after that leaves its
// rows unkeyed (skipped, with a warning).
type actionStore struct {
	src    Examples
	acts   map[string]flywheel.Action
	sets   map[string][]flywheel.Action
	waited time.Duration // of missingWait, over the scan
}

var (
	missingWait       = 45 * time.Second
	missingRetryEvery = 500 * time.Millisecond
)

const (
	maxStoredActions = 1 << 17
	maxStoredSets    = 4096
)

// resolve gives every row of c that names its actions by key alone its
// actions, reading the keys not stored yet; a row with an action that is
// not in the table stays unkeyed.
func (a *actionStore) resolve(ctx context.Context, c *chunk) error {
	var missing []string
	want := map[string]bool{}
	for i := range c.rows {
		x := &c.rows[i]
		if x.actJSON != "" || x.keys == "" {
			continue
		}
		if acts, ok := a.sets[x.keys]; ok {
			x.ex.Actions, x.keyed = acts, true
			continue
		}
		for _, k := range strings.Fields(x.keys) {
			if _, ok := a.acts[k]; !ok && !want[k] {
				want[k] = true
				missing = append(missing, k)
			}
		}
	}
	if len(a.acts) > 0 && len(a.acts)+len(missing) > maxStoredActions {
		clear(a.acts)
		clear(a.sets)
		return a.resolve(ctx, c)
	}
	err := a.read(ctx, missing)
	for err == nil && a.waited < missingWait {
		missing = slices.DeleteFunc(missing, func(k string) bool { _, ok := a.acts[k]; return ok })
		if len(missing) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(missingRetryEvery):
		}
		a.waited += missingRetryEvery
		err = a.read(ctx, missing)
	}
	for i := range c.rows {
		x := &c.rows[i]
		if x.actJSON != "" || x.keys == "" || x.keyed {
			continue
		}
		keys := strings.Fields(x.keys)
		acts := make([]flywheel.Action, len(keys))
		x.keyed = true
		for j, k := range keys {
			act, ok := a.acts[k]
			x.keyed = x.keyed && ok
			acts[j] = act
		}
		if x.keyed {
			x.ex.Actions = acts
			if len(a.sets) >= maxStoredSets {
				clear(a.sets)
			}
			a.sets[x.keys] = acts
		}
	}
	return err
}

// read decodes the actions of keys into the store.
func (a *actionStore) read(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	return a.src.Actions(ctx, keys, func(key, js string) error {
		var act flywheel.Action
		if err := sonic.UnmarshalString(js, &act); err != nil {
			return fmt.Errorf("action %s: %w", key, err)
		}
		a.acts[key] = act
		return nil
	})
}

func (c *chunk) decode(log *slog.Logger, sets *actionSets) {
	for i := range c.rows {
		x := &c.rows[i]
		ex := &x.ex
		if err := sonic.UnmarshalString(x.ctxJSON, &ex.Context); err != nil {
			log.Warn("skipping example with undecodable context", "event_id", ex.EventID, "err", err)
			continue
		}
		switch {
		case x.actJSON != "" && sets.varies() && c.listActions(ex, x.actJSON):
		case x.actJSON != "":
			acts, err := sets.decode(x.actJSON)
			if err != nil {
				log.Warn("skipping example with undecodable actions", "event_id", ex.EventID, "err", err)
				continue
			}
			ex.Actions = acts
		case x.keys != "" && !x.keyed:
			log.Warn("skipping example whose actions are missing from the actions table", "event_id", ex.EventID)
			continue
		}
		x.ctxJSON, x.actJSON = "", ""
		ex.Time = time.UnixMilli(int64(x.tsMs)).UTC()
		ex.Version, ex.ChosenIndex, ex.HasFeedback = int(x.version), int(x.chosen), x.fbCount > 0
		x.ok = ex.ChosenIndex < ex.NumActions() && len(ex.Probabilities) == ex.NumActions()
	}
}

// listActions lists the actions of js, a decision's actions array, as
// sets of the chunk's list: no maps for what varies from decision to
// decision, learned from as from maps (model.Trainer, Model.PolicyExample).
// It reports false for what the general decoder must take.
func (c *chunk) listActions(ex *flywheel.Example, js string) bool {
	start, first := len(c.idx), len(c.list.Sets) == 0
	idx, ok := c.list.ScanLoggedActions(unsafe.Slice(unsafe.StringData(js), len(js)), c.idx)
	if !ok {
		return false
	}
	c.idx = idx
	if first {
		// Room for the chunk's rows at this row's size and a fifth more,
		// at once: growing a list of pointers by doubling, chunk after
		// chunk, cost more than scanning it.
		rows := len(c.rows) + len(c.rows)/5
		c.list.Feats = slices.Grow(c.list.Feats, len(c.list.Feats)*rows)
		c.list.Sets = slices.Grow(c.list.Sets, len(c.list.Sets)*rows)
		c.idx = slices.Grow(c.idx, len(c.idx)*rows)
	}
	ex.Actions, ex.ActionList, ex.ActionSets = nil, &c.list, c.idx[start:len(c.idx):len(c.idx)]
	return true
}

// read sends the rows in chunks to send until it returns false.
func (r *Retrainer) read(ctx context.Context, name string, fromMs, toMs uint64, send func(*chunk) bool) error {
	c := &chunk{rows: make([]rawExample, 0, chunkRows), done: make(chan struct{})}
	err := r.store.Rankers(ctx, name, fromMs, toMs, func(scan func(dst ...any) error) error {
		c.rows = append(c.rows, rawExample{})
		x := &c.rows[len(c.rows)-1]
		if err := scan(&x.ex.EventID, &x.tsMs, &x.version, &x.ctxJSON, &x.actJSON, &x.keys, &x.ex.Probabilities, &x.chosen, &x.ex.Reward, &x.fbCount); err != nil {
			return fmt.Errorf("scan example: %w", err)
		}
		if len(c.rows) == chunkRows {
			if !send(c) {
				return ctx.Err()
			}
			c = &chunk{rows: make([]rawExample, 0, chunkRows), done: make(chan struct{})}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(c.rows) > 0 && !send(c) {
		return ctx.Err()
	}
	return nil
}

// judge judges a trained model on holdout examples, one at a time: a
// *comparer for rankers, a *classJudge for classifiers.
type judge interface{ add(ex *flywheel.Example) }

// seen is what a training run read: counts, the first and last time, the
// fingerprint of the data (event ids and rewards, in order) and the judge.
type seen struct {
	rows, trainRows int
	firstMs, lastMs uint64
	hash            string
	judge           judge // nil when no example was judged
	judged          int   // examples judged
	// profile is the feature profile of the training rows (nil: none).
	profile *model.FeatureProfile
}

type fingerprint struct {
	h       hash.Hash
	n       int
	first   uint64
	last    uint64
	started bool
}

func (f *fingerprint) add(ex *flywheel.Example) {
	fmt.Fprintf(f.h, "%s\x00%v\x00", ex.EventID, ex.Reward)
	ms := ex.TimeMs()
	if !f.started {
		f.first, f.started = ms, true
	}
	f.last = ms
	f.n++
}

// trainOn goes on training tr (a fresh trainer of mc's shape for a full
// retrain, or one resumed from a parent's artifact) on the training part of
// win, in order, mc.Retrain.Passes times, then reads the holdout, judging the
// result with what newJudge returns (nil: the holdout is only
// fingerprinted). It returns tr. It is deterministic: the same start and the
// same rows in the same order give the same weights and optimizer state, bit
// for bit. The training rows are profiled (model.Profiler) on the first pass. A ranker learns from the chosen action's reward and logged
// probability; a classifier learns whether the reward was above 0.
func (r *Retrainer) trainOn(ctx context.Context, name string, mc flywheel.ModelConfig, tr *model.Trainer, win window, newJudge func(*model.Model) judge) (*model.Trainer, *seen, error) {
	scan, learn := r.scan, func(ex *flywheel.Example) error { return tr.LearnRanker(ex) }
	if mc.Kind == flywheel.KindClassifier {
		scan = r.scanClassified
		learn = func(ex *flywheel.Example) error { tr.LearnClassifier(ex.Context, ex.Reward > 0); return nil }
	}
	fp := &fingerprint{h: sha256.New()}
	prof := model.NewProfiler()
	var pv *progressive
	if win.progressive {
		pv = &progressive{from: win.evidenceFrom, classifier: mc.Kind == flywheel.KindClassifier, tr: tr, newJudge: newJudge}
	}
	skipped := 0
	for pass := 0; pass < mc.Retrain.Passes; pass++ {
		fn := func(ex *flywheel.Example) {
			if pass == 0 {
				fp.add(ex)
				prof.AddExample(ex)
				pv.before(ex)
			}
			if learn(ex) != nil {
				skipped++
			}
		}
		if win.holdFrom > win.fromMs {
			if err := scan(ctx, name, win.fromMs, min(win.holdFrom-1, win.toMs), fn); err != nil {
				return nil, nil, err
			}
		}
	}
	if skipped > 0 {
		r.log.Warn("skipped unusable examples", "model", name, "count", skipped)
	}
	out := &seen{trainRows: fp.n, profile: prof.Profile()}
	m := tr.Model()
	switch {
	case pv != nil:
		out.judge, out.judged = pv.judge, pv.judged
	case newJudge != nil:
		out.judge = newJudge(m)
	}
	if win.holdFrom <= win.toMs {
		err := scan(ctx, name, win.holdFrom, win.toMs, func(ex *flywheel.Example) {
			fp.add(ex)
			if out.judge != nil {
				out.judge.add(ex)
				out.judged++
			}
		})
		if err != nil {
			return nil, nil, err
		}
	}
	out.rows, out.firstMs, out.lastMs, out.hash = fp.n, fp.first, fp.last, hex.EncodeToString(fp.h.Sum(nil))
	return tr, out, nil
}
