package serve

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

type rankRequest struct {
	Model   string            `json:"model"`
	EventID string            `json:"event_id"`
	Context flywheel.Features `json:"context"`
	Actions []flywheel.Action `json:"actions"`
	// ExcludedActions are ids of actions never to choose (probability 0).
	ExcludedActions []string `json:"excluded_actions,omitempty"`
	// Slots, when given, make the request rank a page: each slot gets a
	// distinct action, drawn in slot order (slots.go).
	Slots []slotRequest `json:"slots,omitempty"`
	// DeferActivation logs the decision as one the product may not show:
	// it is trained on and evaluated only once POST
	// /v1/events/{event_id}/activate says it was shown.
	DeferActivation bool `json:"defer_activation,omitempty"`

	// the context and actions as sent, for the decision log
	rawContext []byte
	rawActions []flywheel.RawAction
	// excluded is parallel to Actions (nil: none excluded)
	excluded []bool
	// list, when set, holds the context's and the actions' features as read
	// from the body (set 0 the context, set 1+i action i), and Context and
	// the actions' Features are nil: the request is scored from the list,
	// no maps built (decodeRankListed).
	list   *flywheel.FeatureList
	ctxSet int   // the context's set in list
	sets   []int // each action's set in list
	// bufs, when set, is the pooled memory list, Actions, rawActions and
	// sets live in (scanRank), returned by release once answered.
	bufs *scanBufs
}

// release returns the request's pooled memory, if it has any: once its
// answer is written, as nothing keeps the request after.
func (r *rankRequest) release() { r.bufs.release() }

// context returns the request's context as Features, however it was decoded.
func (r *rankRequest) context() flywheel.Features {
	if r.list != nil {
		return r.list.Features(r.ctxSet)
	}
	return r.Context
}

// actions returns the request's actions with their Features, however it was
// decoded.
func (r *rankRequest) actions() []flywheel.Action {
	if r.list == nil {
		return r.Actions
	}
	out := make([]flywheel.Action, len(r.Actions))
	for i, a := range r.Actions {
		out[i] = flywheel.Action{ID: a.ID, Features: r.list.Features(r.sets[i])}
	}
	return out
}

// unit is the key a canary or control group splits the request's traffic
// by: the context's user.id when it has a string one.
func (r *rankRequest) unit() string {
	if r.list != nil {
		u, _ := r.list.Lookup(r.ctxSet, "user", "id")
		return u
	}
	u, _ := r.Context["user"]["id"].(string)
	return u
}

// rankWire is a rank request with the features still JSON: decoding the
// request this way keeps what the client sent, so that the decision log
// need not encode the features again.
type rankWire struct {
	Model   string               `json:"model"`
	EventID string               `json:"event_id"`
	Context json.RawMessage      `json:"context"`
	Actions []flywheel.RawAction `json:"actions"`

	ExcludedActions []string      `json:"excluded_actions,omitempty"`
	Slots           []slotRequest `json:"slots,omitempty"`
	DeferActivation bool          `json:"defer_activation,omitempty"`
}

type rankResponse struct {
	EventID      string            `json:"event_id"`
	Model        string            `json:"model"`
	ModelVersion int               `json:"model_version"`
	Variant      string            `json:"variant"`
	Ranking      []flywheel.Ranked `json:"ranking"`
	Chosen       string            `json:"chosen"`
	Explored     bool              `json:"explored"`

	// probs, when set, holds the probabilities as formatted for the log
	// (flywheel.AppendJSONFloats, action by action, ends their ends) and
	// order each ranked entry's action: the answer writes those bytes
	// instead of formatting the numbers again.
	probs []byte
	ends  []int
	order []int
}

type predictRequest struct {
	Model    string            `json:"model"`
	EventID  string            `json:"event_id"`
	Features flywheel.Features `json:"features"`
}

type predictResponse struct {
	EventID      string  `json:"event_id"`
	Model        string  `json:"model"`
	ModelVersion int     `json:"model_version"`
	Variant      string  `json:"variant"`
	Score        float64 `json:"score"`
}

// readBody reads the request body up to the configured limit.
func (s *Server) readBody(c *gin.Context) ([]byte, error) {
	body, err := readAll(http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.Limits.MaxBodyBytes), c.Request.ContentLength, s.cfg.Limits.MaxBodyBytes)
	if err != nil {
		var mbe *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &mbe):
			return nil, flywheel.Errorf(flywheel.ETOOLARGE, "the body is larger than %d bytes", s.cfg.Limits.MaxBodyBytes)
		case errors.As(err, &ne) && ne.Timeout():
			return nil, flywheel.Errorf(flywheel.EINVALID, "the body did not arrive within http.read_timeout (%v)", s.cfg.HTTP.ReadTimeout)
		}
		return nil, flywheel.Errorf(flywheel.EINVALID, "the body could not be read: the client sent less than it announced or closed the connection")
	}
	return body, nil
}

