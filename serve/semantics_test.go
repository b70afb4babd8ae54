package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flywheel-dev/flywheel"
)

var semanticsNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// mustSemanticsServer serves two rankers, homepage (rewards in [0, 1],
// feedback skew 1m) and search (unbounded), at a fixed clock.
func mustSemanticsServer(t testing.TB, ev *fakeEvents) *Server {
	t.Helper()
	lo, hi := 0.0, 1.0
	home := flywheel.ModelConfig{Kind: flywheel.KindRanker, Reward: flywheel.RewardConfig{Min: &lo, Max: &hi, MaxFeedbackSkew: time.Minute}}.WithDefaults()
	search := flywheel.ModelConfig{Kind: flywheel.KindRanker, Exploration: flywheel.Exploration{Policy: flywheel.Softmax, Lambda: 1}}.WithDefaults()
	arts := map[string][]byte{"homepage": mustArtifact(t, home), "search": mustArtifact(t, search)}
	reg := &fakeRegistry{champion: func(_ context.Context, name string) (int, []byte, error) { return 1, arts[name], nil }}
	s, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": home, "search": search},
		AppKeys: []Key{{Secret: appKey}}, Limits: flywheel.Limits{MaxActions: 8}}, Options{Registry: reg, Events: ev, Admin: Admin{}, Registerer: prometheus.NewRegistry(), Now: func() time.Time { return semanticsNow }})

	if err != nil {
		t.Fatal(err)
	}
	s.SwapAll(context.Background())
	return s
}

