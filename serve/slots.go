package serve

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/bytedance/sonic"
	"github.com/gin-gonic/gin"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

// Multi-slot ranking: a request with "slots" ranks a page. Slot by slot, in
// the order given, the policy draws one action from those that earlier
// slots left and the slot does not exclude, with the slot's features added
// to the context under the namespace "slot" (its id as slot^id), so that
// the model can learn what suits each slot (an interaction such as
// [slot, item]). Each slot is logged as a decision of its own, event id
// EVENT_ID#SLOT_ID, over the actions it could choose from, with the exact
// probability of each given the earlier slots: training, the off-policy
// estimates and the gate treat every slot as an ordinary decision, and
// feedback naming the slot ("slot": "hero") is credited to that slot's
// action. The page's reward is the sum over its slots (docs/analytics.md).

// SlotNamespace is the context namespace that holds a slot's features.
const SlotNamespace = flywheel.SlotNamespace

// maxSlots bounds the slots of one request.
const maxSlots = 32

// slotRequest is one slot of a multi-slot rank request.
type slotRequest struct {
	ID              string         `json:"id"`
	Features        map[string]any `json:"features,omitempty"`
	ExcludedActions []string       `json:"excluded_actions,omitempty"`
	// BaselineAction is the action the product would show in this slot
	// without Flywheel; it is logged (slot^baseline) so that analysts can
	// compare with it, and it must be one of the actions.
	BaselineAction string `json:"baseline_action,omitempty"`

	excluded []int // indexes of ExcludedActions
}

// slotAnswer is one slot of a multi-slot rank response.
type slotAnswer struct {
	ID          string  `json:"id"`
	EventID     string  `json:"event_id"`
	Chosen      string  `json:"chosen"`
	Probability float64 `json:"probability"`
	Explored    bool    `json:"explored"`
}

// slotsResponse is the answer to a multi-slot rank request.
type slotsResponse struct {
	EventID      string       `json:"event_id"`
	Model        string       `json:"model"`
	ModelVersion int          `json:"model_version"`
	Variant      string       `json:"variant"`
	Slots        []slotAnswer `json:"slots"`
}

// slotEventID is the event id of a slot's decision.
func slotEventID(eventID, slot string) string { return eventID + "#" + slot }

// validateSlots checks the slots of a request whose actions (by id: seen)
// are valid: 1 to min(actions, 32) slots with distinct names for ids,
// features that are a valid namespace, exclusions and baselines naming
// actions, and every slot left an action to choose.
func (req *rankRequest) validateSlots(seen map[string]int, limits flywheel.Limits) error {
	n := len(req.Slots)
	switch {
	case n == 0:
		return flywheel.Errorf(flywheel.EINVALID, "slots is empty; leave it out to rank a single slot")
	case n > maxSlots:
		return flywheel.Errorf(flywheel.EINVALID, "slots has %d entries; the limit is %d", n, maxSlots)
	case n > len(req.Actions):
		return flywheel.Errorf(flywheel.EINVALID, "slots has %d entries but there are %d actions: every slot needs a distinct action", n, len(req.Actions))
	case len(req.ExcludedActions) > 0:
		return flywheel.Errorf(flywheel.EINVALID, "excluded_actions applies to a single slot; with slots, give each slot its excluded_actions")
	}
	reserved := false
	if req.list != nil {
		for _, f := range req.list.Set(req.ctxSet) {
			reserved = reserved || f.NS == SlotNamespace
		}
	} else {
		_, reserved = req.Context[SlotNamespace]
	}
	if reserved {
		return flywheel.Errorf(flywheel.EINVALID, "context.%s is reserved for each slot's features in a request with slots", SlotNamespace)
	}
	ids := make(map[string]int, n)
	for i := range req.Slots {
		sl := &req.Slots[i]
		p := "slots[" + strconv.Itoa(i) + "]"
		if err := flywheel.ValidateName(p+".id", sl.ID); err != nil {
			return err
		}
		if j, dup := ids[sl.ID]; dup {
			return flywheel.Errorf(flywheel.EINVALID, "%s.id %q repeats slots[%d].id", p, sl.ID, j)
		}
		ids[sl.ID] = i
		if len(req.EventID)+1+len(sl.ID) > maxIDBytes {
			return flywheel.Errorf(flywheel.EINVALID, "event_id and %s.id make a slot event id longer than %d bytes", p, maxIDBytes)
		}
		if _, ok := sl.Features["id"]; ok {
			return flywheel.Errorf(flywheel.EINVALID, "%s.features.id is reserved for the slot's id", p)
		}
		if _, ok := sl.Features["baseline"]; ok {
			return flywheel.Errorf(flywheel.EINVALID, "%s.features.baseline is reserved for the slot's baseline_action", p)
		}
		if sl.Features != nil {
			if err := (flywheel.Features{SlotNamespace: sl.Features}).Validate(p+".features", limits); err != nil {
				return err
			}
		}
		if sl.BaselineAction != "" {
			if _, ok := seen[sl.BaselineAction]; !ok {
				return flywheel.Errorf(flywheel.EINVALID, "%s.baseline_action %q is not the id of an action", p, sl.BaselineAction)
			}
		}
		excl := make(map[int]bool, len(sl.ExcludedActions))
		for k, id := range sl.ExcludedActions {
			j, ok := seen[id]
			if !ok {
				return flywheel.Errorf(flywheel.EINVALID, "%s.excluded_actions[%d] %q is not the id of an action", p, k, id)
			}
			if excl[j] {
				return flywheel.Errorf(flywheel.EINVALID, "%s.excluded_actions[%d] %q is repeated", p, k, id)
			}
			excl[j] = true
			sl.excluded = append(sl.excluded, j)
		}
		// Earlier slots take i actions; this one must have one left whatever they took.
		if len(req.Actions)-len(excl) <= i {
			return flywheel.Errorf(flywheel.EINVALID, "%s excludes %d of %d actions: after the %d slots before it, none may be left to choose", p, len(excl), len(req.Actions), i)
		}
	}
	return nil
}

