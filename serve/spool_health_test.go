package serve

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
)

// Health makes fakeEvents a healthChecker, as the event logger is.
func (f *fakeEvents) Health() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.health
}

// spoolFullError is what the event logger returns when its spool is full:
// a flywheel error with a retry delay.
type spoolFullError struct{ err *flywheel.Error }

func (e spoolFullError) Error() string             { return e.err.Error() }
func (e spoolFullError) Unwrap() error             { return e.err }
func (e spoolFullError) RetryAfter() time.Duration { return 4500 * time.Millisecond }

// /readyz says not ready while the event spool takes no writes and ready
// again once it does; an event the spool refuses is answered 503
// spool_full with Retry-After, and the next one the spool takes is 200.
func TestReadyzFollowsSpoolHealth(t *testing.T) {
	t.Parallel()
	ev := &fakeEvents{}
	s := mustServer(t, ev, nil, nil)
	full := spoolFullError{flywheel.Errorf(flywheel.ESPOOLFULL, "the event log of this server is full")}
	for _, step := range []struct {
		name         string
		err          error // the spool's health and its answer to writes
		ready, rank  int
		code, retry  string
		feedbackCode int
	}{
		{name: "the spool takes writes", ready: 200, rank: 200, feedbackCode: 202},
		{name: "the spool is full", err: full, ready: 503, rank: 503, code: flywheel.ESPOOLFULL, retry: "5", feedbackCode: 503},
		{name: "the spool takes writes again", ready: 200, rank: 200, feedbackCode: 202},
	} {
		ev.mu.Lock()
		ev.health, ev.fail = step.err, step.err
		ev.mu.Unlock()
		if w := do(s, "GET", "/readyz", "", ""); w.Code != step.ready {
			t.Fatalf("%s: /readyz %d %s, want %d", step.name, w.Code, w.Body, step.ready)
		}
		// a new event id each step: the same request again would be answered
		// from the first answer, logging nothing
		w := do(s, "POST", "/v1/rank", appKey, strings.Replace(goodRank, `"ev1"`, strconv.Quote("ev-"+step.name), 1))
		var body struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.Unmarshal(w.Body.Bytes(), &body)
		if w.Code != step.rank || body.Error.Code != step.code || w.Header().Get("Retry-After") != step.retry {
			t.Fatalf("%s: rank %d %s Retry-After %q, want %d %q %q", step.name, w.Code, w.Body, w.Header().Get("Retry-After"), step.rank, step.code, step.retry)
		}
		if w := do(s, "POST", "/v1/feedback", appKey, `{"event_id": "e1", "reward": 1}`); w.Code != step.feedbackCode {
			t.Fatalf("%s: feedback %d %s, want %d", step.name, w.Code, w.Body, step.feedbackCode)
		}
	}
}