func errorOf(t *testing.T, body []byte) ErrorDetail {
	t.Helper()
	var e struct {
		Error ErrorDetail `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Error
}

func TestFeedbackValidation(t *testing.T) {
	t.Parallel()
	ev := &fakeEvents{}
	s := mustSemanticsServer(t, ev)
	if w := do(s, "POST", "/v1/rank", appKey, `{"model": "homepage", "event_id": "home-1", "actions": [{"id": "a"}, {"id": "b"}]}`); w.Code != 200 {
		t.Fatalf("rank: %d %s", w.Code, w.Body)
	}
	at := func(d time.Duration) string { return semanticsNow.Add(d).Format(time.RFC3339Nano) }
	for _, tc := range []struct {
		name, body string
		msg        string // "" accepted
	}{
		{"in range", `{"event_id": "e", "model": "homepage", "reward": 1}`, ""},
		{"above max", `{"event_id": "e", "model": "homepage", "reward": 1.5}`, "reward 1.5 is above the model's reward.max 1"},
		{"below min", `{"event_id": "e", "model": "homepage", "reward": -0.5}`, "reward -0.5 is below the model's reward.min 0"},
		{"batch names the item", `[{"event_id": "e", "model": "homepage", "reward": 1}, {"event_id": "e", "model": "homepage", "reward": 1e308}]`, "[1].reward 1e+308 is above"},
		{"infinite", `{"event_id": "e", "model": "homepage", "reward": 1e400}`, "reward is out of range"},
		{"not a number", `{"event_id": "e", "model": "homepage", "reward": NaN}`, "not valid JSON"},
		{"unbounded model", `{"event_id": "e", "model": "search", "reward": 1e308}`, ""},
		{"unknown model", `{"event_id": "e", "model": "nope", "reward": 1}`, `model "nope" is not configured`},
		{"bad model name", `{"event_id": "e", "model": "No Pe", "reward": 1}`, "model \"No Pe\" may hold only"},
		// without a model: the model this replica served the event with
		{"remembered event's range", `{"event_id": "home-1", "reward": 2}`, "reward 2 is above the model's reward.max 1"},
		{"unknown event, some model allows it", `{"event_id": "other", "reward": 2}`, ""},
		{"time within skew", `{"event_id": "e", "model": "homepage", "reward": 1, "time": "` + at(-50*time.Second) + `"}`, ""},
		{"time ahead within skew", `{"event_id": "e", "model": "homepage", "reward": 1, "time": "` + at(30*time.Second) + `"}`, ""},
		{"time too old", `{"event_id": "e", "model": "homepage", "reward": 1, "time": "` + at(-2*time.Minute) + `"}`, `time ` + at(-2*time.Minute) + ` is -2m0s from the server's clock; model "homepage"'s reward.max_feedback_skew is 1m0s`},
		{"time too far ahead", `{"event_id": "e", "model": "homepage", "reward": 1, "time": "` + at(time.Hour) + `"}`, "reward.max_feedback_skew is 1m0s"},
		{"search's default skew", `{"event_id": "e", "model": "search", "reward": 1, "time": "` + at(-4*time.Minute) + `"}`, ""},
		{"time not RFC 3339", `{"event_id": "e", "model": "homepage", "reward": 1, "time": "yesterday"}`, `time "yesterday" is not an RFC 3339 time`},
		{"time not a string", `{"event_id": "e", "reward": 1, "time": 12}`, "time must be a string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev.mu.Lock()
			before := len(ev.feedback)
			ev.mu.Unlock()
			w := do(s, "POST", "/v1/feedback", appKey, tc.body)
			e := errorOf(t, w.Body.Bytes())
			switch {
			case tc.msg == "" && w.Code != 202:
				t.Fatalf("refused: %d %s", w.Code, w.Body)
			case tc.msg != "" && (w.Code != 400 || e.Code != flywheel.EINVALID || !strings.Contains(e.Message, tc.msg)):
				t.Fatalf("got %d %+v, want 400 containing %q", w.Code, e, tc.msg)
			}
			ev.mu.Lock()
			defer ev.mu.Unlock()
			if tc.msg != "" && len(ev.feedback) != before {
				t.Fatalf("a refused feedback was logged")
			}
		})
	}
}

// The time the user acted is logged clamped to [decision time, receive
// time]; the client's feedback_id and model are kept, and a feedback without
// a model names the one this replica remembers deciding the event.
func TestFeedbackTimeClampedAndIDsKept(t *testing.T) {
	t.Parallel()
	ev := &fakeEvents{}
	s := mustSemanticsServer(t, ev)
	if w := do(s, "POST", "/v1/rank", appKey, `{"model": "homepage", "event_id": "d1", "actions": [{"id": "a"}, {"id": "b"}]}`); w.Code != 200 {
		t.Fatalf("rank: %d %s", w.Code, w.Body)
	}
	at := func(d time.Duration) string { return semanticsNow.Add(d).Format(time.RFC3339Nano) }
	w := do(s, "POST", "/v1/feedback", appKey, `[
		{"event_id": "d1", "reward": 1, "time": "`+at(-30*time.Second)+`", "feedback_id": "f1"},
		{"event_id": "unknown", "reward": 1, "time": "`+at(-30*time.Second)+`", "model": "homepage"},
		{"event_id": "d1", "reward": 1, "time": "`+at(20*time.Second)+`"},
		{"event_id": "d1", "reward": 0}]`)
	if w.Code != 202 {
		t.Fatalf("feedback: %d %s", w.Code, w.Body)
	}
	fs := ev.feedback
	want := []*time.Time{ptr(semanticsNow), ptr(semanticsNow.Add(-30 * time.Second)), ptr(semanticsNow), nil}
	for i, f := range fs {
		if !f.Time.Equal(semanticsNow) {
			t.Errorf("[%d] ts %v, want the receive time", i, f.Time)
		}
		switch {
		case want[i] == nil && f.ActedAt != nil, want[i] != nil && (f.ActedAt == nil || !f.ActedAt.Equal(*want[i])):
			t.Errorf("[%d] time %v, want %v", i, f.ActedAt, want[i])
		}
	}
	// d1's feedback names homepage, whose decision under d1 this replica
	// remembers, so that it counts for that model's decision alone.
	if fs[0].FeedbackID != "f1" || fs[1].Model != "homepage" || fs[0].Model != "homepage" {
		t.Errorf("feedback ids or models not kept: %+v", fs)
	}
	// the record on Kafka carries them
	b, _ := json.Marshal(fs[1])
	if !strings.Contains(string(b), `"time":"`+at(-30*time.Second)+`"`) || !strings.Contains(string(b), `"model":"homepage"`) {
		t.Errorf("record %s", b)
	}
	if b, _ := json.Marshal(fs[3]); strings.Contains(string(b), `"time"`) {
		t.Errorf("record without a time: %s", b)
	}
}

func ptr[T any](v T) *T { return &v }

// A client event id is unique per model: the same request again gets the
// same answer and logs nothing; another request with the id gets a 409; the
// same id is free for another model.
func TestEventIDUniquePerModel(t *testing.T) {
	t.Parallel()
	ev := &fakeEvents{}
	s := mustSemanticsServer(t, ev)
	req := `{"model": "homepage", "event_id": "same", "actions": [{"id": "a"}, {"id": "b"}, {"id": "c"}]}`
	first := do(s, "POST", "/v1/rank", appKey, req)
	again := do(s, "POST", "/v1/rank", appKey, req)
	if first.Code != 200 || again.Code != 200 || first.Body.String() != again.Body.String() {
		t.Fatalf("same request: %d %s then %d %s", first.Code, first.Body, again.Code, again.Body)
	}
	other := do(s, "POST", "/v1/rank", appKey, `{"model": "homepage", "event_id": "same", "actions": [{"id": "x"}, {"id": "y"}]}`)
	if e := errorOf(t, other.Body.Bytes()); other.Code != 409 || e.Code != flywheel.ECONFLICT || !strings.Contains(e.Message, `event_id "same" was already used`) {
		t.Fatalf("another request with the id: %d %s", other.Code, other.Body)
	}
	if w := do(s, "POST", "/v1/rank", appKey, `{"model": "search", "event_id": "same", "actions": [{"id": "x"}, {"id": "y"}]}`); w.Code != 200 {
		t.Fatalf("the id under another model: %d %s", w.Code, w.Body)
	}
	if len(ev.decisions) != 2 || ev.decisions[0].Model != "homepage" || ev.decisions[1].Model != "search" {
		t.Fatalf("%d decisions logged", len(ev.decisions))
	}
	// A decision that could not be logged does not hold the id.
	ev.fail = flywheel.Errorf(flywheel.EUNAVAILABLE, "kafka down")
	retry := `{"model": "homepage", "event_id": "retry", "actions": [{"id": "a"}]}`
	if w := do(s, "POST", "/v1/rank", appKey, retry); w.Code != 503 {
		t.Fatalf("logging failed: %d", w.Code)
	}
	ev.fail = nil
	if w := do(s, "POST", "/v1/rank", appKey, retry); w.Code != 200 {
		t.Fatalf("retry after a failed log: %d %s", w.Code, w.Body)
	}
}

func TestRecentIDsBounded(t *testing.T) {
	t.Parallel()
	r := newRecentIDs(2)
	for i := 0; i < 3; i++ {
		if out, _ := r.claim("m", fmt.Sprint("e", i), []byte("x"), semanticsNow); out != claimed {
			t.Fatalf("e%d: %v", i, out)
		}
		r.done("m", fmt.Sprint("e", i), []byte("answer"))
	}
	if out, _ := r.claim("m", "e0", []byte("y"), semanticsNow); out != claimed {
		t.Fatalf("the oldest id was not forgotten: %v", out)
	}
	if out, b := r.claim("m", "e2", []byte("x"), semanticsNow); out != replay || string(b) != "answer" {
		t.Fatalf("e2: %v %s", out, b)
	}
	if out, _ := r.claim("m", "e0", []byte("y"), semanticsNow); out != inflight {
		t.Fatalf("the same request in flight: %v", out)
	}
	if out, _ := r.claim("m", "e0", []byte("z"), semanticsNow); out != conflict {
		t.Fatalf("another request with an id in flight: %v", out)
	}
	if out, _ := newRecentIDs(-1).claim("m", "e", nil, semanticsNow); out != unchecked {
		t.Fatalf("disabled: %v", out)
	}
}

// A client's retry of a request still being answered (its first attempt
// timed out on the client's side) waits for that attempt and gets its
// answer, or serves the decision itself when the first attempt logged
// nothing; it is not told that the id is taken.
func TestRecentIDsRetryInFlight(t *testing.T) {
	t.Parallel()
	r := newRecentIDs(8)
	if out, _ := r.claim("m", "e", []byte("x"), semanticsNow); out != claimed {
		t.Fatalf("first attempt: %v", out)
	}
	type result struct {
		out  claimOutcome
		resp []byte
		err  error
	}
	retry := func(id string) chan result {
		ch := make(chan result, 1)
		go func() {
			out, resp, err := r.claimWait(context.Background(), "m", id, []byte("x"), semanticsNow)
			ch <- result{out, resp, err}
		}()
		return ch
	}
	waiting := retry("e")
	select {
	case res := <-waiting:
		t.Fatalf("the retry did not wait for the first attempt: %+v", res)
	case <-time.After(50 * time.Millisecond):
	}
	r.done("m", "e", []byte("answer"))
	if res := <-waiting; res.out != replay || string(res.resp) != "answer" || res.err != nil {
		t.Fatalf("retry after the first attempt answered: %+v", res)
	}

	if out, _ := r.claim("m", "f", []byte("x"), semanticsNow); out != claimed {
		t.Fatalf("first attempt: %v", out)
	}
	out, _, err := r.claimWait(context.Background(), "m", "f", []byte("y"), semanticsNow)
	if out != conflict || err != nil {
		t.Fatalf("another request with the id: %v %v", out, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := r.claimWait(ctx, "m", "f", []byte("x"), semanticsNow); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a retry waits only as long as its request lasts: %v", err)
	}
	waiting = retry("f")
	time.Sleep(20 * time.Millisecond)
	r.release("m", "f") // the first attempt logged nothing
	if res := <-waiting; res.out != claimed || res.err != nil {
		t.Fatalf("retry after the first attempt failed: %+v", res)
	}
}

// Excluded actions are never chosen, have probability exactly 0 in the
// answer and the log, and the others' probabilities sum to 1.
func TestRankExcludedActions(t *testing.T) {
	t.Parallel()
	ev := &fakeEvents{}
	s := mustSemanticsServer(t, ev)
	for i := 0; i < 300; i++ {
		model := []string{"homepage", "search"}[i%2]
		w := do(s, "POST", "/v1/rank", appKey, fmt.Sprintf(`{"model": %q, "event_id": "x%d", "excluded_actions": ["a", "c"],
			"actions": [{"id": "a"}, {"id": "b", "features": {"item": {"p": 1}}}, {"id": "c"}, {"id": "d", "features": {"item": {"q": "z"}}}]}`, model, i))
		if w.Code != 200 {
			t.Fatalf("rank: %d %s", w.Code, w.Body)
		}
		var resp rankResponse
		if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
		if resp.Chosen == "a" || resp.Chosen == "c" || resp.Ranking[0].ID != resp.Chosen {
			t.Fatalf("chose %s: %+v", resp.Chosen, resp)
		}
		sum := 0.0
		for j, r := range resp.Ranking {
			if (r.ID == "a" || r.ID == "c") != (r.Probability == 0) || (r.ID == "a" || r.ID == "c") && j < 2 {
				t.Fatalf("ranking %+v", resp.Ranking)
			}
			sum += r.Probability
		}
		if math.Abs(sum-1) > 1e-12 {
			t.Fatalf("probabilities sum to %v", sum)
		}
		d := ev.decisions[len(ev.decisions)-1]
		if d.Probabilities[0] != 0 || d.Probabilities[2] != 0 || d.Probabilities[d.ChosenIndex] == 0 || d.Validate() != nil {
			t.Fatalf("logged %v, chosen %d", d.Probabilities, d.ChosenIndex)
		}
	}
	for _, tc := range []struct{ body, msg string }{
		{`{"model": "homepage", "excluded_actions": ["z"], "actions": [{"id": "a"}, {"id": "b"}]}`, `excluded_actions[0] "z" is not the id of an action`},
		{`{"model": "homepage", "excluded_actions": ["a", "a"], "actions": [{"id": "a"}, {"id": "b"}]}`, `excluded_actions[1] "a" is repeated`},
		{`{"model": "homepage", "excluded_actions": ["b", "a"], "actions": [{"id": "a"}, {"id": "b"}]}`, "excludes every action"},
		{`{"model": "homepage", "excluded_actions": "a", "actions": [{"id": "a"}, {"id": "b"}]}`, "excluded_actions must be a array"},
	} {
		w := do(s, "POST", "/v1/rank", appKey, tc.body)
		if e := errorOf(t, w.Body.Bytes()); w.Code != 400 || !strings.Contains(e.Message, tc.msg) {
			t.Errorf("%s: %d %+v, want 400 containing %q", tc.body, w.Code, e, tc.msg)
		}
	}
}

// Feedback after its decision's reward window is counted as late, by the
// time it is judged on (when the user acted, if the client said): within
// reward.late_window as rescored, after it as not; in time, or on a
// decision this replica does not remember, not at all.
func TestLateFeedbackCounted(t *testing.T) {
	t.Parallel()
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Reward: flywheel.RewardConfig{Window: time.Minute, LateWindow: 5 * time.Minute}}.WithDefaults()
	reg := &fakeRegistry{champion: func(context.Context, string) (int, []byte, error) { return 1, mustArtifact(t, mc), nil }}
	var now atomic.Pointer[time.Time]
	now.Store(&semanticsNow)
	s, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": mc}, AppKeys: []Key{{Secret: appKey}}}, Options{Registry: reg, Events: &fakeEvents{}, Admin: Admin{}, Registerer: prometheus.NewRegistry(), Now: func() time.Time { return *now.Load() }})

	if err != nil {
		t.Fatal(err)
	}
	s.SwapAll(context.Background())
	for _, id := range []string{"in-time", "rescored", "ignored", "acted-in-time"} {
		if w := do(s, "POST", "/v1/rank", appKey, `{"model": "homepage", "event_id": "`+id+`", "actions": [{"id": "a"}, {"id": "b"}]}`); w.Code != 200 {
			t.Fatalf("rank %s: %d %s", id, w.Code, w.Body)
		}
	}
	feedback := func(after time.Duration, body string) {
		t.Helper()
		at := semanticsNow.Add(after)
		now.Store(&at)
		if w := do(s, "POST", "/v1/feedback", appKey, body); w.Code != 202 {
			t.Fatalf("feedback %s: %d %s", body, w.Code, w.Body)
		}
	}
	acted := semanticsNow.Add(50 * time.Second).Format(time.RFC3339Nano)
	feedback(30*time.Second, `{"event_id": "in-time", "reward": 1}`)
	feedback(3*time.Minute, `[{"event_id": "rescored", "reward": 1}, {"event_id": "acted-in-time", "reward": 1, "time": "`+acted+`"}]`)
	feedback(10*time.Minute, `[{"event_id": "ignored", "reward": 1}, {"event_id": "unknown", "reward": 1}, {"event_id": "rescored", "reward": 1}]`)
	for _, tc := range []struct {
		rescored string
		want     float64
	}{{"true", 1}, {"false", 2}} {
		if got := testutil.ToFloat64(s.metrics.lateFeedback.WithLabelValues("homepage", tc.rescored)); got != tc.want {
			t.Errorf("flywheel_feedback_late_total{rescored=%q} = %v, want %v", tc.rescored, got, tc.want)
		}
	}
}