// slotContext returns the context of slot sl: the request's, with the
// slot's features, id and baseline under SlotNamespace.
func slotContext(ctx flywheel.Features, sl *slotRequest) flywheel.Features {
	out := make(flywheel.Features, len(ctx)+1)
	for ns, f := range ctx {
		out[ns] = f
	}
	out[SlotNamespace] = slotFeatures(sl)
	return out
}

// slotFeatures returns the features of slot sl's namespace: its own, its
// id and its baseline.
func slotFeatures(sl *slotRequest) map[string]any {
	f := make(map[string]any, len(sl.Features)+2)
	for k, v := range sl.Features {
		f[k] = v
	}
	f["id"] = sl.ID
	if sl.BaselineAction != "" {
		f["baseline"] = sl.BaselineAction
	}
	return f
}

// addSlotSet appends to l a set for slot sl: the context's features (set
// ctx) and the slot's namespace, as slotContext makes them; it returns the
// set and the slot's context as JSON (the request's, with the slot's
// namespace in front), for the log.
func addSlotSet(l *flywheel.FeatureList, ctx int, rawContext []byte, sl *slotRequest) (int, []byte, error) {
	f := slotFeatures(sl)
	from := len(l.Feats)
	l.Feats = append(l.Feats, l.Set(ctx)...)
	names := make([]string, 0, len(f))
	for k := range f {
		names = append(names, k)
	}
	slices.Sort(names) // a stable order: the hashes are sorted anyway, the list need not be
	for _, k := range names {
		lf := flywheel.ListedFeature{NS: SlotNamespace, Name: k}
		switch v := f[k].(type) {
		case string:
			lf.Kind, lf.Str, lf.Num = flywheel.ListedString, v, 1
		case float64:
			lf.Kind, lf.Num = flywheel.ListedNumber, v
		case bool:
			lf.Kind = flywheel.ListedBool
			if v {
				lf.Num = 1
			}
		case []any:
			if len(v) == 0 {
				lf.Kind = flywheel.ListedEmptyBag
				l.Feats = append(l.Feats, lf)
				continue
			}
			for _, e := range v {
				s, _ := e.(string) // validated: a bag holds strings
				l.Feats = append(l.Feats, flywheel.ListedFeature{NS: SlotNamespace, Name: k, Str: s, Num: 1, Kind: flywheel.ListedMember})
			}
			continue
		}
		l.Feats = append(l.Feats, lf)
	}
	l.Sets = append(l.Sets, flywheel.FeatureSet{From: from, To: len(l.Feats)})
	ns, err := sonic.Marshal(f)
	if err != nil {
		return 0, nil, fmt.Errorf("encode slot %s: %w", sl.ID, err)
	}
	raw := make([]byte, 0, len(rawContext)+len(ns)+16)
	raw = append(raw, `{"`+SlotNamespace+`":`...)
	raw = append(raw, ns...)
	if rest := bytes.TrimSpace(bytes.TrimSpace(rawContext)[1:]); len(rest) > 0 && rest[0] != '}' {
		raw = append(raw, ',')
		raw = append(raw, rest...)
	} else {
		raw = append(raw, '}')
	}
	return len(l.Sets) - 1, raw, nil
}