// readAll reads r to its end into one allocation of the announced length
// when there is one within limit (io.ReadAll grows its buffer from 512
// bytes, copying as it goes); a body longer than announced still reads
// whole, up to the reader's limit.
func readAll(r io.Reader, announced, limit int64) ([]byte, error) {
	if announced <= 0 || announced > limit {
		return io.ReadAll(r)
	}
	b := make([]byte, 0, announced+1) // +1: the end shows without growing
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // longer than announced: grow as io.ReadAll does
		}
	}
}

// decodeRank decodes and validates a rank request. It is what the fuzz test
// drives.
func decodeRank(body []byte, limits flywheel.Limits) (*rankRequest, error) {
	req, ok := scanRank(body, limits)
	if !ok {
		req, ok = decodeRankFast(body, limits)
	}
	if !ok {
		// decodeStrict names the bad field in its error
		req = &rankRequest{}
		if err := decodeStrict(body, req); err != nil {
			return nil, err
		}
	}
	if err := flywheel.ValidateName("model", req.Model); err != nil {
		return nil, err
	}
	if len(req.EventID) > maxIDBytes {
		return nil, flywheel.Errorf(flywheel.EINVALID, "event_id is longer than %d bytes", maxIDBytes)
	}
	if req.list == nil { // a list was validated as it was read
		if err := req.Context.Validate("context", limits); err != nil {
			return nil, err
		}
	}
	if len(req.Actions) == 0 {
		return nil, flywheel.Errorf(flywheel.EINVALID, "actions is empty")
	}
	if len(req.Actions) > limits.MaxActions {
		return nil, flywheel.Errorf(flywheel.EINVALID, "actions has %d entries; the limit is %d", len(req.Actions), limits.MaxActions)
	}
	// Ids are looked up by a map when excluded actions or slots name them,
	// or when there are many; a short list is searched (no allocation).
	var seen map[string]int
	if len(req.ExcludedActions) > 0 || req.Slots != nil || len(req.Actions) > 32 {
		seen = make(map[string]int, len(req.Actions))
	}
	path := func(i int) string { return "actions[" + strconv.Itoa(i) + "]" }
	for i, a := range req.Actions {
		if a.ID == "" {
			return nil, flywheel.Errorf(flywheel.EINVALID, "%s.id is empty", path(i))
		}
		if len(a.ID) > limits.MaxStringBytes {
			return nil, flywheel.Errorf(flywheel.EINVALID, "%s.id is longer than %d bytes", path(i), limits.MaxStringBytes)
		}
		j, dup := -1, false
		if seen != nil {
			j, dup = seen[a.ID]
			seen[a.ID] = i
		} else {
			for k := range i {
				if req.Actions[k].ID == a.ID {
					j, dup = k, true
					break
				}
			}
		}
		if dup {
			return nil, flywheel.Errorf(flywheel.EINVALID, "%s.id %q repeats actions[%d].id", path(i), a.ID, j)
		}
		if req.list != nil {
			continue
		}
		if err := a.Features.Validate(path(i)+".features", limits); err != nil {
			return nil, err
		}
	}
	if len(req.ExcludedActions) > 0 {
		req.excluded = make([]bool, len(req.Actions))
		left := len(req.Actions)
		for i, id := range req.ExcludedActions {
			j, ok := seen[id]
			if !ok {
				return nil, flywheel.Errorf(flywheel.EINVALID, "excluded_actions[%d] %q is not the id of an action", i, id)
			}
			if req.excluded[j] {
				return nil, flywheel.Errorf(flywheel.EINVALID, "excluded_actions[%d] %q is repeated", i, id)
			}
			req.excluded[j] = true
			left--
		}
		if left == 0 {
			return nil, flywheel.Errorf(flywheel.EINVALID, "excluded_actions excludes every action; at least one must be left to choose")
		}
	}
	if req.Slots != nil {
		if err := req.validateSlots(seen, limits); err != nil {
			return nil, err
		}
	}
	return req, nil
}

// Fields of a rank request, as bits of what scanRank has seen.
const (
	rankModel = 1 << iota
	rankEventID
	rankContext
	rankActions
	rankExcluded
	rankDefer
	rankSlots
)

