package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

// A multi-slot request gets a distinct action per slot, never one a slot
// excludes; each slot is logged as a decision of its own (EVENT_ID#SLOT)
// over the actions it could choose from, with the slot's features in the
// context, and the probability answered is the logged one, which the draws
// follow: over 4,000 pages of a uniform policy, slot 2's choice given slot
// 1's is uniform over the three left.
func TestRankSlots(t *testing.T) {
	t.Parallel()
	ev := &fakeEvents{}
	s := mustSemanticsServer(t, ev)
	const pages = 4000
	pairs := map[[2]string]int{}
	for i := 0; i < pages; i++ {
		w := do(s, "POST", "/v1/rank", appKey, fmt.Sprintf(`{"model": "homepage", "event_id": "p%d", "context": {"user": {"seg": "x"}},
			"actions": [{"id": "a"}, {"id": "b", "features": {"item": {"p": 1}}}, {"id": "c"}, {"id": "d"}, {"id": "e"}],
			"slots": [{"id": "hero", "features": {"size": "big", "w": 2}, "excluded_actions": ["e"], "baseline_action": "a"},
			          {"id": "side", "excluded_actions": ["e"]},
			          {"id": "footer"}]}`, i))
		if w.Code != 200 {
			t.Fatalf("rank: %d %s", w.Code, w.Body)
		}
		var resp slotsResponse
		if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
		if len(resp.Slots) != 3 || resp.EventID != fmt.Sprint("p", i) {
			t.Fatalf("answer %s", w.Body)
		}
		chosen := map[string]bool{}
		for k, sl := range resp.Slots {
			if chosen[sl.Chosen] || (k < 2 && sl.Chosen == "e") {
				t.Fatalf("slot %s chose %s: %s", sl.ID, sl.Chosen, w.Body)
			}
			chosen[sl.Chosen] = true
			// The uniform policy over what is left: 4 for the hero (e
			// excluded), then 3, then 3 (e allowed again).
			if want := []float64{1.0 / 4, 1.0 / 3, 1.0 / 3}[k]; math.Abs(sl.Probability-want) > 1e-12 {
				t.Fatalf("slot %s probability %v, want %v", sl.ID, sl.Probability, want)
			}
		}
		pairs[[2]string{resp.Slots[0].Chosen, resp.Slots[1].Chosen}]++
		ds := ev.decisions[len(ev.decisions)-3:]
		ctxs := make([]flywheel.Features, len(ds)) // each slot's context as logged
		for k, d := range ds {
			rec, err := d.Record()
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(rec.Context, &ctxs[k]); err != nil {
				t.Fatalf("slot %d context %s: %v", k, rec.Context, err)
			}
		}
		for k, d := range ds {
			sl := resp.Slots[k]
			if d.EventID != resp.EventID+"#"+sl.ID || sl.EventID != d.EventID || d.Chosen != sl.Chosen || d.Probabilities[d.ChosenIndex] != sl.Probability || d.Validate() != nil {
				t.Fatalf("slot %d logged %+v for %+v", k, d, sl)
			}
			sum := 0.0
			for j, a := range d.Actions {
				sum += d.Probabilities[j]
				for _, prev := range resp.Slots[:k] {
					if a.ID == prev.Chosen {
						t.Fatalf("slot %s logged action %s, taken by slot %s", sl.ID, a.ID, prev.ID)
					}
				}
			}
			if math.Abs(sum-1) > 1e-12 || len(d.Actions) != []int{4, 3, 3}[k] {
				t.Fatalf("slot %s logged %d actions with probabilities summing to %v", sl.ID, len(d.Actions), sum)
			}
			if ctxs[k]["slot"]["id"] != sl.ID || ctxs[k]["user"]["seg"] != "x" {
				t.Fatalf("slot %s context %v", sl.ID, ctxs[k])
			}
		}
		if ctxs[0]["slot"]["size"] != "big" || ctxs[0]["slot"]["w"] != 2.0 || ctxs[0]["slot"]["baseline"] != "a" {
			t.Fatalf("hero context %v", ctxs[0])
		}
	}
	// 12 ordered pairs, each with probability 1/4 · 1/3.
	if len(pairs) != 12 {
		t.Fatalf("%d (hero, side) pairs seen, want 12: %v", len(pairs), pairs)
	}
	want := float64(pages) / 12
	for p, n := range pairs {
		if math.Abs(float64(n)-want) > 5*math.Sqrt(want) {
			t.Errorf("pair %v drawn %d times, want about %.0f", p, n, want)
		}
	}
	// Feedback for a slot goes to the slot's decision, and the page's model
	// is remembered for its range.
	w := do(s, "POST", "/v1/feedback", appKey, `[{"event_id": "p1", "slot": "side", "reward": 1}, {"event_id": "p1#hero", "reward": 0.5}]`)
	if w.Code != 202 {
		t.Fatalf("feedback: %d %s", w.Code, w.Body)
	}
	if fs := ev.feedback[len(ev.feedback)-2:]; fs[0].EventID != "p1#side" || fs[1].EventID != "p1#hero" {
		t.Fatalf("feedback logged for %s and %s", fs[0].EventID, fs[1].EventID)
	}
	if w := do(s, "POST", "/v1/feedback", appKey, `{"event_id": "p1", "slot": "side", "reward": 2}`); w.Code != 400 ||
		!strings.Contains(errorOf(t, w.Body.Bytes()).Message, "above the model's reward.max 1") {
		t.Fatalf("out of range slot feedback: %d %s", w.Code, w.Body)
	}
	if w := do(s, "POST", "/v1/feedback", appKey, `{"event_id": "p1", "slot": "Side Bar", "reward": 1}`); w.Code != 400 ||
		!strings.Contains(errorOf(t, w.Body.Bytes()).Message, "slot \"Side Bar\" may hold only") {
		t.Fatalf("bad slot name: %d %s", w.Code, w.Body)
	}
	// The same page again gets the same answer.
	first := do(s, "POST", "/v1/rank", appKey, `{"model": "search", "event_id": "again", "actions": [{"id": "a"}, {"id": "b"}], "slots": [{"id": "x"}, {"id": "y"}]}`)
	second := do(s, "POST", "/v1/rank", appKey, `{"model": "search", "event_id": "again", "actions": [{"id": "a"}, {"id": "b"}], "slots": [{"id": "x"}, {"id": "y"}]}`)
	if first.Code != 200 || first.Body.String() != second.Body.String() {
		t.Fatalf("retry: %d %s, then %d %s", first.Code, first.Body, second.Code, second.Body)
	}
}

