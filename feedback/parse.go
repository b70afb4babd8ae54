package feedback

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/flywheel-dev/flywheel"
)

// Request is one feedback item as a client sends it.
type Request struct {
	EventID    string   `json:"event_id"`
	FeedbackID string   `json:"feedback_id,omitempty"`
	Reward     *float64 `json:"reward"`
	Type       string   `json:"type,omitempty"`
	// Time is when the user acted, RFC 3339 (Acted holds it parsed).
	Time string `json:"time,omitempty"`
	// Model names the model that made the decision.
	Model string `json:"model,omitempty"`

	Acted time.Time `json:"-"`
}

// MaxIDBytes bounds event and feedback ids.
const MaxIDBytes = 128

// Parse decodes a feedback body: one object or an array of at most max
// objects. It returns an EINVALID error naming the bad field (for example
// "[3].reward is missing") and no items if any item is bad: a batch is taken
// whole or not at all.
func Parse(body []byte, max int) ([]Request, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, flywheel.Errorf(flywheel.EINVALID, "body is empty")
	}
	var items []Request
	batch := body[0] == '['
	if batch {
		if err := strict(body, &items); err != nil {
			return nil, err
		}
		if len(items) == 0 {
			return nil, flywheel.Errorf(flywheel.EINVALID, "the feedback array is empty")
		}
		if len(items) > max {
			return nil, flywheel.Errorf(flywheel.EINVALID, "%d feedback items; the limit is %d", len(items), max)
		}
	} else {
		var one Request
		if err := strict(body, &one); err != nil {
			return nil, err
		}
		items = []Request{one}
	}
	for i, it := range items {
		p := "" // a single object's fields are named plainly, a batch's by index
		if batch {
			p = "[" + strconv.Itoa(i) + "]."
		}
		switch {
		case it.EventID == "":
			return nil, flywheel.Errorf(flywheel.EINVALID, "%sevent_id is empty", p)
		case len(it.EventID) > MaxIDBytes:
			return nil, flywheel.Errorf(flywheel.EINVALID, "%sevent_id is longer than %d bytes", p, MaxIDBytes)
		case len(it.FeedbackID) > MaxIDBytes:
			return nil, flywheel.Errorf(flywheel.EINVALID, "%sfeedback_id is longer than %d bytes", p, MaxIDBytes)
		case it.Reward == nil:
			return nil, flywheel.Errorf(flywheel.EINVALID, "%sreward is missing", p)
		case math.IsNaN(*it.Reward) || math.IsInf(*it.Reward, 0):
			return nil, flywheel.Errorf(flywheel.EINVALID, "%sreward is not a finite number", p)
		case len(it.Type) > 64:
			return nil, flywheel.Errorf(flywheel.EINVALID, "%stype is longer than 64 bytes", p)
		}
		if it.Model != "" {
			if err := flywheel.ValidateName(p+"model", it.Model); err != nil {
				return nil, err
			}
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

// strict decodes JSON refusing unknown fields and trailing data, and turns
// decoding errors into EINVALID errors a client can read.
func strict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return DecodeError(err)
	}
	if dec.More() {
		return flywheel.Errorf(flywheel.EINVALID, "body holds more than one JSON value")
	}
	return nil
}

// DecodeError turns an encoding/json error into an EINVALID error that
// names the field where it can.
func DecodeError(err error) error { return DecodeErrorAt(err, "") }

// DecodeErrorAt is DecodeError for JSON found at path prefix in the request.
func DecodeErrorAt(err error, prefix string) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		if prefix != "" {
			if te.Field == "" {
				te.Field = prefix
			} else {
				te.Field = prefix + "." + te.Field
			}
		}
		if strings.HasPrefix(te.Value, "number") && jsonKind(te.Type.Kind().String()) == "number" {
			return flywheel.Errorf(flywheel.EINVALID, "%s is out of range (%s)", te.Field, te.Value)
		}
		if te.Field != "" {
			return flywheel.Errorf(flywheel.EINVALID, "%s must be a %s, not a JSON %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
		}
		return flywheel.Errorf(flywheel.EINVALID, "body must be a JSON %s, not %s", jsonKind(te.Type.Kind().String()), te.Value)
	case errors.As(err, &se):
		return flywheel.Errorf(flywheel.EINVALID, "body is not valid JSON at byte %d: %v", se.Offset, se)
	case prefix != "":
		return flywheel.Errorf(flywheel.EINVALID, "%s: %v", prefix, err)
	}
	return flywheel.Errorf(flywheel.EINVALID, "body is not valid JSON: %v", err)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "float64", "float32", "int", "int64", "uint32":
		return "number"
	case "slice", "array":
		return "array"
	case "struct", "map":
		return "object"
	case "bool":
		return "bool"
	case "ptr":
		return "value of the right type"
	}
	return goKind
}