// scanRank reads a rank request in one pass over body with no maps: the
// features into a FeatureList (validated as they are read), the context and
// each action's features kept as the spans of body they were sent as, for
// the decision log; a page's slots, small and few, are decoded by the
// general decoder from their span. It reports false for anything it does
// not take as it is — a key that is not a field's exact name, a field
// given twice, more actions than limits.max_actions, anything not valid —
// and the caller decodes the general way, which names what is wrong. The
// request's strings share body, which must not change; the model's name and
// the event id, which outlive the request (the recent decisions), are
// copies.
func scanRank(body []byte, limits flywheel.Limits) (*rankRequest, bool) {
	s := flywheel.NewScanner(body)
	b := bufPool.Get().(*scanBufs)
	l := &b.list
	req := &rankRequest{list: l, bufs: b}
	ok := false
	defer func() {
		if !ok {
			b.release()
		}
	}()
	ctxSet := -1
	var seen uint8
	field := func(bit uint8) bool {
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		return true
	}
	if !s.Open('{') {
		return nil, false
	}
	for first := true; s.More('}', &first); {
		key, ok := s.Key()
		if !ok {
			return nil, false
		}
		switch key {
		case "model", "event_id":
			bit, dst := uint8(rankModel), &req.Model
			if key == "event_id" {
				bit, dst = rankEventID, &req.EventID
			}
			v, ok := s.Str()
			if !field(bit) || !ok {
				return nil, false
			}
			*dst = strings.Clone(v)
		case "context":
			if !field(rankContext) {
				return nil, false
			}
			if s.Null() {
				continue
			}
			s.Peek() // past white space: the span starts at the object
			from := s.Pos()
			ctxSet = len(l.Sets)
			if !l.ScanFrom(&s, limits) {
				return nil, false
			}
			req.rawContext = body[from:s.Pos()]
		case "actions":
			if !field(rankActions) || !scanActions(&s, body, l, req, limits) {
				return nil, false
			}
		case "excluded_actions":
			if !field(rankExcluded) {
				return nil, false
			}
			if s.Null() {
				continue
			}
			if !s.Open('[') {
				return nil, false
			}
			req.ExcludedActions = []string{}
			for first := true; s.More(']', &first); {
				v, ok := s.Str()
				if !ok {
					return nil, false
				}
				req.ExcludedActions = append(req.ExcludedActions, v)
			}
		case "defer_activation":
			if !field(rankDefer) {
				return nil, false
			}
			v, ok := s.Bool()
			if !ok {
				return nil, false
			}
			req.DeferActivation = v
		case "slots":
			if !field(rankSlots) {
				return nil, false
			}
			if s.Null() {
				continue
			}
			s.Peek() // past white space: the span starts at the array
			from := s.Pos()
			if !s.Skip() || strictJSON.Unmarshal(body[from:s.Pos()], &req.Slots) != nil {
				return nil, false
			}
		default: // a key the general decoder matches without case, or unknown
			return nil, false
		}
		if s.Bad() {
			return nil, false
		}
	}
	if s.Bad() || !s.End() {
		return nil, false
	}
	if ctxSet < 0 {
		ctxSet = len(l.Sets)
		l.AddEmpty()
		req.rawContext = []byte("{}")
	}
	req.ctxSet = ctxSet
	ok = true
	return req, true
}

// scanBufs are what scanRank reads a request into: its FeatureList and its
// actions' slices, kept from one request to the next (bufPool) so that a
// request of as many actions as the last allocates none of them.
type scanBufs struct {
	list    flywheel.FeatureList
	actions []flywheel.Action
	raw     []flywheel.RawAction
	sets    []int
	answer  answerBufs
}

// answerBufs are what handleRank answers a request with: the ranking, the
// response's entries, the logged order and decision, and the response's
// bytes. A request read into scanBufs answers with theirs; nothing keeps
// them once the answer is written (LogDecision encodes the decision before
// it returns), except the response's bytes of a request with its own event
// id, which the recent answers keep (those are not pooled).
type answerBufs struct {
	rank     model.Ranking
	ranked   []flywheel.Ranked
	order    []string
	decision flywheel.Decision
	out      []byte
	probs    []byte
	ends     []int
}

// reset drops the answer's views of the request (ids, features) and keeps
// its slices' memory.
func (a *answerBufs) reset() {
	clear(a.ranked)
	clear(a.order)
	a.decision = flywheel.Decision{}
	a.ranked, a.order, a.out, a.probs, a.ends = a.ranked[:0], a.order[:0], a.out[:0], a.probs[:0], a.ends[:0]
}

// bufPool holds scanBufs for scanRank: a request's are returned once its
// answer is written (handleRank), as nothing keeps them after.
var bufPool = sync.Pool{New: func() any {
	return &scanBufs{list: flywheel.FeatureList{Feats: make([]flywheel.ListedFeature, 0, 256), Sets: make([]flywheel.FeatureSet, 0, 32)}}
}}