func TestRankSlotsValidation(t *testing.T) {
	t.Parallel()
	ev := &fakeEvents{}
	s := mustSemanticsServer(t, ev)
	acts := `"actions": [{"id": "a"}, {"id": "b"}, {"id": "c"}]`
	for _, tc := range []struct{ slots, msg string }{
		{`"slots": []`, "slots is empty"},
		{`"slots": [{"id": "s1"}, {"id": "s2"}, {"id": "s3"}, {"id": "s4"}]`, "slots has 4 entries but there are 3 actions"},
		{`"slots": [{"id": "s1"}, {"id": "s1"}]`, `slots[1].id "s1" repeats slots[0].id`},
		{`"slots": [{"id": ""}]`, "slots[0].id is empty"},
		{`"slots": [{"id": "S 1"}]`, `slots[0].id "S 1" may hold only`},
		{`"slots": [{"id": "s1", "excluded_actions": ["z"]}]`, `slots[0].excluded_actions[0] "z" is not the id of an action`},
		{`"slots": [{"id": "s1"}, {"id": "s2", "excluded_actions": ["a", "b"]}]`, "slots[1] excludes 2 of 3 actions"},
		{`"slots": [{"id": "s1", "baseline_action": "z"}]`, `slots[0].baseline_action "z" is not the id of an action`},
		{`"slots": [{"id": "s1", "features": {"id": "x"}}]`, "slots[0].features.id is reserved"},
		{`"slots": [{"id": "s1", "features": {"deep": {"x": 1}}}]`, "slots[0].features"},
		{`"slots": [{"id": "s1"}], "excluded_actions": ["a"]`, "with slots, give each slot its excluded_actions"},
		{`"slots": [{"id": "s1"}], "context": {"slot": {"x": 1}}`, "context.slot is reserved"},
		{`"slots": [{"id": "s1"}], "event_id": "` + strings.Repeat("e", 126) + `"`, "longer than 128 bytes"},
	} {
		ev.mu.Lock()
		before := len(ev.decisions)
		ev.mu.Unlock()
		w := do(s, "POST", "/v1/rank", appKey, `{"model": "homepage", `+acts+`, `+tc.slots+`}`)
		if e := errorOf(t, w.Body.Bytes()); w.Code != 400 || !strings.Contains(e.Message, tc.msg) {
			t.Errorf("%s: %d %+v, want 400 containing %q", tc.slots, w.Code, e, tc.msg)
		}
		ev.mu.Lock()
		if len(ev.decisions) != before {
			t.Errorf("%s: a refused request was logged", tc.slots)
		}
		ev.mu.Unlock()
	}
}

