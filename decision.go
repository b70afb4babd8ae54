package flywheel

import (
	"encoding/json"
	"strings"
	"time"
)

// SchemaVersion is the value of the "schema" field of every record Flywheel
// writes to Kafka. Readers refuse records with a newer schema.
const SchemaVersion = 1

// Model kinds.
const (
	KindRanker     = "ranker"
	KindClassifier = "classifier"
)

// Variants a decision can be served by.
const (
	VariantChampion = "champion"
	VariantCanary   = "canary"
	// VariantImported marks a decision brought in by `flywheel import`:
	// made by a policy outside Flywheel, so its version is 0, which no
	// registered version is (evaluation then scores every version on it
	// rather than taking its logged probabilities for a version's policy).
	VariantImported = "imported"
)

// Action is one option a ranker chooses among.
type Action struct {
	ID       string   `json:"id"`
	Features Features `json:"features,omitempty"`
}

// Ranked is one entry of a ranking: the action and the exact probability
// that the policy, exploration included, shows it first.
type Ranked struct {
	ID          string  `json:"id"`
	Probability float64 `json:"probability"`
}

// RewardRule says how feedback becomes a reward: feedback within Window of
// the decision is aggregated (sum, first, last or max); a decision with none
// gets Default once the window has closed. Feedback after the window but
// within LateWindowSeconds more re-scores the decision's example from then
// on (reward.late_window; 0, the default, counts none).
type RewardRule struct {
	WindowSeconds     int64   `json:"window_s"`
	Default           float64 `json:"default"`
	Aggregate         string  `json:"aggregate"`
	LateWindowSeconds int64   `json:"late_window_s,omitempty"`
}

// Reward aggregations.
const (
	AggregateSum   = "sum"
	AggregateFirst = "first"
	AggregateLast  = "last"
	AggregateMax   = "max"
)

// Validate reports an EINVALID error naming the bad field.
func (r RewardRule) Validate(path string) error {
	if r.WindowSeconds <= 0 {
		return Errorf(EINVALID, "%s.window must be positive", path)
	}
	if r.LateWindowSeconds < 0 {
		return Errorf(EINVALID, "%s.late_window must not be negative", path)
	}
	switch r.Aggregate {
	case AggregateSum, AggregateFirst, AggregateLast, AggregateMax:
	default:
		return Errorf(EINVALID, "%s.aggregate must be one of sum, first, last, max; got %q", path, r.Aggregate)
	}
	return nil
}

// Decision is what serving answered, as logged to Kafka (flywheel.decisions)
// and kept in ClickHouse. For a ranker, Probabilities is parallel to Actions
// and ChosenIndex indexes both; for a classifier, Score is set and Actions is
// empty.
type Decision struct {
	Schema        int        `json:"schema"`
	EventID       string     `json:"event_id"`
	Time          time.Time  `json:"ts"`
	Model         string     `json:"model"`
	Kind          string     `json:"kind"`
	Version       int        `json:"model_version"`
	Variant       string     `json:"variant"`
	Context       Features   `json:"context"`
	Actions       []Action   `json:"actions,omitempty"`
	Probabilities []float64  `json:"probabilities,omitempty"`
	Ranking       []string   `json:"ranking,omitempty"`
	ChosenIndex   int        `json:"chosen_index"`
	Chosen        string     `json:"chosen,omitempty"`
	Explored      bool       `json:"explored"`
	Score         float64    `json:"score,omitempty"`
	Reward        RewardRule `json:"reward"`
	// Deferred marks a decision the product may not show: it counts for
	// training and evaluation only once activated (a feedback of type
	// FeedbackActivation for its event id, or its page's).
	Deferred bool `json:"deferred,omitempty"`
	// ServerID marks an event id serving drew (128 random bits) rather
	// than the client's: no other decision has it, so ingest does not look
	// for one that reused it.
	ServerID bool `json:"server_id,omitempty"`

	// RawContext and RawActions, when set, are Context and Actions as the
	// client sent them (already decoded and validated): the event logger
	// writes them as they are instead of encoding the maps again. Serving
	// reads most requests' features without building maps
	// (FeatureList): its decisions then have RawContext and RawActions and
	// neither Context nor the actions' Features. Record gives the logged
	// form either way.
	RawContext json.RawMessage `json:"-"`
	RawActions []RawAction     `json:"-"`
	// RawProbabilities, when set, is Probabilities' JSON array as
	// AppendJSONFloats writes it: serving formats the probabilities once,
	// for its answer and for the log.
	RawProbabilities []byte `json:"-"`
}

