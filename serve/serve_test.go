package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	os.Exit(m.Run())
}

// fakeRegistry and fakeEvents are the boundaries' fakes: function fields.
// Without alias, Alias answers from champion and canary.
type fakeRegistry struct {
	champion func(ctx context.Context, name string) (int, []byte, error)
	canary   func(ctx context.Context, name string) (int, []byte, error)
	alias    func(ctx context.Context, name, alias string) (int, error)
	versions map[int][]byte // what Artifact finds
}

func (f *fakeRegistry) Artifact(_ context.Context, name string, version int) ([]byte, error) {
	if b, ok := f.versions[version]; ok {
		return b, nil
	}
	return nil, flywheel.Errorf(flywheel.ENOTFOUND, "model %s has no version %d", name, version)
}

func (f *fakeRegistry) Alias(ctx context.Context, name, alias string) (int, error) {
	if f.alias != nil {
		return f.alias(ctx, name, alias)
	}
	get := f.Champion
	if alias == aliasCanary {
		get = f.Canary
	}
	v, _, err := get(ctx, name)
	return v, err
}

func (f *fakeRegistry) Champion(ctx context.Context, name string) (int, []byte, error) {
	return f.champion(ctx, name)
}

func (f *fakeRegistry) Canary(ctx context.Context, name string) (int, []byte, error) {
	if f.canary == nil {
		return 0, nil, nil
	}
	return f.canary(ctx, name)
}

type fakeEvents struct {
	mu        sync.Mutex
	decisions []*flywheel.Decision
	feedback  []flywheel.Feedback
	fail      error
	health    error // what Health returns (spool_health_test.go)
}

func (f *fakeEvents) LogDecision(_ context.Context, d *flywheel.Decision) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	c := *d // serving reuses the slices once this returns (EventLogger)
	c.Actions, c.RawActions = slices.Clone(d.Actions), slices.Clone(d.RawActions)
	c.Probabilities, c.Ranking, c.RawProbabilities = slices.Clone(d.Probabilities), slices.Clone(d.Ranking), slices.Clone(d.RawProbabilities)
	f.decisions = append(f.decisions, &c)
	return nil
}

func (f *fakeEvents) LogFeedback(_ context.Context, fs []flywheel.Feedback) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.feedback = append(f.feedback, fs...)
	return nil
}

const (
	appKey   = "app-key-0123456789"
	adminKey = "admin-key-0123456789"
)

func mustArtifact(t testing.TB, mc flywheel.ModelConfig) []byte {
	t.Helper()
	m, err := model.FromConfig(mc)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustServer(t testing.TB, ev *fakeEvents, version *int, artifact *[]byte) *Server {
	t.Helper()
	rank := flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}}}.WithDefaults()
	clf := flywheel.ModelConfig{Kind: flywheel.KindClassifier}.WithDefaults()
	arts := map[string][]byte{"homepage": mustArtifact(t, rank), "ctr": mustArtifact(t, clf)}
	reg := &fakeRegistry{champion: func(_ context.Context, name string) (int, []byte, error) {
		if name == "homepage" && artifact != nil && *artifact != nil {
			return *version, *artifact, nil
		}
		return 1, arts[name], nil
	}}
	s, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": rank, "ctr": clf},
		AppKeys: []Key{{Secret: appKey}}, AdminKeys: []Key{{Label: "ops", Secret: adminKey}}, Limits: flywheel.Limits{MaxActions: 5}}, Options{Registry: reg, Events: ev, Admin: Admin{}, Registerer: prometheus.NewRegistry()})

	if err != nil {
		t.Fatal(err)
	}
	s.SwapAll(context.Background())
	return s
}

func do(s *Server, method, path, key, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Host = "127.0.0.1:8080" // as a client of a server on loopback sends it
	if method != "GET" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	return w
}

const goodRank = `{"model": "homepage", "event_id": "ev1", "context": {"user": {"segment": "b", "age": 31, "tags": ["x", "y"]}},
	"actions": [{"id": "a1", "features": {"item": {"category": "shoes", "price": 49.9}}}, {"id": "a2"}, {"id": "a3", "features": {"item": {"new": true}}}]}`

