// Package client is a small Go client of Flywheel's HTTP API: rank a set of
// actions (or a page of slots), activate a deferred decision, send
// feedback, score an item. It retries
// what is safe to retry, with exponential backoff and jitter, and makes
// every call safe to retry: a rank request without an event id gets one of
// the client's choosing, so that a retry is answered with the same decision
// (the server replays an identical request with a known event id), and a
// feedback without a feedback id gets one, so that a retry counts once.
//
// It depends on the standard library and the root package's feature types
// only.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/flywheel-dev/flywheel"
)

// Client calls one Flywheel server. Its fields may be set before first use;
// it is safe for concurrent use afterwards.
type Client struct {
	// BaseURL is the server's, e.g. http://127.0.0.1:8080.
	BaseURL string
	// Key is the app (or admin) key, sent as a bearer token; "" sends none.
	Key string
	// HTTP is the client requests go through; default: one with a 5 s
	// timeout per attempt that keeps up to 64 connections open (see
	// Transport).
	HTTP *http.Client
	// Retries is how many times a failed attempt is repeated (network
	// errors, 429, 502, 503, 504); default 3. -1: never.
	Retries int
	// Backoff is the first wait between attempts, doubled each time, with
	// jitter, up to 2 s; a Retry-After header is honoured. Default 50 ms.
	Backoff time.Duration
}

// New returns a client of the server at baseURL with key.
func New(baseURL, key string) *Client { return &Client{BaseURL: baseURL, Key: key} }

// Error is a non-2xx answer: its HTTP status and the API's error code and
// message.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("flywheel: %d %s: %s", e.Status, e.Code, e.Message)
}

// RankRequest asks a ranker to choose among actions.
type RankRequest struct {
	Model   string            `json:"model"`
	EventID string            `json:"event_id,omitempty"` // "": the client chooses one
	Context flywheel.Features `json:"context,omitempty"`
	Actions []flywheel.Action `json:"actions"`
	// ExcludedActions are never chosen (single slot).
	ExcludedActions []string `json:"excluded_actions,omitempty"`
	// Slots, when given, rank a page: each slot a distinct action.
	Slots []Slot `json:"slots,omitempty"`
	// DeferActivation logs the decision as not yet shown: it is trained on
	// and evaluated only once Activate says the product showed it.
	DeferActivation bool `json:"defer_activation,omitempty"`
}

// Slot is one slot of a page.
type Slot struct {
	ID              string         `json:"id"`
	Features        map[string]any `json:"features,omitempty"`
	ExcludedActions []string       `json:"excluded_actions,omitempty"`
	BaselineAction  string         `json:"baseline_action,omitempty"`
}

// RankResponse is a ranker's answer. A single-slot request fills Ranking
// and Chosen; a request with slots fills Slots.
type RankResponse struct {
	EventID      string            `json:"event_id"`
	Model        string            `json:"model"`
	ModelVersion int               `json:"model_version"`
	Variant      string            `json:"variant"`
	Ranking      []flywheel.Ranked `json:"ranking,omitempty"`
	Chosen       string            `json:"chosen,omitempty"`
	Explored     bool              `json:"explored"`
	Slots        []SlotChoice      `json:"slots,omitempty"`
}

// SlotChoice is one slot's answer.
type SlotChoice struct {
	ID          string  `json:"id"`
	EventID     string  `json:"event_id"`
	Chosen      string  `json:"chosen"`
	Probability float64 `json:"probability"`
	Explored    bool    `json:"explored"`
}

// Feedback is a user's reaction to a decision.
type Feedback struct {
	EventID    string  `json:"event_id"`
	FeedbackID string  `json:"feedback_id,omitempty"` // "": the client chooses one
	Reward     float64 `json:"reward"`
	Type       string  `json:"type,omitempty"`
	Slot       string  `json:"slot,omitempty"`  // the slot of a page the reward is for
	Model      string  `json:"model,omitempty"` // the model that decided
	// Time is when the user acted (zero: not sent; the server's receive
	// time counts).
	Time time.Time `json:"-"`
}

// FeedbackResponse is the answer to a feedback batch.
type FeedbackResponse struct {
	Accepted    int      `json:"accepted"`
	FeedbackIDs []string `json:"feedback_ids"`
}

// PredictRequest asks a classifier to score one item.
type PredictRequest struct {
	Model    string            `json:"model"`
	EventID  string            `json:"event_id,omitempty"`
	Features flywheel.Features `json:"features"`
}

// PredictResponse is a classifier's answer.
type PredictResponse struct {
	EventID      string  `json:"event_id"`
	Model        string  `json:"model"`
	ModelVersion int     `json:"model_version"`
	Variant      string  `json:"variant"`
	Score        float64 `json:"score"`
}