// Record returns d as its log record: RawContext and RawActions where set,
// else the context's and the actions' JSON.
func (d *Decision) Record() (*DecisionRecord, error) {
	ctx, acts := d.RawContext, d.RawActions
	if ctx == nil {
		b, err := json.Marshal(d.Context)
		if err != nil {
			return nil, err
		}
		ctx = b
	}
	if acts == nil && len(d.Actions) > 0 {
		acts = make([]RawAction, len(d.Actions))
		for i, a := range d.Actions {
			acts[i].ID = a.ID
			if a.Features != nil {
				b, err := json.Marshal(a.Features)
				if err != nil {
					return nil, err
				}
				acts[i].Features = b
			}
		}
	}
	return &DecisionRecord{Schema: d.Schema, EventID: d.EventID, Time: d.Time, Model: d.Model, Kind: d.Kind,
		Version: d.Version, Variant: d.Variant, Context: ctx, Actions: acts, Probabilities: d.Probabilities,
		Ranking: d.Ranking, ChosenIndex: d.ChosenIndex, Chosen: d.Chosen, Explored: d.Explored, Score: d.Score, Reward: d.Reward,
		Deferred: d.Deferred, ServerID: d.ServerID, RawProbabilities: d.RawProbabilities}, nil
}

// RawAction is an action whose features are still the JSON they came in.
type RawAction struct {
	ID       string          `json:"id"`
	Features json.RawMessage `json:"features,omitempty"`
}

// DecisionRecord is a Decision as logged to flywheel.decisions, with the
// context and every action's features kept as JSON: serving writes it
// without encoding the features again, ingest reads it without decoding
// what it stores as is. Its JSON is that of Decision.
type DecisionRecord struct {
	Schema        int             `json:"schema"`
	EventID       string          `json:"event_id"`
	Time          time.Time       `json:"ts"`
	Model         string          `json:"model"`
	Kind          string          `json:"kind"`
	Version       int             `json:"model_version"`
	Variant       string          `json:"variant"`
	Context       json.RawMessage `json:"context"`
	Actions       []RawAction     `json:"actions,omitempty"`
	Probabilities []float64       `json:"probabilities,omitempty"`
	Ranking       []string        `json:"ranking,omitempty"`
	ChosenIndex   int             `json:"chosen_index"`
	Chosen        string          `json:"chosen,omitempty"`
	Explored      bool            `json:"explored"`
	Score         float64         `json:"score,omitempty"`
	Reward        RewardRule      `json:"reward"`
	Deferred      bool            `json:"deferred,omitempty"`
	ServerID      bool            `json:"server_id,omitempty"`
	// RawProbabilities, when set, is Probabilities formatted
	// (AppendJSONFloats), which AppendJSON writes as it is.
	RawProbabilities []byte `json:"-"`
}

// FeedbackActivation is the feedback type of an activation: the product
// showed a decision made with defer_activation (POST
// /v1/events/{event_id}/activate). It carries no reward; the type is
// reserved.
const FeedbackActivation = "flywheel.activation"

// Validate checks a decision read back from the log: the fields ingest and
// training rely on must be present and consistent.
func (d *Decision) Validate() error {
	return validateDecision(d.Schema, d.EventID, d.Model, d.Kind, d.Variant, d.Time, d.Version, len(d.Actions), len(d.Probabilities), d.ChosenIndex, d.Reward)
}