// release empties b (dropping its views of the request's bytes) and
// returns it to the pool; buffers grown past bounds are left to the
// collector so that one huge request does not pin its memory.
func (b *scanBufs) release() {
	if b == nil || cap(b.list.Feats) > 1<<14 || cap(b.actions) > 1<<12 || cap(b.answer.out) > 1<<18 {
		return
	}
	b.list.Reset()
	b.answer.reset()
	clear(b.actions[:cap(b.actions)])
	clear(b.raw[:cap(b.raw)])
	b.actions, b.raw, b.sets = b.actions[:0], b.raw[:0], b.sets[:0]
	bufPool.Put(b)
}

// scanActions reads the list of actions at s into req: their ids, their
// features into l, and the features' spans of body.
func scanActions(s *flywheel.Scanner, body []byte, l *flywheel.FeatureList, req *rankRequest, limits flywheel.Limits) bool {
	if s.Null() {
		return true
	}
	if !s.Open('[') {
		return false
	}
	// The pooled slices: as many actions as the last request they served
	// without growing.
	if b := req.bufs; b != nil {
		req.Actions, req.rawActions, req.sets = b.actions[:0], b.raw[:0], b.sets[:0]
		defer func() { b.actions, b.raw, b.sets = req.Actions[:0], req.rawActions[:0], req.sets[:0] }()
	}
	for first := true; s.More(']', &first); {
		if len(req.Actions) == limits.MaxActions {
			return false // the general decoder says how many is too many
		}
		var a flywheel.RawAction
		var seen uint8
		set := -1
		if !s.Open('{') {
			return false
		}
		for first := true; s.More('}', &first); {
			key, ok := s.Key()
			if !ok {
				return false
			}
			switch {
			case key == "id" && seen&1 == 0:
				seen |= 1
				if a.ID, ok = s.Str(); !ok {
					return false
				}
			case key == "features" && seen&2 == 0:
				seen |= 2
				if s.Null() {
					continue
				}
				s.Peek() // past white space
				from := s.Pos()
				set = len(l.Sets)
				if !l.ScanFrom(s, limits) {
					return false
				}
				a.Features = body[from:s.Pos()]
			default:
				return false
			}
		}
		if s.Bad() {
			return false
		}
		if set < 0 {
			set = len(l.Sets)
			l.AddEmpty()
		}
		req.Actions = append(req.Actions, flywheel.Action{ID: a.ID})
		req.rawActions = append(req.rawActions, a)
		req.sets = append(req.sets, set)
	}
	return !s.Bad()
}

// decodeRankFast decodes body keeping the context's and every action's
// features as sent, and reads them into a FeatureList (a page of slots:
// into Features); it reports false when any part does not decode or is
// not valid (the caller then decodes again, to name the field in the
// error).
func decodeRankFast(body []byte, limits flywheel.Limits) (*rankRequest, bool) {
	var w rankWire
	if strictJSON.Unmarshal(body, &w) != nil {
		return nil, false
	}
	req := &rankRequest{Model: w.Model, EventID: w.EventID, Actions: make([]flywheel.Action, len(w.Actions)), ExcludedActions: w.ExcludedActions, Slots: w.Slots, DeferActivation: w.DeferActivation}
	req.rawContext, req.rawActions = w.Context, w.Actions
	if isNull(w.Context) {
		req.rawContext = []byte("{}")
	}
	for i, a := range w.Actions {
		req.Actions[i].ID = a.ID
	}
	if len(w.Actions) <= limits.MaxActions {
		// Scored from the list; a page's slots add a set each (slots.go).
		l := &flywheel.FeatureList{Feats: make([]flywheel.ListedFeature, 0, len(body)/16+8), Sets: make([]flywheel.FeatureSet, 0, len(w.Actions)+1+len(w.Slots))}
		if !scanRaw(l, w.Context, limits) {
			return nil, false
		}
		req.list, req.sets = l, make([]int, len(w.Actions))
		for i, a := range w.Actions {
			if !scanRaw(l, a.Features, limits) {
				return nil, false
			}
			req.sets[i] = 1 + i
		}
		return req, true
	}
	if !isNull(w.Context) {
		if strictJSON.Unmarshal(w.Context, &req.Context) != nil {
			return nil, false
		}
	}
	for i, a := range w.Actions {
		if !isNull(a.Features) {
			if strictJSON.Unmarshal(a.Features, &req.Actions[i].Features) != nil {
				return nil, false
			}
		}
	}
	return req, true
}

