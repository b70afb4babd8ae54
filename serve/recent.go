package serve

import (
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
	hash     uint64    // of the request's body
	decided  time.Time // the decision's time
	response []byte    // the answer, once logged; nil while in flight
}

func newRecentIDs(max int) *recentIDs {
	return &recentIDs{seed: maphash.MakeSeed(), max: max, m: make(map[recentKey]*recentEntry, min(max, 1<<16))}
}

// claimOutcome says what claim found.
type claimOutcome int

const (
	claimed   claimOutcome = iota // no decision had the id: the caller serves it and calls done or release
	replay                        // the same request was answered: the answer is returned
	conflict                      // another request used the id, or the same one is still in flight
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
		if e.hash == h && e.response != nil {
			return replay, e.response
		}
		return conflict, nil
	}
	r.add(k, &recentEntry{hash: h, decided: now})
	return claimed, nil
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
		delete(r.m, r.ring[r.next])
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
	if e, ok := r.m[recentKey{model, eventID}]; ok {
		e.response = response
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