func TestRankLogsExactProbabilities(t *testing.T) {
	t.Parallel()
	ev := &fakeEvents{}
	s := mustServer(t, ev, nil, nil)
	w := do(s, "POST", "/v1/rank", appKey, goodRank)
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var resp rankResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.EventID != "ev1" || resp.ModelVersion != 1 || len(resp.Ranking) != 3 || resp.Chosen != resp.Ranking[0].ID {
		t.Fatalf("response %+v", resp)
	}
	sum := 0.0
	for _, r := range resp.Ranking {
		sum += r.Probability
	}
	if sum < 0.999999 || sum > 1.000001 {
		t.Fatalf("probabilities sum to %v", sum)
	}
	if len(ev.decisions) != 1 {
		t.Fatalf("%d decisions logged", len(ev.decisions))
	}
	d := ev.decisions[0]
	if d.EventID != "ev1" || d.Chosen != resp.Chosen || d.Probabilities[d.ChosenIndex] != resp.Ranking[0].Probability {
		t.Fatalf("logged decision %+v does not match the response %+v", d, resp)
	}
	// The logged JSON carries the request's context and actions unchanged.
	rec, err := d.Record()
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	var back flywheel.Decision
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Context["user"]["segment"] != "b" || len(back.Actions) != 3 || back.Actions[0].Features["item"]["price"] != 49.9 || back.EventID != "ev1" {
		t.Fatalf("logged decision decodes to %+v", back)
	}
	// Same request, same answer.
	again := do(s, "POST", "/v1/rank", appKey, goodRank)
	var resp2 rankResponse
	_ = json.Unmarshal(again.Body.Bytes(), &resp2)
	if resp2.Chosen != resp.Chosen {
		t.Fatalf("same event id chose %s then %s", resp.Chosen, resp2.Chosen)
	}
	// The client's id is marked as such; one serving draws is marked as
	// its own (ingest does not look for another decision under it).
	if d.ServerID {
		t.Fatalf("the client's event id ev1 was logged as drawn by the server")
	}
	var noID map[string]any
	_ = json.Unmarshal([]byte(goodRank), &noID)
	delete(noID, "event_id")
	body, _ := json.Marshal(noID)
	if w := do(s, "POST", "/v1/rank", appKey, string(body)); w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if last := ev.decisions[len(ev.decisions)-1]; !last.ServerID || last.EventID == "ev1" || len(last.EventID) != 32 {
		t.Fatalf("a decision whose id serving drew was logged as %q, server_id %v", last.EventID, last.ServerID)
	}
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	ev := &fakeEvents{}
	s := mustServer(t, ev, nil, nil)
	for _, tc := range []struct {
		name, path, key, body string
		status                int
		code, msg             string
	}{
		{"no key", "/v1/rank", "", goodRank, 401, "unauthenticated", "Bearer"},
		{"wrong key", "/v1/rank", "nope-nope-nope-nope", goodRank, 401, "unauthenticated", "not valid"},
		{"app key on admin route", "/v1/models/homepage/rollback", appKey, `{}`, 403, "permission_denied", "admin"},
		{"unknown model", "/v1/rank", appKey, `{"model": "nope", "actions": [{"id": "a"}]}`, 404, "not_found", "nope"},
		{"classifier on rank", "/v1/rank", appKey, `{"model": "ctr", "actions": [{"id": "a"}]}`, 400, "invalid_argument", "/v1/predict"},
		{"no actions", "/v1/rank", appKey, `{"model": "homepage", "actions": []}`, 400, "invalid_argument", "actions is empty"},
		{"empty action id", "/v1/rank", appKey, `{"model": "homepage", "actions": [{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": ""}]}`, 400, "invalid_argument", "actions[3].id is empty"},
		{"duplicate ids", "/v1/rank", appKey, `{"model": "homepage", "actions": [{"id": "a"}, {"id": "a"}]}`, 400, "invalid_argument", "actions[1].id \"a\" repeats actions[0].id"},
		{"bad feature value", "/v1/rank", appKey, `{"model": "homepage", "actions": [{"id": "a", "features": {"item": {"price": {"x": 1}}}}]}`, 400, "invalid_argument", "actions[0].features.item.price must be a string, a number, a bool or an array of strings"},
		{"null feature", "/v1/rank", appKey, `{"model": "homepage", "actions": [{"id": "a", "features": {"item": {"price": null}}}]}`, 400, "invalid_argument", "actions[0].features.item.price is null"},
		{"infinite number", "/v1/rank", appKey, `{"model": "homepage", "context": {"user": {"age": 1e400}}, "actions": [{"id": "a"}]}`, 400, "invalid_argument", "out of range"},
		{"bag of numbers", "/v1/rank", appKey, `{"model": "homepage", "context": {"user": {"tags": ["a", 1]}}, "actions": [{"id": "a"}]}`, 400, "invalid_argument", "context.user.tags[1] is not a string"},
		{"too many actions", "/v1/rank", appKey, `{"model": "homepage", "actions": [{"id": "1"}, {"id": "2"}, {"id": "3"}, {"id": "4"}, {"id": "5"}, {"id": "6"}]}`, 400, "invalid_argument", "limit is 5"},
		{"unknown field", "/v1/rank", appKey, `{"model": "homepage", "actoins": []}`, 400, "invalid_argument", "unknown field"},
		{"not json", "/v1/rank", appKey, `{"model":`, 400, "invalid_argument", "not valid JSON"},
		{"too large", "/v1/rank", appKey, `{"model": "homepage", "event_id": "` + strings.Repeat("x", 2<<20) + `"}`, 413, "too_large", "larger than"},
		{"feedback without reward", "/v1/feedback", appKey, `{"event_id": "e"}`, 400, "invalid_argument", "reward is missing"},
		{"no route", "/v2/rank", appKey, `{}`, 404, "not_found", "no route"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := do(s, "POST", tc.path, tc.key, tc.body)
			var body struct {
				Error ErrorDetail `json:"error"`
			}
			_ = json.Unmarshal(w.Body.Bytes(), &body)
			if w.Code != tc.status || body.Error.Code != tc.code || !strings.Contains(body.Error.Message, tc.msg) {
				t.Fatalf("got %d %+v, want %d %s containing %q", w.Code, body.Error, tc.status, tc.code, tc.msg)
			}
		})
	}
	if len(ev.decisions) != 0 || len(ev.feedback) != 0 {
		t.Fatalf("bad requests logged %d decisions and %d feedback", len(ev.decisions), len(ev.feedback))
	}
}

