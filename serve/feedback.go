package serve

import (
	"bytes"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/flywheel-dev/flywheel"
)

// feedbackRequest is one feedback item as a client sends it.
type feedbackRequest struct {
	EventID    string   `json:"event_id"`
	FeedbackID string   `json:"feedback_id,omitempty"`
	Reward     *float64 `json:"reward"`
	Type       string   `json:"type,omitempty"`
	// Time is when the user acted, RFC 3339 (Acted holds it parsed).
	Time string `json:"time,omitempty"`
	// Model names the model that made the decision.
	Model string `json:"model,omitempty"`
	// Slot names the slot of a multi-slot decision the reward is for: it is
	// credited to that slot's action (event id EVENT_ID#SLOT, slots.go).
	Slot string `json:"slot,omitempty"`

	Acted time.Time `json:"-"`
	page  string    // the event id as sent, when Slot made EventID the slot's
}

// decisionID is the event id this replica remembers the decision by: the
// page's for a slot's feedback.
func (it *feedbackRequest) decisionID() string {
	if it.page != "" {
		return it.page
	}
	return it.EventID
}

// maxIDBytes bounds event and feedback ids.
const maxIDBytes = 128

// parseFeedback decodes a feedback body: one object or an array of at most max
// objects. It returns an EINVALID error naming the bad field (for example
// "[3].reward is missing") and no items if any item is bad: a batch is taken
// whole or not at all.
func parseFeedback(body []byte, max int) ([]feedbackRequest, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, flywheel.Errorf(flywheel.EINVALID, "body is empty")
	}
	var items []feedbackRequest
	batch := body[0] == '['
	if batch {
		if err := decodeStrict(body, &items); err != nil {
			return nil, err
		}
		if len(items) == 0 {
			return nil, flywheel.Errorf(flywheel.EINVALID, "the feedback array is empty")
		}
		if len(items) > max {
			return nil, flywheel.Errorf(flywheel.EINVALID, "%d feedback items; the limit is %d", len(items), max)
		}
	} else {
		var one feedbackRequest
		if err := decodeStrict(body, &one); err != nil {
			return nil, err
		}
		items = []feedbackRequest{one}
	}
	for i, it := range items {
		p := "" // a single object's fields are named plainly, a batch's by index
		if batch {
			p = "[" + strconv.Itoa(i) + "]."
		}
		switch {
		case it.EventID == "":
			return nil, flywheel.Errorf(flywheel.EINVALID, "%sevent_id is empty", p)
		case len(it.EventID) > maxIDBytes:
			return nil, flywheel.Errorf(flywheel.EINVALID, "%sevent_id is longer than %d bytes", p, maxIDBytes)
		case len(it.FeedbackID) > maxIDBytes:
			return nil, flywheel.Errorf(flywheel.EINVALID, "%sfeedback_id is longer than %d bytes", p, maxIDBytes)
		case it.Reward == nil:
			return nil, flywheel.Errorf(flywheel.EINVALID, "%sreward is missing", p)
		case math.IsNaN(*it.Reward) || math.IsInf(*it.Reward, 0):
			return nil, flywheel.Errorf(flywheel.EINVALID, "%sreward is not a finite number", p)
		case len(it.Type) > 64:
			return nil, flywheel.Errorf(flywheel.EINVALID, "%stype is longer than 64 bytes", p)
		case strings.HasPrefix(it.Type, "flywheel."):
			return nil, flywheel.Errorf(flywheel.EINVALID, "%stype %q: types starting with \"flywheel.\" are reserved (activate a decision with POST /v1/events/{event_id}/activate)", p, it.Type)
		}
		if it.Model != "" {
			if err := flywheel.ValidateName(p+"model", it.Model); err != nil {
				return nil, err
			}
		}
		if it.Slot != "" {
			if err := flywheel.ValidateName(p+"slot", it.Slot); err != nil {
				return nil, err
			}
			if len(it.EventID)+1+len(it.Slot) > maxIDBytes {
				return nil, flywheel.Errorf(flywheel.EINVALID, "%sevent_id and slot make a slot event id longer than %d bytes", p, maxIDBytes)
			}
			items[i].page, items[i].EventID = it.EventID, slotEventID(it.EventID, it.Slot)
		}
		if it.Time != "" {
			t, err := time.Parse(time.RFC3339Nano, it.Time)
			if err != nil {
				return nil, flywheel.Errorf(flywheel.EINVALID, "%stime %q is not an RFC 3339 time (2006-01-02T15:04:05Z)", p, it.Time)
			}
			items[i].Acted = t.UTC()
		}
	}
	return items, nil
}