// scanRaw appends raw (a features object, or null or nothing: no features)
// to l as its next set.
func scanRaw(l *flywheel.FeatureList, raw json.RawMessage, limits flywheel.Limits) bool {
	if isNull(raw) {
		l.AddEmpty()
		return true
	}
	return l.Scan(raw, limits)
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

func (s *Server) modelFor(c *gin.Context, name, kind string) (*holder, *live, error) {
	h, ok := s.models[name]
	if !ok {
		return nil, nil, flywheel.Errorf(flywheel.ENOTFOUND, "model %q is not configured", name)
	}
	c.Set("model", name)
	if h.cfg.Kind != kind {
		return nil, nil, flywheel.Errorf(flywheel.EINVALID, "model %q is a %s; use the %s route", name, h.cfg.Kind, routeFor(h.cfg.Kind))
	}
	l := h.ptr.Load()
	if l == nil {
		return nil, nil, flywheel.Errorf(flywheel.EUNAVAILABLE, "model %q is not loaded yet", name)
	}
	return h, l, nil
}

// pick chooses the version that answers a request — the champion, or the
// canary for its share of units — gives the request an event id if it has
// none, and records the version for the guardrails.
func (s *Server) pick(c *gin.Context, name, kind, unit string, eventID *string) (*holder, *live, string, error) {
	h, l, err := s.modelFor(c, name, kind)
	if err != nil {
		return nil, nil, "", err
	}
	if *eventID == "" {
		*eventID = newID()
	}
	l, variant := s.variantFor(h, l, unit, *eventID)
	c.Set("live", l)
	return h, l, variant, nil
}

func routeFor(kind string) string {
	if kind == flywheel.KindClassifier {
		return "/v1/predict"
	}
	return "/v1/rank"
}

func (s *Server) handleRank(c *gin.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	req, err := decodeRank(body, s.cfg.Limits)
	if err != nil {
		return err
	}
	defer req.release() // after the answer: nothing keeps the request
	if req.list != nil {
		if !s.checkCostListed(c, req.Model, req.list, req.ctxSet, req.sets) {
			return nil
		}
	} else if !s.checkCost(c, req.Model, req.Context, req.Actions) {
		return nil
	}
	clientID := req.EventID != ""
	h, l, variant, err := s.pick(c, req.Model, flywheel.KindRanker, req.unit(), &req.EventID)
	if err != nil {
		return err
	}
	now := s.now().UTC()
	if clientID {
		// Event ids are unique per model: the same request again gets the
		// same answer, another one a 409, and nothing is logged twice.
		out, prev, err := s.recent.claimWait(c.Request.Context(), req.Model, req.EventID, body, now)
		if err != nil {
			return flywheel.Errorf(flywheel.EUNAVAILABLE, "event_id %q: the same request is still being answered: %v", req.EventID, err)
		}
		switch out {
		case replay:
			c.Data(http.StatusOK, "application/json; charset=utf-8", prev)
			return nil
		case conflict:
			return flywheel.Errorf(flywheel.ECONFLICT, "event_id %q was already used by another decision of model %q", req.EventID, req.Model)
		case claimed:
			defer s.recent.release(req.Model, req.EventID) // a no-op once done
		}
	}
	// a replayed answer is not profiled again
	if req.list != nil {
		s.observeListed(h, req)
	} else {
		s.observeFeatures(h, req.Context, req.Actions)
	}
	if req.Slots != nil {
		return s.rankSlots(c, h, l, variant, req, body, clientID, now)
	}
	a := &answerBufs{}
	if req.bufs != nil {
		a = &req.bufs.answer
	}
	r := &a.rank
	if req.list != nil {
		err = l.model.RankListed(req.EventID, req.list, req.ctxSet, req.sets, req.excluded, r)
	} else {
		err = l.model.RankExcluding(req.EventID, req.Context, req.Actions, req.excluded, r)
	}
	if err != nil {
		return err
	}
	ranked, order := a.ranked[:0], a.order[:0]
	for _, idx := range r.Order {
		ranked = append(ranked, flywheel.Ranked{ID: req.Actions[idx].ID, Probability: r.Probabilities[idx]})
		order = append(order, req.Actions[idx].ID)
	}
	a.ranked, a.order = ranked, order
	a.probs, a.ends = flywheel.AppendJSONFloats(a.probs[:0], r.Probabilities, a.ends[:0])
	resp := rankResponse{EventID: req.EventID, Model: req.Model, ModelVersion: l.version, Variant: variant,
		Chosen: req.Actions[r.Chosen].ID, Explored: r.Explored, Ranking: ranked, probs: a.probs, ends: a.ends, order: r.Order}
	d := &a.decision
	*d = flywheel.Decision{
		Schema: flywheel.SchemaVersion, EventID: req.EventID, Time: now, Model: req.Model, Kind: flywheel.KindRanker,
		Version: l.version, Variant: resp.Variant, Context: req.Context, Actions: req.Actions, Probabilities: r.Probabilities,
		Ranking: order, ChosenIndex: r.Chosen, Chosen: resp.Chosen, Explored: r.Explored, Reward: h.cfg.RewardRule(),
		RawContext: req.rawContext, RawActions: req.rawActions, Deferred: req.DeferActivation, ServerID: !clientID,
		RawProbabilities: a.probs,
	}
	if err := s.events.LogDecision(c.Request.Context(), d); err != nil {
		return err
	}
	s.metrics.decisions.WithLabelValues(req.Model, strconv.FormatBool(r.Explored)).Inc()
	buf := a.out[:0]
	if clientID || cap(buf) == 0 { // the recent answers keep a client id's answer
		buf = make([]byte, 0, 128+48*len(resp.Ranking))
	}
	out, err := resp.appendJSON(buf)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	if !clientID {
		a.out = out
	}
	if clientID {
		s.recent.done(req.Model, req.EventID, out)
	} else {
		s.recent.remember(req.Model, req.EventID, now)
	}
	c.Data(http.StatusOK, "application/json; charset=utf-8", out)
	return nil
}

func (s *Server) handlePredict(c *gin.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	var req predictRequest
	if err := decodeStrict(body, &req); err != nil {
		return err
	}
	if err := flywheel.ValidateName("model", req.Model); err != nil {
		return err
	}
	if len(req.EventID) > maxIDBytes {
		return flywheel.Errorf(flywheel.EINVALID, "event_id is longer than %d bytes", maxIDBytes)
	}
	if err := req.Features.Validate("features", s.cfg.Limits); err != nil {
		return err
	}
	if !s.checkCost(c, req.Model, req.Features, nil) {
		return nil
	}
	clientID := req.EventID != ""
	unit, _ := req.Features["user"]["id"].(string)
	h, l, variant, err := s.pick(c, req.Model, flywheel.KindClassifier, unit, &req.EventID)
	if err != nil {
		return err
	}
	s.observeFeatures(h, req.Features, nil)
	score := l.model.Predict(req.Features)
	d := &flywheel.Decision{
		Schema: flywheel.SchemaVersion, EventID: req.EventID, Time: s.now().UTC(), Model: req.Model, Kind: flywheel.KindClassifier,
		Version: l.version, Variant: variant, Context: req.Features, Score: score, Reward: h.cfg.RewardRule(), ServerID: !clientID,
	}
	if err := s.events.LogDecision(c.Request.Context(), d); err != nil {
		return err
	}
	c.JSON(http.StatusOK, predictResponse{EventID: req.EventID, Model: req.Model, ModelVersion: l.version, Variant: d.Variant, Score: score})
	return nil
}

func (s *Server) handleFeedback(c *gin.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	items, err := parseFeedback(body, s.cfg.Limits.MaxFeedbackPerBatch)
	if err != nil {
		return err
	}
	now := s.now().UTC()
	fs := make([]flywheel.Feedback, len(items))
	checks := make([]checkedFeedback, len(items))
	for i, it := range items {
		p := "" // as parseFeedback names fields
		if len(items) > 1 || bytes.HasPrefix(bytes.TrimSpace(body), []byte("[")) {
			p = "[" + strconv.Itoa(i) + "]."
		}
		checks[i], err = s.checkFeedback(p, &it, now)
		if err != nil {
			return err
		}
		id := it.FeedbackID
		if id == "" {
			id = newID()
		}
		// A feedback names the model that decided when the client said or
		// this replica remembers one model's decision under the id: it then
		// counts for that model's decision alone (feedback.model).
		model := it.Model
		if model == "" && checks[i].sole {
			model = checks[i].model
		}
		fs[i] = flywheel.Feedback{Schema: flywheel.SchemaVersion, FeedbackID: id, EventID: it.EventID, Time: now, Reward: *it.Reward, Type: it.Type,
			ActedAt: checks[i].acted, Model: model}
	}
	if err := s.events.LogFeedback(c.Request.Context(), fs); err != nil {
		return err
	}
	s.countLate(fs, checks)
	ids := make([]string, len(fs))
	for i := range fs {
		ids[i] = fs[i].FeedbackID
	}
	c.JSON(http.StatusAccepted, FeedbackResponse{Accepted: len(fs), FeedbackIDs: ids})
	return nil
}

// checkedFeedback is what checkFeedback found of a feedback item.
type checkedFeedback struct {
	// acted is the time the user acted clamped to [decision time (when
	// this replica knows it), now], or nil when the item gave none.
	acted *time.Time
	// model and decided are the model and time of the decision, when this
	// replica remembers it ("" and zero otherwise); sole says it remembers
	// one model's decision under the id, so the feedback can name it.
	model   string
	decided time.Time
	sole    bool
}

// checkFeedback checks one feedback item against its model's reward range
// and feedback skew. The model is the one the item names; else the one this
// replica remembers serving the event; else, not knowing, the item must
// pass for at least one configured model. It returns an EINVALID error
// naming the field (p prefixes it).
func (s *Server) checkFeedback(p string, it *feedbackRequest, now time.Time) (checkedFeedback, error) {
	var names []string
	if it.Model != "" {
		if _, ok := s.models[it.Model]; !ok {
			return checkedFeedback{}, flywheel.Errorf(flywheel.EINVALID, "%smodel %q is not configured", p, it.Model)
		}
		names = []string{it.Model}
	} else {
		names = slices.Sorted(maps.Keys(s.models))
	}
	known, decided := s.recent.lookup(it.decisionID(), names)
	if len(known) > 0 {
		names = known
	}
	var first error
	for j, name := range names {
		rc := s.models[name].cfg.Reward
		err := rc.CheckReward(p+"reward", *it.Reward)
		if err == nil && !it.Acted.IsZero() {
			skew := it.Acted.Sub(now)
			if skew < -rc.MaxFeedbackSkew || skew > rc.MaxFeedbackSkew {
				err = flywheel.Errorf(flywheel.EINVALID, "%stime %s is %v from the server's clock; model %q's reward.max_feedback_skew is %v",
					p, it.Time, skew.Round(time.Millisecond), name, rc.MaxFeedbackSkew)
			}
		}
		if err == nil {
			var out checkedFeedback
			if len(known) > 0 {
				out.model, out.decided, out.sole = name, decided[j], len(known) == 1
			}
			if it.Acted.IsZero() {
				return out, nil
			}
			t := it.Acted
			if t.After(now) {
				t = now
			}
			if len(known) > 0 && t.Before(decided[j]) {
				t = decided[j]
			}
			out.acted = &t
			return out, nil
		}
		if first == nil {
			first = err
		}
	}
	return checkedFeedback{}, first
}

// countLate counts in flywheel_feedback_late_total the logged feedback fs
// (checked as checks say) that came after its decision's reward window, by
// the time it is judged on, among the decisions this replica remembers;
// rescored says whether it came within the late window, and so counts in
// the decision's reward. ClickHouse counts all of it (the dashboard's late
// feedback): serving counts only what it can without any I/O.
func (s *Server) countLate(fs []flywheel.Feedback, checks []checkedFeedback) {
	for i, c := range checks {
		if c.model == "" {
			continue
		}
		r := s.models[c.model].cfg.Reward
		if past := fs[i].JudgedTime().Sub(c.decided); past > r.Window {
			s.metrics.lateFeedback.WithLabelValues(c.model, strconv.FormatBool(past <= r.Window+r.LateWindow)).Inc()
		}
	}
}

// info returns what this replica serves of h.
func (s *Server) info(h *holder) ModelInfo {
	mi := ModelInfo{Name: h.name, Kind: h.cfg.Kind, Config: h.cfg}
	if l := h.ptr.Load(); l != nil {
		mi.Version, mi.Loaded = l.version, l.loadedAt.UTC().Format("2006-01-02T15:04:05Z")
	}
	mi.Canary = currentVersion(h.canary.Load())
	return mi
}

func (s *Server) handleModels(c *gin.Context) error {
	out := make([]ModelInfo, 0, len(s.models))
	for _, name := range slices.Sorted(maps.Keys(s.models)) {
		out = append(out, s.info(s.models[name]))
	}
	c.JSON(http.StatusOK, ModelsResponse{Models: out})
	return nil
}

func (s *Server) handleModel(c *gin.Context) error {
	h, ok := s.models[c.Param("name")]
	if !ok {
		return flywheel.Errorf(flywheel.ENOTFOUND, "model %q is not configured", c.Param("name"))
	}
	n, err := historyParam(c)
	if err != nil {
		return err
	}
	mi := s.info(h)
	if s.admin.Describe != nil {
		d, err := s.admin.Describe(c.Request.Context(), h.name, n)
		if err != nil {
			return err
		}
		mi.Details = d
	}
	c.JSON(http.StatusOK, mi)
	return nil
}

type promoteRequest struct {
	Version int    `json:"version"`
	Reason  string `json:"reason"`
}

// adminModel returns the configured model the route names, or an error.
func (s *Server) adminModel(c *gin.Context) (string, error) {
	name := c.Param("name")
	if _, ok := s.models[name]; !ok {
		return "", flywheel.Errorf(flywheel.ENOTFOUND, "model %q is not configured", name)
	}
	return name, nil
}

func actor(c *gin.Context) string {
	if a, ok := c.Get("actor"); ok {
		return a.(string)
	}
	return "api (open)"
}

func (s *Server) handlePromote(c *gin.Context) error {
	name, err := s.adminModel(c)
	if err != nil {
		return err
	}
	if s.admin.Promote == nil {
		return flywheel.Errorf(flywheel.ENOTIMPLEMENTED, "promotion is not available on this server")
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	var req promoteRequest
	if err := decodeStrict(body, &req); err != nil {
		return err
	}
	if req.Version < 1 {
		return flywheel.Errorf(flywheel.EINVALID, "version must be a positive integer")
	}
	reason := req.Reason
	if reason == "" {
		reason = "manual promotion through the API"
	}
	if err := s.admin.Promote(c.Request.Context(), name, req.Version, actor(c), reason); err != nil {
		return err
	}
	v, err := s.Swap(c.Request.Context(), name)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, ChampionResponse{Champion: req.Version, LiveVersion: v, Model: name})
	return nil
}

func (s *Server) handleRollback(c *gin.Context) error {
	name, err := s.adminModel(c)
	if err != nil {
		return err
	}
	if s.admin.Rollback == nil {
		return flywheel.Errorf(flywheel.ENOTIMPLEMENTED, "rollback is not available on this server")
	}
	v, err := s.admin.Rollback(c.Request.Context(), name, actor(c), "manual rollback through the API")
	if err != nil {
		return err
	}
	live, err := s.Swap(c.Request.Context(), name)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, ChampionResponse{Champion: v, LiveVersion: live, Model: name})
	return nil
}