func TestFeedbackAndPredict(t *testing.T) {
	t.Parallel()
	ev := &fakeEvents{}
	s := mustServer(t, ev, nil, nil)
	w := do(s, "POST", "/v1/feedback", appKey, `[{"event_id": "e1", "reward": 1}, {"event_id": "e2", "reward": 0, "feedback_id": "mine"}]`)
	if w.Code != 202 || len(ev.feedback) != 2 || ev.feedback[1].FeedbackID != "mine" || ev.feedback[0].FeedbackID == "" {
		t.Fatalf("feedback: %d %s, logged %+v", w.Code, w.Body, ev.feedback)
	}
	w = do(s, "POST", "/v1/predict", appKey, `{"model": "ctr", "features": {"u": {"x": 1}}}`)
	var p predictResponse
	_ = json.Unmarshal(w.Body.Bytes(), &p)
	if w.Code != 200 || p.Score != 0.5 || p.EventID == "" {
		t.Fatalf("predict: %d %s", w.Code, w.Body)
	}
	ev.fail = flywheel.Errorf(flywheel.EUNAVAILABLE, "kafka down")
	if w := do(s, "POST", "/v1/feedback", appKey, `{"event_id": "e3", "reward": 1}`); w.Code != 503 {
		t.Fatalf("feedback that could not be logged answered %d", w.Code)
	}
}

func TestCorruptArtifactIsRefusedAndOldModelKeepsServing(t *testing.T) {
	t.Parallel()
	ev := &fakeEvents{}
	version := 2
	var artifact []byte
	s := mustServer(t, ev, &version, &artifact)
	good := mustArtifact(t, flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}}}.WithDefaults())
	artifact = append([]byte(nil), good...)
	artifact[len(artifact)/2] ^= 0xff
	if _, err := s.Swap(context.Background(), "homepage"); err == nil {
		t.Fatal("a corrupted artifact was swapped in")
	}
	w := do(s, "POST", "/v1/rank", appKey, goodRank)
	var resp rankResponse
	_ = json.Unmarshal(w.Body.Bytes(), &resp)
	if w.Code != 200 || resp.ModelVersion != 1 {
		t.Fatalf("after a refused swap: %d, version %d", w.Code, resp.ModelVersion)
	}
	// Versions are immutable: the refused one is not fetched again; the
	// champion moving to a good version swaps it in.
	artifact = good
	if v, err := s.Swap(context.Background(), "homepage"); err == nil || v != 1 {
		t.Fatalf("the refused version again: version %d, %v", v, err)
	}
	version = 3
	if v, err := s.Swap(context.Background(), "homepage"); err != nil || v != 3 {
		t.Fatalf("good artifact: version %d, %v", v, err)
	}
}

