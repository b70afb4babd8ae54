package retrain

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

// rowsStore serves ranker rows from memory, as ClickHouse's examples query
// gives them.
type rowsStore struct {
	Store
	rows []fakeRow
	// actions by key, found by the Actions calls from the hiddenFor+1st on
	actions     map[string]string
	hiddenFor   int
	actionCalls int
}

func (s *rowsStore) Actions(ctx context.Context, keys []string, fn func(key, actionJSON string) error) error {
	s.actionCalls++
	if s.actionCalls <= s.hiddenFor {
		return nil
	}
	for _, k := range keys {
		if js, ok := s.actions[k]; ok {
			if err := fn(k, js); err != nil {
				return err
			}
		}
	}
	return nil
}

type fakeRow struct {
	id, ctxJSON, actJSON, keys string
	probs                      []float64
	chosen                     uint16
	reward                     float64
}

func (s *rowsStore) Rankers(ctx context.Context, _ string, fromMs, toMs uint64, row func(scan func(dst ...any) error) error) error {
	for i, r := range s.rows {
		if ts := uint64(1e12) + uint64(i); ts < fromMs || ts > toMs {
			continue
		}
		err := row(func(dst ...any) error {
			*dst[0].(*string) = r.id
			*dst[1].(*uint64) = uint64(1e12) + uint64(i)
			*dst[2].(*uint32) = 1
			*dst[3].(*string) = r.ctxJSON
			*dst[4].(*string) = r.actJSON
			*dst[5].(*string) = r.keys
			*dst[6].(*[]float64) = r.probs
			*dst[7].(*uint16) = r.chosen
			*dst[8].(*float64) = r.reward
			*dst[9].(*uint64) = 1
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Decisions whose actions vary from one to the next (every price its own)
// are read without maps once the cache of action lists has found them
// varying: their actions are listed, the features read exactly as decoding
// gives them, and a model trained on what the scan delivers is the model
// trained on the decoded maps, to the byte (the bins fitted on examples
// held across chunks included). An action list the listing cannot take
// (a key the decoder matches without case) is decoded as before.
func TestScanListsVaryingActions(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	store := &rowsStore{}
	var decoded []flywheel.Example
	for i := range 3 * judgeAfter {
		acts := make([]flywheel.Action, 5)
		probs := make([]float64, len(acts))
		for j := range acts {
			acts[j] = flywheel.Action{ID: fmt.Sprintf("i%d", rng.IntN(50)), Features: flywheel.Features{"item": {
				"price": float64(rng.IntN(100000)) / 100, "category": fmt.Sprintf("c%d", rng.IntN(6)), "tags": []any{"a", fmt.Sprintf("t%d", rng.IntN(3))}}}}
			probs[j] = 0.2
		}
		ctx := flywheel.Features{"user": {"income": float64(rng.IntN(200)), "segment": fmt.Sprintf("s%d", rng.IntN(4))}}
		cj, _ := json.Marshal(ctx)
		aj, _ := json.Marshal(acts)
		if i%97 == 0 {
			aj = []byte(`[{"ID":"x","features":{"item":{"price":1}}},{"id":"y"},{"id":"z"},{"id":"w"},{"id":"v"}]`)
			acts = nil
			json.Unmarshal(aj, &acts)
		}
		r := fakeRow{id: fmt.Sprintf("e%05d", i), ctxJSON: string(cj), actJSON: string(aj), probs: probs, chosen: uint16(rng.IntN(5)), reward: float64(rng.IntN(2))}
		store.rows = append(store.rows, r)
		var dc flywheel.Features
		json.Unmarshal(cj, &dc)
		decoded = append(decoded, flywheel.Example{EventID: r.id, Context: dc, Actions: acts, Probabilities: probs, ChosenIndex: int(r.chosen), Reward: r.reward})
	}
	cfg := model.Config{Kind: flywheel.KindRanker, Bits: 16, Bins: 8, Interactions: [][2]string{{"user", "item"}},
		Exploration: model.Exploration{Policy: model.SquareCB, GammaScale: 10, GammaExponent: 0.5}}
	newTrainer := func() *model.Trainer {
		m, err := model.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return model.NewTrainer(m, model.TrainConfig{Names: model.DefaultNames})
	}
	scanned, maps := newTrainer(), newTrainer()
	r := &Retrainer{store: store, log: slog.New(slog.DiscardHandler)}
	n, listed := 0, 0
	err := r.scan(context.Background(), "m", 1e12, 1e12+uint64(len(store.rows))+500, func(ex *flywheel.Example) {
		want := &decoded[n]
		n++
		if ex.EventID != want.EventID || ex.NumActions() != len(want.Actions) {
			t.Fatalf("example %d: %s with %d actions, want %s with %d", n, ex.EventID, ex.NumActions(), want.EventID, len(want.Actions))
		}
		if ex.Listed() {
			listed++
			for j := range want.Actions {
				if got := ex.ActionList.Features(ex.ActionSets[j]); fmt.Sprint(got) != fmt.Sprint(want.Actions[j].Features) {
					t.Fatalf("%s action %d: listed %v, decoded %v", ex.EventID, j, got, want.Actions[j].Features)
				}
			}
		}
		if err := scanned.LearnRanker(ex); err != nil {
			t.Fatal(err)
		}
		if err := maps.LearnRanker(want); err != nil {
			t.Fatal(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(decoded) || listed < judgeAfter || listed > len(decoded)-judgeAfter {
		t.Fatalf("%d examples delivered of %d, %d of them listed; want all, and those after the first %d listed but the odd ones", n, len(decoded), listed, judgeAfter)
	}
	a, _ := scanned.MarshalBinary()
	b, _ := maps.MarshalBinary()
	if string(a) != string(b) {
		t.Fatalf("the model trained on the scan (%d listed) differs from the one trained on decoded maps", listed)
	}
	t.Logf("%d examples, %d listed; the same model as from maps", n, listed)
}

// Actions named by key that the actions table does not have yet (a cluster
// node still fetching them from another replica) are read again until they
// come, and the examples are trained on with them; a key that never comes
// leaves its examples skipped once the wait is over.
func TestScanWaitsForActionsStillReplicating(t *testing.T) {
	defer func(w, e time.Duration) { missingWait, missingRetryEvery = w, e }(missingWait, missingRetryEvery)
	missingWait, missingRetryEvery = 2*time.Second, 10*time.Millisecond
	store := &rowsStore{actions: map[string]string{"k1": `{"id":"a","features":{"item":{"c":"x"}}}`, "k2": `{"id":"b"}`}, hiddenFor: 3}
	for i := range 10 {
		keys := "k1 k2"
		if i == 7 {
			keys = "k1 k3" // k3 never comes
		}
		store.rows = append(store.rows, fakeRow{id: fmt.Sprint(i), ctxJSON: `{"user":{"s":"y"}}`, keys: keys, probs: []float64{0.5, 0.5}, reward: 1})
	}
	r := &Retrainer{store: store, log: slog.New(slog.DiscardHandler)}
	var got []string
	start := time.Now()
	err := r.scan(context.Background(), "m", 0, 1<<62, func(ex *flywheel.Example) {
		if ex.NumActions() != 2 || ex.Actions[0].Features["item"]["c"] != "x" {
			t.Fatalf("%s: actions %+v", ex.EventID, ex.Actions)
		}
		got = append(got, ex.EventID)
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[0 1 2 3 4 5 6 8 9]" || store.actionCalls < 4 {
		t.Fatalf("delivered %v after %d reads of the actions; want all but 7 (its k3 never came)", got, store.actionCalls)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the scan took %v: the wait for missing actions is not bounded", took)
	}
	t.Logf("%d examples after %d reads of the actions table", len(got), store.actionCalls)
}
