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
	// ids holds every decision remembered, by the hash of its model and
	// event id (key): when it was decided, in Unix nanoseconds. Neither
	// keys nor values hold pointers, so the garbage collector never scans
	// it. A map of strings to entries, as this was, made 100,000 recent
	// ids (the default bound) most of what every collection marked: a few
	// milliseconds in which a server on one core answered nothing.
	ids map[uint64]int64
	// claims holds the ids clients chose (a small share, usually none),
	// with their model and id, checked on every use, so that two keys of
	// one hash are never taken for each other's.
	claims map[uint64]*recentEntry
	ring   []uint64 // insertion order, for eviction
	next   int
}

type recentEntry struct {
	model, eventID string
	hash           uint64        // of the request's body
	response       []byte        // the answer, once logged; nil while in flight
	settled        chan struct{} // closed when the claim is done or released
}

func newRecentIDs(max int) *recentIDs {
	return &recentIDs{seed: maphash.MakeSeed(), max: max, ids: make(map[uint64]int64, min(max, 1<<16)), claims: map[uint64]*recentEntry{}}
}

// key hashes a model and an event id.
func (r *recentIDs) key(model, eventID string) uint64 {
	var h maphash.Hash
	h.SetSeed(r.seed)
	h.WriteString(model)
	h.WriteByte(0)
	h.WriteString(eventID)
	return h.Sum64()
}

// claimOf returns the claim of (model, eventID), under r.mu; nil if none.
func (r *recentIDs) claimOf(k uint64, model, eventID string) *recentEntry {
	if e := r.claims[k]; e != nil && e.model == model && e.eventID == eventID {
		return e
	}
	return nil
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
	k := r.key(model, eventID)
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.claimOf(k, model, eventID); e != nil {
		switch {
		case e.hash != h:
			return conflict, nil
		case e.response != nil:
			return replay, e.response
		}
		return inflight, nil
	}
	if _, ok := r.ids[k]; ok && r.claims[k] == nil {
		return conflict, nil // an id the server chose for a decision
	}
	r.add(k, now, &recentEntry{model: model, eventID: eventID, hash: h, settled: make(chan struct{})})
	return claimed, nil
}

// claimWait is claim for a request that may be a client's retry of one
// still being answered (its first attempt timed out on the client's side):
// it waits, as long as ctx lasts, for that attempt to settle, and then
// claims again, so that the retry gets the first attempt's answer, or
// serves the decision itself if the first attempt logged nothing.
func (r *recentIDs) claimWait(ctx context.Context, model, eventID string, body []byte, now time.Time) (claimOutcome, []byte, error) {
	k := r.key(model, eventID)
	for {
		out, prev := r.claim(model, eventID, body, now)
		if out != inflight {
			return out, prev, nil
		}
		r.mu.Lock()
		var settled chan struct{}
		if e := r.claimOf(k, model, eventID); e != nil {
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
	k := r.key(model, eventID)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.ids[k]; !ok {
		r.add(k, decided, nil)
	}
}

// add inserts under r.mu, evicting the oldest entry past the bound; e is
// the claim of a client's id, nil for an id the server chose.
func (r *recentIDs) add(k uint64, decided time.Time, e *recentEntry) {
	if len(r.ring) < r.max {
		r.ring = append(r.ring, k)
	} else {
		old := r.ring[r.next]
		delete(r.ids, old)
		if c := r.claims[old]; c != nil {
			c.settle() // a request waiting on it claims again
			delete(r.claims, old)
		}
		r.ring[r.next] = k
		r.next = (r.next + 1) % r.max
	}
	r.ids[k] = decided.UnixNano()
	if e != nil {
		if c := r.claims[k]; c != nil { // another key of the same hash: forgotten, as if evicted
			c.settle()
		}
		r.claims[k] = e
	}
}

// done stores the answer of a claimed id.
func (r *recentIDs) done(model, eventID string, response []byte) {
	if r.max <= 0 {
		return
	}
	k := r.key(model, eventID)
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.claimOf(k, model, eventID); e != nil && e.response == nil {
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
	k := r.key(model, eventID)
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.claimOf(k, model, eventID); e != nil && e.response == nil {
		e.settle()
		delete(r.claims, k) // its ring slot stays until evicted: deleting a missing key is harmless
		delete(r.ids, k)
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
		if ns, ok := r.ids[r.key(m, eventID)]; ok {
			found, decided = append(found, m), append(decided, time.Unix(0, ns).UTC())
		}
	}
	return found, decided
}