// The OpenAPI document lists exactly the routes served.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	s := mustServer(t, &fakeEvents{}, nil, nil)
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	var documented, served []string
	for p, ops := range doc.Paths {
		for m := range ops {
			documented = append(documented, strings.ToUpper(m)+" "+p)
		}
	}
	for _, r := range s.engine.Routes() {
		if strings.HasPrefix(r.Path, "/ui") {
			continue // the dashboard's static files, not API
		}
		p := r.Path
		for _, seg := range strings.Split(p, "/") {
			if strings.HasPrefix(seg, ":") {
				p = strings.Replace(p, seg, "{"+seg[1:]+"}", 1)
			}
		}
		served = append(served, r.Method+" "+p)
	}
	sort.Strings(documented)
	sort.Strings(served)
	if fmt.Sprint(documented) != fmt.Sprint(served) {
		t.Fatalf("documented %v\nserved     %v", documented, served)
	}
}

func FuzzDecodeRank(f *testing.F) {
	f.Add([]byte(goodRank))
	f.Add([]byte(`{"model": "x", "actions": [{"id": "a", "features": {"n": {"b": [1]}}}]}`))
	f.Add([]byte(`{"model": "x", "excluded_actions": ["a"], "actions": [{"id": "a"}, {"id": "b"}]}`))
	f.Add([]byte(`{"actions": [{"features": {"item": {"p": 1.5, "t": ["x"]}}, "id": "a"}, {"id": "b", "features": null}], "context": {"user": {"id": "u\u00e9"}}, "model": "x", "defer_activation": true}`))
	f.Add([]byte(`{"model": "x", "actions": [{"id": "a"}, {"id": "b"}], "slots": [{"id": "hero", "features": {"size": "l", "position": 1}, "baseline_action": "a"}, {"id": "side", "excluded_actions": ["a"]}]}`))
	limits := flywheel.Limits{}.WithDefaults()
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeRank(b, limits)
		if err != nil {
			if flywheel.ErrorCode(err) != flywheel.EINVALID {
				t.Fatalf("decode error with code %s: %v", flywheel.ErrorCode(err), err)
			}
			return
		}
		if len(req.Actions) == 0 || req.Model == "" {
			t.Fatalf("accepted %+v", req)
		}
		if sr, ok := scanRank(b, limits); ok { // read in one pass: the general decoder reads the same request
			req := sr
			var general rankRequest
			if err := decodeStrict(b, &general); err != nil {
				t.Fatalf("read from the bytes, but the general decoder says %v", err)
			}
			ctx, acts := req.context(), req.actions()
			if ctx == nil {
				ctx = flywheel.Features{}
			}
			if general.Context == nil {
				general.Context = flywheel.Features{}
			}
			for ns, f := range general.Context {
				if len(f) == 0 {
					delete(general.Context, ns)
				}
			}
			for i := range general.Actions {
				for ns, f := range general.Actions[i].Features {
					if len(f) == 0 {
						delete(general.Actions[i].Features, ns)
					}
				}
				if len(general.Actions[i].Features) == 0 {
					general.Actions[i].Features = nil
				}
			}
			if general.Model != req.Model || general.EventID != req.EventID || general.DeferActivation != req.DeferActivation ||
				fmt.Sprint(general.Context) != fmt.Sprint(ctx) || fmt.Sprint(general.Actions) != fmt.Sprint(acts) ||
				fmt.Sprint(general.ExcludedActions) != fmt.Sprint(req.ExcludedActions) || fmt.Sprint(general.Slots) != fmt.Sprint(req.Slots) {
				t.Fatalf("read from the bytes as %+v %v %v, by the general decoder as %+v", req, ctx, acts, general)
			}
		}
		// an accepted request can be ranked
		m, _ := model.New(model.Config{Kind: flywheel.KindRanker, Bits: 8, Exploration: flywheel.Exploration{Policy: flywheel.EpsilonGreedy, Epsilon: 0.1}})
		var r, maps model.Ranking
		if err := m.RankExcluding("k", req.context(), req.actions(), req.excluded, &maps); err != nil {
			t.Fatal(err)
		}
		r = maps
		if req.list != nil { // scored from the list: exactly as from the maps
			if err := m.RankListed("k", req.list, 0, req.sets, req.excluded, &r); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(r) != fmt.Sprint(maps) {
				t.Fatalf("ranked from the list %+v, from the maps %+v", r, maps)
			}
		}
		for i, x := range req.excluded {
			if x && (r.Probabilities[i] != 0 || r.Chosen == i) {
				t.Fatalf("excluded action %d: probability %v, chosen %d", i, r.Probabilities[i], r.Chosen)
			}
		}
	})
}