// handleCanary starts (POST, with the version) or ends (DELETE) a canary.
func (s *Server) handleCanary(c *gin.Context) error {
	name, err := s.adminModel(c)
	if err != nil {
		return err
	}
	if s.admin.Canary == nil {
		return flywheel.Errorf(flywheel.ENOTIMPLEMENTED, "canaries are not available on this server")
	}
	req := promoteRequest{Reason: "canary ended through the API"}
	if c.Request.Method == http.MethodPost {
		body, err := s.readBody(c)
		if err != nil {
			return err
		}
		req.Reason = ""
		if err := decodeStrict(body, &req); err != nil {
			return err
		}
		if req.Version < 1 {
			return flywheel.Errorf(flywheel.EINVALID, "version must be a positive integer")
		}
		if req.Reason == "" {
			req.Reason = "canary started through the API"
		}
	}
	if err := s.admin.Canary(c.Request.Context(), name, req.Version, actor(c), req.Reason); err != nil {
		return err
	}
	if _, err := s.Swap(c.Request.Context(), name); err != nil {
		return err
	}
	c.JSON(http.StatusOK, CanaryResponse{Canary: currentVersion(s.models[name].canary.Load()), Model: name, Share: s.models[name].cfg.Promote.Canary.Share})
	return nil
}