// rankSlots answers a multi-slot rank request (its event id claimed, its
// variant picked): every slot of the page is drawn from the one version,
// and logged, before the answer is sent.
func (s *Server) rankSlots(c *gin.Context, h *holder, l *live, variant string, req *rankRequest, body []byte, clientID bool, now time.Time) error {
	resp := slotsResponse{EventID: req.EventID, Model: req.Model, ModelVersion: l.version, Variant: variant, Slots: make([]slotAnswer, len(req.Slots))}
	taken := make([]bool, len(req.Actions))
	var r model.Ranking
	decisions := make([]*flywheel.Decision, 0, len(req.Slots))
	for i := range req.Slots {
		sl := &req.Slots[i]
		// The actions this slot may choose from, in request order.
		skip := make([]bool, len(req.Actions))
		copy(skip, taken)
		for _, j := range sl.excluded {
			skip[j] = true
		}
		avail := make([]flywheel.Action, 0, len(req.Actions)-i)
		index := make([]int, 0, cap(avail))
		for j, a := range req.Actions {
			if !skip[j] {
				avail, index = append(avail, a), append(index, j)
			}
		}
		eventID := slotEventID(req.EventID, sl.ID)
		var ctx flywheel.Features
		var rawCtx []byte
		var rawActs []flywheel.RawAction
		if req.list != nil { // scored from the list, logged from the request's bytes
			set, raw, err := addSlotSet(req.list, req.ctxSet, req.rawContext, sl)
			if err != nil {
				return err
			}
			sets := make([]int, len(index))
			rawActs = make([]flywheel.RawAction, len(index))
			for k, j := range index {
				sets[k], rawActs[k] = req.sets[j], req.rawActions[j]
			}
			rawCtx = raw
			if err := l.model.RankListed(eventID, req.list, set, sets, nil, &r); err != nil {
				return err
			}
		} else {
			ctx = slotContext(req.Context, sl)
			if err := l.model.RankExcluding(eventID, ctx, avail, nil, &r); err != nil {
				return err
			}
		}
		taken[index[r.Chosen]] = true
		order := make([]string, len(r.Order))
		for k, idx := range r.Order {
			order[k] = avail[idx].ID
		}
		resp.Slots[i] = slotAnswer{ID: sl.ID, EventID: eventID, Chosen: avail[r.Chosen].ID, Probability: r.Probabilities[r.Chosen], Explored: r.Explored}
		decisions = append(decisions, &flywheel.Decision{
			Schema: flywheel.SchemaVersion, EventID: eventID, Time: now, Model: req.Model, Kind: flywheel.KindRanker,
			Version: l.version, Variant: variant, Context: ctx, Actions: avail, Probabilities: append([]float64(nil), r.Probabilities...),
			Ranking: order, ChosenIndex: r.Chosen, Chosen: avail[r.Chosen].ID, Explored: r.Explored, Reward: h.cfg.RewardRule(),
			Deferred: req.DeferActivation, ServerID: !clientID, RawContext: rawCtx, RawActions: rawActs,
		})
	}
	for _, d := range decisions {
		if err := s.events.LogDecision(c.Request.Context(), d); err != nil {
			return err
		}
		s.metrics.decisions.WithLabelValues(req.Model, strconv.FormatBool(d.Explored)).Inc()
	}
	out, err := sonic.Marshal(&resp)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	if clientID {
		s.recent.done(req.Model, req.EventID, out)
	} else {
		s.recent.remember(req.Model, req.EventID, now)
	}
	c.Data(http.StatusOK, "application/json; charset=utf-8", out)
	return nil
}
