package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
)

// A rank without an event id gets one, and every retry sends the very same
// body; 503s are retried, a 400 is not and comes back as an *Error with the
// API's code and message.
func TestRetriesAreIdempotent(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	fail := 2
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		bodies = append(bodies, string(b))
		if r.Header.Get("Authorization") != "Bearer k" {
			t.Errorf("authorization %q", r.Header.Get("Authorization"))
		}
		switch {
		case r.URL.Path == "/v1/predict":
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error": {"code": "invalid_argument", "message": "features.x is not a feature"}}`)
		case fail > 0:
			fail--
			w.WriteHeader(http.StatusServiceUnavailable)
		case r.URL.Path == "/v1/rank":
			var req RankRequest
			_ = json.Unmarshal(b, &req)
			_ = json.NewEncoder(w).Encode(RankResponse{EventID: req.EventID, ModelVersion: 3, Chosen: "b"})
		default:
			_, _ = io.WriteString(w, `{"accepted": 2, "feedback_ids": ["x", "y"]}`)
		}
	}))
	defer srv.Close()
	c := &Client{BaseURL: srv.URL, Key: "k", Backoff: time.Millisecond}
	ctx := context.Background()
	resp, err := c.Rank(ctx, RankRequest{Model: "m", Actions: []flywheel.Action{{ID: "a"}, {ID: "b"}}})
	if err != nil || resp.Chosen != "b" || len(resp.EventID) != 32 {
		t.Fatalf("rank: %+v, %v", resp, err)
	}
	if len(bodies) != 3 || bodies[0] != bodies[1] || bodies[1] != bodies[2] {
		t.Fatalf("attempts sent %q", bodies)
	}
	bodies, fail = nil, 1
	if _, err := c.SendFeedback(ctx, Feedback{EventID: "e", Reward: 1}, Feedback{EventID: "e", Reward: 1, Slot: "hero", Time: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	var sent []map[string]any
	if len(bodies) != 2 || bodies[0] != bodies[1] || json.Unmarshal([]byte(bodies[0]), &sent) != nil {
		t.Fatalf("feedback attempts %q", bodies)
	}
	if sent[0]["feedback_id"] == "" || sent[0]["feedback_id"] == sent[1]["feedback_id"] || sent[1]["slot"] != "hero" || sent[1]["time"] != "1970-01-01T00:00:01Z" {
		t.Fatalf("feedback sent %v", sent)
	}
	bodies = nil
	_, err = c.Predict(ctx, PredictRequest{Model: "ctr", Features: flywheel.Features{"u": {"x": 1.0}}})
	var e *Error
	if !errors.As(err, &e) || e.Status != 400 || e.Code != "invalid_argument" || e.Message != "features.x is not a feature" || len(bodies) != 1 {
		t.Fatalf("predict: %v (%d attempts)", err, len(bodies))
	}
	// Out of retries: the last error.
	c.Retries, fail = 1, 5
	if _, err := c.Rank(ctx, RankRequest{Model: "m", Actions: []flywheel.Action{{ID: "a"}}}); !errors.As(err, &e) || e.Status != 503 {
		t.Fatalf("rank against a server down: %v", err)
	}
}