// A canary gets its share of users, each user always the same variant, and
// the variant is logged with the version that served.
func TestCanarySplitIsStableByUser(t *testing.T) {
	t.Parallel()
	ev := &fakeEvents{}
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Promote: flywheel.PromoteConfig{Canary: flywheel.CanaryConfig{Share: 0.3}}}.WithDefaults()
	art := mustArtifact(t, mc)
	canaryOn := true
	reg := &fakeRegistry{
		champion: func(context.Context, string) (int, []byte, error) { return 1, art, nil },
		canary: func(context.Context, string) (int, []byte, error) {
			if canaryOn {
				return 2, art, nil
			}
			return 0, nil, nil
		},
	}
	s, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": mc}, Open: true}, Options{Registry: reg, Events: ev, Admin: Admin{}})
	if err != nil {
		t.Fatal(err)
	}
	s.SwapAll(context.Background())
	seen := map[string]string{}
	canary := 0
	const users = 1000
	for round := 0; round < 2; round++ {
		for u := 0; u < users; u++ {
			body := fmt.Sprintf(`{"model": "homepage", "context": {"user": {"id": "u%d"}}, "actions": [{"id": "a"}, {"id": "b"}]}`, u)
			w := do(s, "POST", "/v1/rank", "", body)
			var resp rankResponse
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || w.Code != 200 {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
			key := fmt.Sprint("u", u)
			if prev, ok := seen[key]; ok && prev != resp.Variant {
				t.Fatalf("user %s saw %s then %s", key, prev, resp.Variant)
			}
			seen[key] = resp.Variant
			if want := map[string]int{"champion": 1, "canary": 2}[resp.Variant]; resp.ModelVersion != want {
				t.Fatalf("variant %s served by v%d", resp.Variant, resp.ModelVersion)
			}
			if round == 0 && resp.Variant == "canary" {
				canary++
			}
		}
	}
	if canary < 240 || canary > 360 { // 300 expected, sd about 14.5
		t.Fatalf("%d of %d users on the canary; share 0.3", canary, users)
	}
	if d := ev.decisions[len(ev.decisions)-1]; d.Variant != seen[fmt.Sprint("u", users-1)] {
		t.Fatalf("logged variant %s", d.Variant)
	}
	canaryOn = false
	s.SwapAll(context.Background())
	w := do(s, "POST", "/v1/rank", "", `{"model": "homepage", "actions": [{"id": "a"}]}`)
	var resp rankResponse
	_ = json.Unmarshal(w.Body.Bytes(), &resp)
	if resp.Variant != "champion" || resp.ModelVersion != 1 {
		t.Fatalf("after the canary ended: %+v", resp)
	}
	t.Logf("%d of %d users on the canary (share 0.3), each on one variant over two rounds", canary, users)
}

// The context and actions kept as sent for the decision log decode to what
// the request decoded to, whatever the ids hold.
func TestRankKeepsRawJSON(t *testing.T) {
	t.Parallel()
	limits := flywheel.Limits{}.WithDefaults()
	for _, body := range []string{
		`{"model": "m", "context": {"user": {"segment": "b", "age": 31, "tags": ["x", "y"]}},
		  "actions": [{"id": "a\"b", "features": {"item": {"price": 1e3, "new": true}}}, {"id": "é\u0001<&>"}, {"id": "c", "features": null}]}`,
		`{"model": "m", "actions": [{"id": "solo", "features": {}}]}`,
	} {
		req, err := decodeRank([]byte(body), limits)
		if err != nil {
			t.Fatal(err)
		}
		var ctx flywheel.Features
		var acts []flywheel.Action
		if err := json.Unmarshal(req.rawContext, &ctx); err != nil {
			t.Fatalf("raw context %s: %v", req.rawContext, err)
		}
		logged, err := json.Marshal(req.rawActions)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(logged, &acts); err != nil {
			t.Fatalf("raw actions %s: %v", logged, err)
		}
		reqCtx, reqActs := req.context(), req.actions()
		if len(reqCtx) == 0 && len(ctx) == 0 {
			ctx = reqCtx
		}
		for i := range acts {
			if len(acts[i].Features) == 0 && len(reqActs[i].Features) == 0 {
				acts[i].Features = reqActs[i].Features
			}
		}
		if fmt.Sprint(ctx) != fmt.Sprint(reqCtx) || fmt.Sprint(acts) != fmt.Sprint(reqActs) {
			t.Fatalf("raw JSON decodes to %v %v, the request to %v %v", ctx, acts, reqCtx, reqActs)
		}
	}
}

