package retrain

import (
	"context"
	"encoding/json"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/deploy"
)

// answerTimeout bounds publishing one answer to a request.
const answerTimeout = 10 * time.Second

// AnswerWith makes the retrainer answer manual retrain requests
// (OnModelEvent) on events, the model-events topic. Call before Schedule.
func (r *Retrainer) AnswerWith(events deploy.Publisher) { r.events = events }

// OnModelEvent runs the retrain that a retrain_requested event asks for, if
// this process is the elected scheduler (or elects none) and answers
// requests (AnswerWith): it publishes retrain_started at once and
// retrain_finished, with the run's report, when the run ends. Other events,
// and requests while another process leads, are ignored. It returns at once;
// the run's context ends with ctx or when this process loses the
// leadership, and Schedule waits for it before returning. A run of the same
// model already in progress makes the request finish as skipped.
func (r *Retrainer) OnModelEvent(ctx context.Context, e flywheel.ModelEvent) {
	if e.Type != flywheel.EventRetrainRequested || r.events == nil || e.Request == "" {
		return
	}
	rctx, done := ctx, context.CancelFunc(func() {})
	if r.leader != nil {
		lctx, d, ok := r.leader.Lead(ctx)
		if !ok {
			d()
			return // the elected scheduler answers
		}
		rctx, done = lctx, d
	}
	r.answering.Add(1)
	go func() {
		defer r.answering.Done()
		defer done()
		r.answer(rctx, flywheel.ModelEvent{Type: flywheel.EventRetrainStarted, Model: e.Model, Request: e.Request})
		out := flywheel.ModelEvent{Type: flywheel.EventRetrainFinished, Model: e.Model, Request: e.Request, Actor: e.Actor}
		res, err := r.Run(rctx, e.Model, nil)
		switch {
		case res != nil:
			out.Outcome, out.Reason, out.Version = res.Outcome, res.Reason, res.Version
			out.Result, _ = json.Marshal(res)
		case flywheel.ErrorCode(err) == flywheel.ECONFLICT:
			out.Outcome, out.Reason = Skipped, flywheel.ErrorMessage(err)
		default: // a model this scheduler does not configure
			out.Outcome, out.Reason = Failed, flywheel.ErrorMessage(err)
		}
		r.answer(rctx, out)
	}()
}

// answer publishes one answer to a request, even after ctx ended (a run
// stopped by the loss of the leadership still says so).
func (r *Retrainer) answer(ctx context.Context, e flywheel.ModelEvent) {
	e.Schema, e.Time = flywheel.SchemaVersion, r.now().UTC()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), answerTimeout)
	defer cancel()
	if err := r.events.Publish(ctx, e); err != nil {
		r.log.Warn("answering a retrain request failed", "model", e.Model, "request", e.Request, "type", e.Type, "err", err)
	}
}
