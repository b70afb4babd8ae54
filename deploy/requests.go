package deploy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"

	"github.com/flywheel-dev/flywheel"
)

// RetrainRequests asks the elected retrain scheduler (`flywheel retrain`)
// for manual runs, over the model-events topic: a process without a
// retrainer of its own (`flywheel serve`, `retrain --now`) publishes a
// retrain_requested event, and the scheduler that leads answers with
// retrain_started and, when the run ends, retrain_finished. So a manual run
// never overlaps a scheduled one, or one that another replica asked for,
// and it stops if its scheduler loses the leadership. OnModelEvent must be
// given the events read from the topic. It is safe for concurrent use.
type RetrainRequests struct {
	events Publisher
	ack    time.Duration
	now    func() time.Time

	mu      sync.Mutex
	waiting map[string]chan flywheel.ModelEvent // by request id
}

// NewRetrainRequests returns requests published on events whose scheduler
// must say it started within ack (default 5 s).
func NewRetrainRequests(events Publisher, ack time.Duration, now func() time.Time) *RetrainRequests {
	if ack <= 0 {
		ack = 5 * time.Second
	}
	if now == nil {
		now = time.Now
	}
	return &RetrainRequests{events: events, ack: ack, now: now, waiting: map[string]chan flywheel.ModelEvent{}}
}

// Request asks for a run of model on behalf of actor and waits for it: it
// returns the retrain_finished event, whose Result is the run's report. If
// no scheduler says it started within the ack time, it returns an
// EUNAVAILABLE error; if ctx ends first, ctx's error (the run goes on).
func (q *RetrainRequests) Request(ctx context.Context, model, actor string) (flywheel.ModelEvent, error) {
	id := requestID()
	answers := make(chan flywheel.ModelEvent, 2)
	q.mu.Lock()
	q.waiting[id] = answers
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		delete(q.waiting, id)
		q.mu.Unlock()
	}()
	req := flywheel.ModelEvent{Schema: flywheel.SchemaVersion, Type: flywheel.EventRetrainRequested, Model: model,
		Actor: actor, Request: id, Time: q.now().UTC()}
	if err := q.events.Publish(ctx, req); err != nil {
		return flywheel.ModelEvent{}, flywheel.Errorf(flywheel.EUNAVAILABLE, "request a retrain of %s: %v", model, err)
	}
	ack := time.NewTimer(q.ack)
	defer ack.Stop()
	for {
		select {
		case e := <-answers:
			if e.Type == flywheel.EventRetrainFinished {
				return e, nil
			}
			ack.Stop() // started: wait for the end as long as ctx lasts
		case <-ack.C:
			return flywheel.ModelEvent{}, flywheel.Errorf(flywheel.EUNAVAILABLE,
				"no retrain scheduler answered the request to retrain %s within %v: is `flywheel retrain` running?", model, q.ack)
		case <-ctx.Done():
			return flywheel.ModelEvent{}, ctx.Err()
		}
	}
}

// OnModelEvent takes an event read from the model-events topic: the
// answers to this process's requests reach their Request.
func (q *RetrainRequests) OnModelEvent(e flywheel.ModelEvent) {
	if e.Type != flywheel.EventRetrainStarted && e.Type != flywheel.EventRetrainFinished {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if ch, ok := q.waiting[e.Request]; ok {
		select {
		case ch <- e:
		default: // a duplicate answer (at-least-once delivery): the first ones count
		}
	}
}

// requestID returns a random 128-bit id in hex.
func requestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