// Validate checks a logged decision as Decision.Validate does.
func (r *DecisionRecord) Validate() error {
	return validateDecision(r.Schema, r.EventID, r.Model, r.Kind, r.Variant, r.Time, r.Version, len(r.Actions), len(r.Probabilities), r.ChosenIndex, r.Reward)
}

func validateDecision(schema int, eventID, model, kind, variant string, ts time.Time, version, actions, probabilities, chosen int, reward RewardRule) error {
	switch {
	case schema < 1 || schema > SchemaVersion:
		return Errorf(EINVALID, "schema %d is not supported (this build reads up to %d)", schema, SchemaVersion)
	case eventID == "":
		return Errorf(EINVALID, "event_id is empty")
	case model == "":
		return Errorf(EINVALID, "model is empty")
	case ts.IsZero():
		return Errorf(EINVALID, "ts is missing")
	case version < 0 || version == 0 && variant != VariantImported:
		return Errorf(EINVALID, "model_version must be at least 1 (0 only with variant %q)", VariantImported)
	}
	if kind == KindRanker {
		if actions == 0 {
			return Errorf(EINVALID, "actions is empty")
		}
		if probabilities != actions {
			return Errorf(EINVALID, "probabilities has %d entries for %d actions", probabilities, actions)
		}
		if chosen < 0 || chosen >= actions {
			return Errorf(EINVALID, "chosen_index %d is out of range", chosen)
		}
	}
	return reward.Validate("reward")
}

// Feedback is a user's reaction to a decision, as received by serving and
// logged to Kafka (flywheel.feedback) with the server's timestamp. FeedbackID
// is the client's when it gives one (a retry with the same id is the same
// feedback, counted once), else assigned by the server, so that a record
// delivered twice is recognised. ActedAt, when the client said when the user
// acted, is that time clamped to at most Time (and to at least the
// decision's time when serving knew it): the reward window is judged on it.
// Model is the model the client named, if any.
type Feedback struct {
	Schema     int        `json:"schema"`
	FeedbackID string     `json:"feedback_id"`
	EventID    string     `json:"event_id"`
	Time       time.Time  `json:"ts"`
	Reward     float64    `json:"reward"`
	Type       string     `json:"type,omitempty"`
	ActedAt    *time.Time `json:"time,omitempty"`
	Model      string     `json:"model,omitempty"`
}

// JudgedTime is the time the reward window is judged on: ActedAt when set
// and not after Time, else Time.
func (f *Feedback) JudgedTime() time.Time {
	if f.ActedAt != nil && !f.ActedAt.IsZero() && f.ActedAt.Before(f.Time) {
		return *f.ActedAt
	}
	return f.Time
}

// Validate checks a feedback record read back from the log.
func (f *Feedback) Validate() error {
	switch {
	case f.Schema < 1 || f.Schema > SchemaVersion:
		return Errorf(EINVALID, "schema %d is not supported (this build reads up to %d)", f.Schema, SchemaVersion)
	case f.EventID == "":
		return Errorf(EINVALID, "event_id is empty")
	case f.FeedbackID == "":
		return Errorf(EINVALID, "feedback_id is empty")
	case f.Time.IsZero():
		return Errorf(EINVALID, "ts is missing")
	}
	return nil
}

// Example is one logged ranker decision with its outcome: what training and
// off-policy evaluation read.
//
// The actions' features are either Actions or, read from the log without
// building maps, sets of a FeatureList: action i is ActionList's set
// ActionSets[i], and Actions is nil (the model learns and scores the same
// from either). NumActions and ActionFeatures read both.
type Example struct {
	EventID       string
	Time          time.Time
	Version       int
	Context       Features
	Actions       []Action
	ActionList    *FeatureList
	ActionSets    []int
	Probabilities []float64
	ChosenIndex   int
	Reward        float64
	HasFeedback   bool
}