// The cause of a 500 is logged once, with the route, and never shown; every
// error answer is counted by its code; a client's error is not logged.
func TestInternalErrorsLoggedAndCounted(t *testing.T) {
	t.Parallel()
	rank := flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}}}.WithDefaults()
	art := mustArtifact(t, rank)
	reg := &fakeRegistry{champion: func(context.Context, string) (int, []byte, error) { return 1, art, nil }}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	promReg := prometheus.NewRegistry()
	admin := Admin{Promote: func(context.Context, string, int, string, string) error {
		return errors.New("insert deployments: dial tcp 10.0.0.7:9000: connection refused")
	}}
	s, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": rank},
		AdminKeys: []Key{{Label: "ops", Secret: adminKey}}}, Options{Registry: reg, Events: &fakeEvents{}, Admin: admin, Registerer: promReg, Logger: log})

	if err != nil {
		t.Fatal(err)
	}
	s.SwapAll(context.Background())
	w := do(s, "POST", "/v1/models/homepage/promote", adminKey, `{"version": 1}`)
	if w.Code != 500 || strings.Contains(w.Body.String(), "10.0.0.7") {
		t.Fatalf("promote: %d %s; want 500 without the cause", w.Code, w.Body)
	}
	if w := do(s, "POST", "/v1/rank", adminKey, `{"model": "homepage", "actions": []}`); w.Code != 400 {
		t.Fatalf("empty rank: %d %s", w.Code, w.Body)
	}
	got := logs.String()
	if strings.Count(got, "request failed") != 1 || !strings.Contains(got, "10.0.0.7:9000: connection refused") || !strings.Contains(got, "/v1/models/:name/promote") {
		t.Fatalf("log:\n%s\nwant the cause of the 500, once, with its route, and nothing of the 400", got)
	}
	for code, want := range map[string]float64{flywheel.EINTERNAL: 1, flywheel.EINVALID: 1} {
		if n := testutil.ToFloat64(s.metrics.errors.WithLabelValues(code)); n != want {
			t.Errorf("flywheel_http_errors_total{code=%q} = %v, want %v", code, n, want)
		}
	}
}

// A page's request is read in one pass too: scanRank takes its slots
// (decoding only their span the general way), as the general decoder does.
func TestScanRankReadsAPage(t *testing.T) {
	body := []byte(`{"model": "x", "actions": [{"id": "a", "features": {"item": {"p": 1}}}, {"id": "b"}], "slots": [{"id": "hero", "features": {"size": "l"}, "baseline_action": "a"}, {"id": "side", "excluded_actions": ["a"]}], "event_id": "e1"}`)
	limits := flywheel.Limits{}.WithDefaults()
	req, ok := scanRank(body, limits)
	if !ok {
		t.Fatal("scanRank did not take a page")
	}
	defer req.release()
	if len(req.Slots) != 2 || req.Slots[0].ID != "hero" || req.Slots[0].BaselineAction != "a" || fmt.Sprint(req.Slots[1].ExcludedActions) != "[a]" || req.EventID != "e1" || len(req.Actions) != 2 {
		t.Fatalf("read %+v, slots %+v", req, req.Slots)
	}
	for _, bad := range []string{`"slots": 5`, `"slots": [{"id": "s", "size": 1}]`, `"slots": [], "slots": []`} {
		b := []byte(`{"model": "x", "actions": [{"id": "a"}], ` + bad + `}`)
		if _, ok := scanRank(b, limits); ok {
			t.Errorf("scanRank took %s", b)
		}
	}
}
