package serve

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

// recentIDs remembers the last decisions this replica served, by model and
// event id, up to a bound (limits.recent_event_ids), the oldest forgotten
// first. It is what makes a client-chosen event id unique per model on one
// replica — the same request again gets the same answer back without a
// second decision being logged, another request with the same id a 409 —
// and what tells feedback without a "model" which model an event was, and
// when it was decided. It is safe for concurrent use.
//
// Across replicas, or past the bound, nothing is checked at serving time:
// ClickHouse keeps one decision per model and event id (the decisions
// table's key), so a reuse that no replica caught replaces the earlier
// decision there.
type recentIDs struct {
	seed maphash.Seed
	mu   sync.Mutex
	max  int
	m    map[recentKey]*recentEntry
	ring []recentKey // insertion order, for eviction
	next int
}

type recentKey struct{ model, eventID string }

type recentEntry struct {
	hash     uint64        // of the request's body
	decided  time.Time     // the decision's time
	response []byte        // the answer, once logged; nil while in flight
	settled  chan struct{} // closed when the claim is done or released; nil for remembered ids
}

func newRecentIDs(max int) *recentIDs {
	return &recentIDs{seed: maphash.MakeSeed(), max: max, m: make(map[recentKey]*recentEntry, min(max, 1<<16))}
}

// claimOutcome says what claim found.
type claimOutcome int

const (
	claimed   claimOutcome = iota // no decision had the id: the caller serves it and calls done or release
	replay                        // the same request was answered: the answer is returned
	conflict                      // another request used the id
	inflight                      // the same request is being answered: wait for it and claim again
	unchecked                     // remembering nothing (limits.recent_event_ids < 0)
)

// claim reserves (model, eventID) for a request whose body is body.
func (r *recentIDs) claim(model, eventID string, body []byte, now time.Time) (claimOutcome, []byte) {
	if r.max <= 0 {
		return unchecked, nil
	}
	h := maphash.Bytes(r.seed, body)
	k := recentKey{model, eventID}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.m[k]; ok {
		switch {
		case e.hash != h:
			return conflict, nil
		case e.response != nil:
			return replay, e.response
		}
		return inflight, nil
	}
	r.add(k, &recentEntry{hash: h, decided: now, settled: make(chan struct{})})
	return claimed, nil
}

// claimWait is claim for a request that may be a client's retry of one
// still being answered (its first attempt timed out on the client's side):
// it waits, as long as ctx lasts, for that attempt to settle, and then
// claims again, so that the retry gets the first attempt's answer, or
// serves the decision itself if the first attempt logged nothing.
func (r *recentIDs) claimWait(ctx context.Context, model, eventID string, body []byte, now time.Time) (claimOutcome, []byte, error) {
	for {
		out, prev := r.claim(model, eventID, body, now)
		if out != inflight {
			return out, prev, nil
		}
		r.mu.Lock()
		var settled chan struct{}
		if e, ok := r.m[recentKey{model, eventID}]; ok {
			settled = e.settled
		}
		r.mu.Unlock()
		if settled == nil {
			continue // settled, or evicted, since claim
		}
		select {
		case <-settled:
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		}
	}
}

// remember records a decision whose id the server chose (never reused):
// only for feedback's look-ups.
func (r *recentIDs) remember(model, eventID string, decided time.Time) {
	if r.max <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	k := recentKey{model, eventID}
	if _, ok := r.m[k]; !ok {
		r.add(k, &recentEntry{decided: decided, response: []byte{}})
	}
}

// add inserts under r.mu, evicting the oldest entry past the bound.
func (r *recentIDs) add(k recentKey, e *recentEntry) {
	if len(r.ring) < r.max {
		r.ring = append(r.ring, k)
	} else {
		if old, ok := r.m[r.ring[r.next]]; ok {
			old.settle() // a request waiting on it claims again
			delete(r.m, r.ring[r.next])
		}
		r.ring[r.next] = k
		r.next = (r.next + 1) % r.max
	}
	r.m[k] = e
}

// done stores the answer of a claimed id.
func (r *recentIDs) done(model, eventID string, response []byte) {
	if r.max <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.m[recentKey{model, eventID}]; ok && e.response == nil {
		e.response = response
		e.settle()
	}
}

// settle wakes the requests waiting for e's claim, under r.mu.
func (e *recentEntry) settle() {
	if e.settled != nil {
		close(e.settled)
		e.settled = nil
	}
}

// release forgets a claimed id whose decision was not logged.
func (r *recentIDs) release(model, eventID string) {
	if r.max <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	k := recentKey{model, eventID}
	if e, ok := r.m[k]; ok && e.response == nil {
		e.settle()
		delete(r.m, k) // its ring slot stays until evicted: deleting a missing key is harmless
	}
}

// lookup returns the models that decided eventID recently and when
// (several when different models used the same id).
func (r *recentIDs) lookup(eventID string, models []string) (found []string, decided []time.Time) {
	if r.max <= 0 {
		return nil, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range models {
		if e, ok := r.m[recentKey{m, eventID}]; ok {
			found, decided = append(found, m), append(decided, e.decided)
		}
	}
	return found, decided
}