// NumActions returns how many actions the example offered.
func (ex *Example) NumActions() int {
	if ex.ActionList != nil {
		return len(ex.ActionSets)
	}
	return len(ex.Actions)
}

// Listed reports whether the actions' features are sets of ActionList.
func (ex *Example) Listed() bool { return ex.ActionList != nil }

// ActionSet returns the features of action i of a listed example.
func (ex *Example) ActionSet(i int) []ListedFeature { return ex.ActionList.Set(ex.ActionSets[i]) }

// ModelRef names one version of one model.
type ModelRef struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
}

// Model event types, published on flywheel.model-events.
const (
	EventRegistered    = "registered"
	EventPromoted      = "promoted"
	EventRolledBack    = "rolled_back"
	EventCanaryStarted = "canary_started"
	EventCanaryEnded   = "canary_ended"

	// A manual retrain (the admin API of a serve process, `retrain --now`)
	// is requested of the elected retrain scheduler, which says it started
	// the run and, with the run's outcome, that it finished. Serving
	// replicas ignore them.
	EventRetrainRequested = "retrain_requested"
	EventRetrainStarted   = "retrain_started"
	EventRetrainFinished  = "retrain_finished"
)

// IsRetrainEvent says whether typ is one of a manual retrain's events,
// which move no alias.
func IsRetrainEvent(typ string) bool {
	return typ == EventRetrainRequested || typ == EventRetrainStarted || typ == EventRetrainFinished
}

// ModelEvent tells every serving replica that an alias moved, or, for the
// retrain events, carries a manual retrain's request and answers.
type ModelEvent struct {
	Schema          int       `json:"schema"`
	Type            string    `json:"type"`
	Model           string    `json:"model"`
	Alias           string    `json:"alias,omitempty"`
	Version         int       `json:"version"`
	PreviousVersion int       `json:"previous_version,omitempty"`
	Actor           string    `json:"actor,omitempty"`
	Reason          string    `json:"reason,omitempty"`
	Time            time.Time `json:"ts"`
	// Request is a retrain event's request id; Outcome the finished run's
	// outcome (Version its candidate, Reason its reason), and Result its
	// whole report, as `retrain --now --json` prints it.
	Request string          `json:"request,omitempty"`
	Outcome string          `json:"outcome,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
}

// ValidateName checks a model name: 1 to 64 characters of [a-z0-9_-].
func ValidateName(field, name string) error {
	if name == "" {
		return Errorf(EINVALID, "%s is empty", field)
	}
	if len(name) > 64 {
		return Errorf(EINVALID, "%s is longer than 64 characters", field)
	}
	if strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-')
	}) >= 0 {
		return Errorf(EINVALID, "%s %q may hold only a-z, 0-9, _ and -", field, name)
	}
	return nil
}

// TimeMs returns the example's time in Unix milliseconds.
func (e *Example) TimeMs() uint64 { return uint64(e.Time.UnixMilli()) }

// SlotNamespace is the context namespace that holds a slot's features in
// the decisions of a multi-slot rank request, its id as slot^id.
const SlotNamespace = "slot"

// Slot returns the page and the slot of one slot's decision of a
// multi-slot rank request: its event id is PAGE#SLOT and its context holds
// slot^id = SLOT. ok is false for any other decision (a single-slot one,
// or one imported with a slot^id but no page).
func (e *Example) Slot() (page, slot string, ok bool) {
	slot, _ = e.Context[SlotNamespace]["id"].(string)
	if slot == "" || len(e.EventID) <= len(slot)+1 || !strings.HasSuffix(e.EventID, slot) || e.EventID[len(e.EventID)-len(slot)-1] != '#' {
		return "", "", false
	}
	return e.EventID[:len(e.EventID)-len(slot)-1], slot, true
}
