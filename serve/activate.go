package serve

import (
	"bytes"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/flywheel-dev/flywheel"
)

// Deferred activation. A rank request with "defer_activation": true is
// answered and logged as usual, marked deferred: the product may not show
// the answer (a page rendered below the fold, a prefetch). When it does,
// POST /v1/events/{event_id}/activate logs an activation, a feedback of the
// reserved type flywheel.activation that carries no reward; the examples
// view then counts the decision (for a page, each of its slots' decisions)
// like any other. Decisions never activated stay in the decisions table,
// for analysts, and are neither trained on nor evaluated.

// activateRequest is the optional body of an activation.
type activateRequest struct {
	// Model names the model that decided, checked against the
	// configuration (optional, as in feedback).
	Model string `json:"model,omitempty"`
}

// handleActivate logs the activation of event_id (a page's id activates its
// slots). Activating twice counts once: the activation has a fixed
// feedback id.
func (s *Server) handleActivate(c *gin.Context) error {
	eventID := c.Param("event_id")
	switch {
	case eventID == "":
		return flywheel.Errorf(flywheel.EINVALID, "event_id is empty")
	case len(eventID) > maxIDBytes:
		return flywheel.Errorf(flywheel.EINVALID, "event_id is longer than %d bytes", maxIDBytes)
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	var req activateRequest
	if len(bytes.TrimSpace(body)) > 0 {
		if err := decodeStrict(body, &req); err != nil {
			return err
		}
	}
	if req.Model != "" {
		if err := flywheel.ValidateName("model", req.Model); err != nil {
			return err
		}
		if _, ok := s.models[req.Model]; !ok {
			return flywheel.Errorf(flywheel.EINVALID, "model %q is not configured", req.Model)
		}
	}
	f := flywheel.Feedback{Schema: flywheel.SchemaVersion, FeedbackID: flywheel.FeedbackActivation, EventID: eventID, Time: s.now().UTC(),
		Type: flywheel.FeedbackActivation, Model: req.Model}
	if err := s.events.LogFeedback(c.Request.Context(), []flywheel.Feedback{f}); err != nil {
		return err
	}
	c.JSON(http.StatusAccepted, ActivateResponse{Activated: eventID})
	return nil
}