func (s *Server) handleRetrain(c *gin.Context) error {
	name, err := s.adminModel(c)
	if err != nil {
		return err
	}
	if s.admin.Retrain == nil {
		return flywheel.Errorf(flywheel.ENOTIMPLEMENTED, "retraining is not available on this server; run `flywheel retrain --now --model %s`", name)
	}
	// Training runs while the client waits, longer than http.write_timeout
	// may allow; only admins reach this route.
	_ = http.NewResponseController(c.Writer).SetWriteDeadline(time.Time{})
	out, err := s.admin.Retrain(c.Request.Context(), name)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, out)
	return nil
}

// variantFor picks the live model for a request: the canary for a stable
// share of units — a user, by the context's user.id, or else the event — and
// the champion for the rest. One user always sees one variant.
func (s *Server) variantFor(h *holder, champ *live, unit, eventID string) (*live, string) {
	c := h.canary.Load()
	share, ctl := h.cfg.Promote.Canary.Share, h.cfg.Promote.Control.Share
	if (c == nil || share <= 0) && h.control == nil {
		return champ, flywheel.VariantChampion
	}
	key := eventID
	if unit != "" {
		key = unit
	}
	// Units below the control share are the control group's; the canary's
	// share follows it, so the two never overlap.
	u := unitHash(h.name, key)
	if h.control != nil && u < ctl {
		return h.control, flywheel.VariantControl
	}
	if c != nil && share > 0 && u-ctl < share && u >= ctl {
		return c, flywheel.VariantCanary
	}
	return champ, flywheel.VariantChampion
}

// unitHash maps a unit key to [0, 1), stably across processes and restarts.
func unitHash(model, key string) float64 {
	h := fnv.New64a()
	h.Write([]byte(model))
	h.Write([]byte{0})
	h.Write([]byte(key))
	// FNV's high bits barely move when only the last bytes differ (u1, u2,
	// ...): a splitmix64 finaliser spreads every input bit over the result.
	x := h.Sum64() + 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11) / (1 << 53)
}

// newID returns a random 128-bit id as 32 hex digits.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
