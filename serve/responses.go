package serve

import (
	"fmt"
	"math"
	"strconv"

	"github.com/flywheel-dev/flywheel"
)

// The bodies of the API's answers, each described in openapi.json (the
// schema named in its comment). The rank, slots and predict answers are in
// handlers.go and slots.go, the features and explain answers in health.go
// and explain.go. Where a body used to be encoded from a map, its fields are
// declared in the order of their JSON names, the order the map was encoded
// in, so that the bytes sent are the same.

// StatusResponse is the answer of /healthz ("ok") and /readyz ("ready") (schema Status).
type StatusResponse struct {
	Status string `json:"status"` // "ok" or "ready"
}

// ErrorResponse is the body of every error answer (schema Error).
type ErrorResponse struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is an error's code (a flywheel.E* code, or method_not_allowed) and message.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// FeedbackResponse is the answer of POST /v1/feedback: how many items were logged and their ids, in order (schema FeedbackResponse).
type FeedbackResponse struct {
	Accepted    int      `json:"accepted"`
	FeedbackIDs []string `json:"feedback_ids"`
}

// ActivateResponse is the answer of POST /v1/events/{event_id}/activate: the event activated (schema ActivateResponse).
type ActivateResponse struct {
	Activated string `json:"activated"`
}

// ModelInfo is a served model as GET /v1/models lists it and GET /v1/models/{name} returns it (schema ModelInfo).
type ModelInfo struct {
	Name    string               `json:"name"`
	Kind    string               `json:"kind"`
	Version int                  `json:"live_version"`
	Loaded  string               `json:"loaded_at,omitempty"`
	Canary  int                  `json:"canary_version,omitempty"` // serving Promote.Canary.Share of users
	Config  flywheel.ModelConfig `json:"config"`
	Details any                  `json:"registry,omitempty"` // Admin.Describe's answer, on GET /v1/models/{name} only
}

// ModelsResponse is the answer of GET /v1/models: every served model, by name (schema ModelsResponse).
type ModelsResponse struct {
	Models []ModelInfo `json:"models"`
}

// ChampionResponse is the answer of a promotion or a rollback: the champion the registry names and the version this replica serves (schema ChampionResponse).
type ChampionResponse struct {
	Champion    int    `json:"champion"`
	LiveVersion int    `json:"live_version"`
	Model       string `json:"model"`
}

// CanaryResponse is the answer of POST and DELETE /v1/models/{name}/canary: the canary this replica serves (0: none) and its share (schema CanaryResponse).
type CanaryResponse struct {
	Canary int     `json:"canary"`
	Model  string  `json:"model"`
	Share  float64 `json:"share"`
}

// DashboardResponse is the answer of GET /v1/models/{name}/dashboard (schema DashboardResponse).
type DashboardResponse struct {
	Data    any          `json:"data"` // Insights.Dashboard's answer
	Model   ModelInfo    `json:"model"`
	Replica ReplicaStats `json:"replica"`
	Window  string       `json:"window"` // the window shown, snapped: 15m, 1h, 6h, 1d or 7d
}

// ReplicaStats are this replica's event-logging metrics, summed over their labels; one is absent when its metric is not registered (schema ReplicaStats).
type ReplicaStats struct {
	EventsRefused     *float64 `json:"events_refused,omitempty"`      // flywheel_events_refused_total
	EventsShipped     *float64 `json:"events_shipped,omitempty"`      // flywheel_events_shipped_total
	GuardrailBreaches *float64 `json:"guardrail_breaches,omitempty"`  // flywheel_guardrail_breaches_total
	KafkaWriteErrors  *float64 `json:"kafka_write_errors,omitempty"`  // flywheel_kafka_write_errors_total
	SpoolPendingBytes *float64 `json:"spool_pending_bytes,omitempty"` // flywheel_spool_pending_bytes
	SpoolReplayed     *float64 `json:"spool_replayed,omitempty"`      // flywheel_spool_replayed_total
}

// ReferencesResponse is the answer of PUT /v1/models/{name}/references: the reference reward rates stored (schema ReferencesResponse).
type ReferencesResponse struct {
	Model      string             `json:"model"`
	References map[string]float64 `json:"references"`
}

// appendJSON appends r's JSON, as json.Marshal writes it up to how strings
// are escaped, in one pass: the answer to every rank request.
func (r *rankResponse) appendJSON(b []byte) ([]byte, error) {
	for _, x := range r.Ranking {
		if math.IsNaN(x.Probability) || math.IsInf(x.Probability, 0) {
			return b, fmt.Errorf("probability of %s is %v", x.ID, x.Probability)
		}
	}
	b = append(b, `{"event_id":`...)
	b = flywheel.AppendJSONString(b, r.EventID)
	b = append(b, `,"model":`...)
	b = flywheel.AppendJSONString(b, r.Model)
	b = append(b, `,"model_version":`...)
	b = strconv.AppendInt(b, int64(r.ModelVersion), 10)
	b = append(b, `,"variant":`...)
	b = flywheel.AppendJSONString(b, r.Variant)
	b = append(b, `,"ranking":[`...)
	for i, x := range r.Ranking {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = flywheel.AppendJSONString(b, x.ID)
		b = append(b, `,"probability":`...)
		if r.probs != nil {
			idx := r.order[i]
			start := 1 // after the '['
			if idx > 0 {
				start = r.ends[idx-1] + 1 // after the ','
			}
			b = append(b, r.probs[start:r.ends[idx]]...)
		} else {
			b = flywheel.AppendJSONFloat(b, x.Probability)
		}
		b = append(b, '}')
	}
	b = append(b, `],"chosen":`...)
	b = flywheel.AppendJSONString(b, r.Chosen)
	b = append(b, `,"explored":`...)
	b = strconv.AppendBool(b, r.Explored)
	return append(b, '}'), nil
}