// Rank asks for a decision. A request without an event id is given one
// first, so that retries are answered with the same decision.
func (c *Client) Rank(ctx context.Context, req RankRequest) (*RankResponse, error) {
	if req.EventID == "" {
		req.EventID = NewID()
	}
	var out RankResponse
	return &out, c.do(ctx, http.MethodPost, "/v1/rank", req, &out)
}

// Activate tells the server that the product really showed the answer to
// a rank request made with DeferActivation (a page's event id activates
// all its slots). Activating twice counts once, so it is safe to retry.
func (c *Client) Activate(ctx context.Context, eventID string) error {
	if eventID == "" {
		return errors.New("flywheel: Activate needs the decision's event id")
	}
	return c.do(ctx, http.MethodPost, "/v1/events/"+url.PathEscape(eventID)+"/activate", struct{}{}, nil)
}

// Predict asks a classifier for a score; a request without an event id is
// given one first.
func (c *Client) Predict(ctx context.Context, req PredictRequest) (*PredictResponse, error) {
	if req.EventID == "" {
		req.EventID = NewID()
	}
	var out PredictResponse
	return &out, c.do(ctx, http.MethodPost, "/v1/predict", req, &out)
}

// SendFeedback sends a batch of feedback (at most the server's
// limits.max_feedback_per_batch, 1000 by default). Items without a
// feedback id are given one first, so that a retry counts once.
func (c *Client) SendFeedback(ctx context.Context, fs ...Feedback) (*FeedbackResponse, error) {
	if len(fs) == 0 {
		return nil, errors.New("flywheel: no feedback to send")
	}
	type wire struct {
		Feedback
		Time string `json:"time,omitempty"`
	}
	body := make([]wire, len(fs))
	for i, f := range fs {
		if f.FeedbackID == "" {
			f.FeedbackID = NewID()
		}
		body[i] = wire{Feedback: f}
		if !f.Time.IsZero() {
			body[i].Time = f.Time.UTC().Format(time.RFC3339Nano)
		}
	}
	var out FeedbackResponse
	return &out, c.do(ctx, http.MethodPost, "/v1/feedback", body, &out)
}

// Do sends body (JSON) to path with method and decodes a 2xx answer into
// out (if not nil), retrying as the client is configured. A non-2xx answer
// is an *Error.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	return c.do(ctx, method, path, body, out)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("flywheel: encode %s: %w", path, err)
	}
	retries := c.Retries
	switch {
	case retries == 0:
		retries = 3
	case retries < 0:
		retries = 0
	}
	wait := c.Backoff
	if wait <= 0 {
		wait = 50 * time.Millisecond
	}
	for attempt := 0; ; attempt++ {
		retryAfter, err := c.once(ctx, method, path, b, out)
		if err == nil || attempt >= retries || !retryable(err) || ctx.Err() != nil {
			return err
		}
		d := wait/2 + time.Duration(mrand.Int64N(int64(wait))) // jitter: [wait/2, 3·wait/2)
		if retryAfter > d {
			d = retryAfter
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(d):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// once makes one attempt; it returns the server's Retry-After, if any.
func (c *Client) once(ctx context.Context, method, path string, body []byte, out any) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.BaseURL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Key != "" {
		req.Header.Set("Authorization", "Bearer "+c.Key)
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Status: resp.StatusCode}
		var wrapped struct {
			Error *Error `json:"error"`
		}
		wrapped.Error = e
		if json.Unmarshal(data, &wrapped) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(data))
		}
		e.Status = resp.StatusCode
		var after time.Duration
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			after = min(time.Duration(s)*time.Second, 30*time.Second)
		}
		return after, e
	}
	if out != nil && len(bytes.TrimSpace(data)) > 0 { // an empty answer leaves out as it is
		if err := json.Unmarshal(data, out); err != nil {
			return 0, fmt.Errorf("flywheel: decode the answer to %s: %w", path, err)
		}
	}
	return 0, nil
}

var defaultHTTP = &http.Client{Timeout: 5 * time.Second, Transport: Transport(64)}

// Transport returns an HTTP transport that keeps up to conns idle
// connections per server. net/http's default keeps 2, so a client making
// more than 2 calls at once closes a connection after nearly every call and
// opens a new one: at a few thousand calls a second the closed ones, each
// held in TIME_WAIT for a minute, use up the machine's ephemeral ports and
// calls fail with "cannot assign requested address".
func Transport(conns int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = max(t.MaxIdleConns, conns)
	t.MaxIdleConnsPerHost = conns
	return t
}

// retryable says whether an attempt that failed with err may be repeated
// (while the caller's context lasts): a network error or an attempt's
// timeout, or an answer that says to come back (429, 502, 503, 504). Every
// request the client sends is safe to repeat.
func retryable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		switch e.Status {
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	return true
}

// NewID returns a random 128-bit id in hex, as the server makes them.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
