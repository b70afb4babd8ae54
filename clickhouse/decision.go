package clickhouse

import (
	"context"
	"fmt"

	"github.com/flywheel-dev/flywheel"
)

// decisionByIDSQL reads one logged decision of a model by its event id, for
// `flywheel eval --explain`.
const decisionByIDSQL = `SELECT version, context_json, actions_json, action_keys, action_ids, probabilities, chosen_index
	FROM {db}.decisions FINAL WHERE model = ? AND event_id = ? LIMIT 1`

// LoggedDecision is one decision as it was logged: the version that made
// it, its context and actions as JSON (ActionsJSON empty when the actions
// are named by key alone, in the actions table: Training.Actions), the
// probabilities logged and the index of the action chosen.
type LoggedDecision struct {
	Version       int
	ContextJSON   string
	ActionsJSON   string
	ActionKeys    []string
	ActionIDs     []string
	Probabilities []float64
	ChosenIndex   int
}

// Decision returns the decision of model logged under eventID, or an
// ENOTFOUND error when there is none (not yet ingested, or another model's).
// It is safe for concurrent use.
func (t *Training) Decision(ctx context.Context, model, eventID string) (*LoggedDecision, error) {
	rows, err := t.conn.Query(ctx, expand(decisionByIDSQL, t.db), model, eventID)
	if err != nil {
		return nil, fmt.Errorf("query decision %s: %w", eventID, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read decision %s: %w", eventID, err)
		}
		return nil, flywheel.Errorf(flywheel.ENOTFOUND, "no decision of %s has event id %q (not ingested yet?)", model, eventID)
	}
	var d LoggedDecision
	var version uint32
	var chosen uint16
	if err := rows.Scan(&version, &d.ContextJSON, &d.ActionsJSON, &d.ActionKeys, &d.ActionIDs, &d.Probabilities, &chosen); err != nil {
		return nil, fmt.Errorf("read decision %s: %w", eventID, err)
	}
	d.Version, d.ChosenIndex = int(version), int(chosen)
	return &d, rows.Err()
}

func decisionStatements(db string) []Statement {
	return []Statement{
		{Name: "training.decision_by_id", SQL: expand(decisionByIDSQL, db), Args: []any{"homepage", "ev-1"}, Query: true},
	}
}