// trainedArtifact is a model of mc trained so that its four actions score
// apart (a pays most, then b, c, d): a policy far from uniform.
func trainedArtifact(t *testing.T, mc flywheel.ModelConfig) []byte {
	t.Helper()
	return trainedFor(t, mc, []float64{0.8, 0.5, 0.3, 0.1})
}

// trainedFor returns a version of mc trained on uniformly random choices
// among the actions a, b, c and d, which pay pay[i].
func trainedFor(t *testing.T, mc flywheel.ModelConfig, pay []float64) []byte {
	t.Helper()
	m, err := model.FromConfig(mc)
	if err != nil {
		t.Fatal(err)
	}
	tr := model.NewTrainer(m, model.TrainConfig{})
	acts := []flywheel.Action{{ID: "a"}, {ID: "b"}, {ID: "c"}, {ID: "d"}}
	for i := range acts {
		acts[i].Features = flywheel.Features{"item": {"id": acts[i].ID}}
	}
	for i := 0; i < 4000; i++ {
		ex := flywheel.Example{EventID: fmt.Sprint(i), Actions: acts, ChosenIndex: i % 4, Probabilities: []float64{0.25, 0.25, 0.25, 0.25}, Reward: pay[i%4]}
		if err := tr.LearnRanker(&ex); err != nil {
			t.Fatal(err)
		}
	}
	b, err := tr.Model().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// For every exploration policy, on a trained model, the draws of a page
// follow the probabilities answered: over 6,000 pages of three slots, the
// count of each (slot 1, slot 2, slot 3) triple is within 4.5 standard
// deviations of the sum of the products of its answered probabilities.
func TestRankSlotsFollowTheirProbabilities(t *testing.T) {
	t.Parallel()
	for _, e := range []flywheel.Exploration{
		{Policy: flywheel.EpsilonGreedy, Epsilon: 0.3},
		{Policy: flywheel.Softmax, Lambda: 4},
		{Policy: flywheel.SquareCB, Gamma: 8},
	} {
		t.Run(e.Policy, func(t *testing.T) {
			t.Parallel()
			mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Exploration: e}.WithDefaults()
			art := trainedArtifact(t, mc)
			reg := &fakeRegistry{champion: func(context.Context, string) (int, []byte, error) { return 2, art, nil }}
			s, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": mc},
				AppKeys: []Key{{Secret: appKey}}}, Options{Registry: reg, Events: &fakeEvents{}, Admin: Admin{}, Registerer: prometheus.NewRegistry()})

			if err != nil {
				t.Fatal(err)
			}
			s.SwapAll(context.Background())
			const pages = 6000
			seen := map[string]int{}
			for i := 0; i < pages; i++ {
				// Event ids of our own: the draws, made from them, are the same on every run.
				w := do(s, "POST", "/v1/rank", appKey, `{"model": "homepage", "event_id": "page-`+fmt.Sprint(i)+`",
					"actions": [{"id": "a", "features": {"item": {"id": "a"}}}, {"id": "b", "features": {"item": {"id": "b"}}},
					            {"id": "c", "features": {"item": {"id": "c"}}}, {"id": "d", "features": {"item": {"id": "d"}}}],
					"slots": [{"id": "s1"}, {"id": "s2"}, {"id": "s3", "excluded_actions": ["d"]}]}`)
				if w.Code != 200 {
					t.Fatalf("rank: %d %s", w.Code, w.Body)
				}
				var resp slotsResponse
				if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
					t.Fatal(err)
				}
				key := resp.Slots[0].Chosen + resp.Slots[1].Chosen + resp.Slots[2].Chosen
				seen[key]++
			}
			// The expected count of a triple is pages × p1 × p2 × p3, the
			// probabilities each slot answers given the earlier choices:
			// read them back by asking for pages that made those choices.
			probs := map[string]float64{}
			for i := 0; len(probs) < len(seen) && i < 20*pages; i++ {
				w := do(s, "POST", "/v1/rank", appKey, `{"model": "homepage",
					"actions": [{"id": "a", "features": {"item": {"id": "a"}}}, {"id": "b", "features": {"item": {"id": "b"}}},
					            {"id": "c", "features": {"item": {"id": "c"}}}, {"id": "d", "features": {"item": {"id": "d"}}}],
					"slots": [{"id": "s1"}, {"id": "s2"}, {"id": "s3", "excluded_actions": ["d"]}]}`)
				var resp slotsResponse
				_ = json.Unmarshal(w.Body.Bytes(), &resp)
				key := resp.Slots[0].Chosen + resp.Slots[1].Chosen + resp.Slots[2].Chosen
				probs[key] = resp.Slots[0].Probability * resp.Slots[1].Probability * resp.Slots[2].Probability
			}
			total := 0.0
			for key, n := range seen {
				p, ok := probs[key]
				if !ok {
					t.Fatalf("triple %s seen %d times but its probability was never read back", key, n)
				}
				total += p
				want := pages * p
				if sd := math.Sqrt(want * (1 - p)); math.Abs(float64(n)-want) > 4.5*sd+1 {
					t.Errorf("%s drawn %d times, expected %.1f (probability %.4f)", key, n, want, p)
				}
			}
			// The triples never drawn carry little probability.
			if total < 0.99 {
				t.Errorf("the triples drawn carry probability %.4f in all", total)
			}
			// The policy is far from uniform (1/24 a triple): the test can tell.
			if probs["abc"] < 0.2 {
				t.Fatalf("the trained policy gives a, b, c probability %.4f: too close to uniform to test anything", probs["abc"])
			}
			t.Logf("%d triples drawn, carrying probability %.4f; a, b, c drawn %d times of %d (probability %.4f)", len(seen), total, seen["abc"], pages, probs["abc"])
		})
	}
}

// A page's slots ranked from the request's listed features get exactly
// what they get from maps (slotContext), and each slot's logged context
// is that context.
func TestSlotsFromListMatchMaps(t *testing.T) {
	t.Parallel()
	cfg := model.Config{Kind: flywheel.KindRanker, Bits: 18, Interactions: [][2]string{{"slot", "item"}, {"user", "item"}},
		Exploration: flywheel.Exploration{Policy: flywheel.SquareCB, GammaScale: 10, GammaExponent: 0.5}}
	m, err := model.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr := model.NewTrainer(m, model.TrainConfig{})
	for i := range 3000 {
		acts := []flywheel.Action{{ID: "a", Features: flywheel.Features{"item": {"c": fmt.Sprint(i % 3), "p": float64(i % 7)}}},
			{ID: "b", Features: flywheel.Features{"item": {"c": "x", "t": []any{"u", "v"}}}}}
		ex := flywheel.Example{EventID: fmt.Sprint(i), Context: flywheel.Features{"user": {"seg": fmt.Sprint(i % 4)}, "slot": {"id": []string{"hero", "side"}[i%2]}},
			Actions: acts, Probabilities: []float64{0.5, 0.5}, ChosenIndex: i % 2, Reward: float64((i / 3) % 2)}
		if err := tr.LearnRanker(&ex); err != nil {
			t.Fatal(err)
		}
	}
	m = tr.Model()
	limits := flywheel.Limits{}.WithDefaults()
	body := []byte(`{"model":"homepage","event_id":"p","context":{"user":{"seg":"2","age":30}},
		"actions":[{"id":"a","features":{"item":{"c":"1","p":3}}},{"id":"b","features":{"item":{"c":"x","t":["u"]}}},{"id":"c"}],
		"slots":[{"id":"hero","features":{"size":"big","w":2,"tags":["p","q"],"on":true},"baseline_action":"a"},{"id":"side","excluded_actions":["c"]}]}`)
	req, err := decodeRank(body, limits)
	if err != nil || req.list == nil {
		t.Fatalf("%v, listed %v", err, req != nil && req.list != nil)
	}
	var maps rankRequest
	if err := decodeStrict(body, &maps); err != nil {
		t.Fatal(err)
	}
	for i := range req.Slots {
		sl := &req.Slots[i]
		set, raw, err := addSlotSet(req.list, req.ctxSet, req.rawContext, sl)
		if err != nil {
			t.Fatal(err)
		}
		ctx := slotContext(maps.Context, &maps.Slots[i])
		var logged flywheel.Features
		if err := json.Unmarshal(raw, &logged); err != nil || fmt.Sprint(logged) != fmt.Sprint(ctx) {
			t.Fatalf("slot %s: logged context %s (%v), want %v", sl.ID, raw, err, ctx)
		}
		var a, b model.Ranking
		if err := m.RankExcluding("k"+sl.ID, ctx, maps.Actions, nil, &a); err != nil {
			t.Fatal(err)
		}
		if err := m.RankListed("k"+sl.ID, req.list, set, req.sets, nil, &b); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("slot %s: from maps %+v, from the list %+v", sl.ID, a, b)
		}
	}
}
