package ingest

import (
	"context"
	"fmt"
	"hash/maphash"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/flywheel-dev/flywheel/clickhouse"
)

// Event ids are unique per model. A serving process refuses (409) a
// client's event id that one of its recent decisions of the same model
// used, but two processes, or one that forgot, can each log a decision
// under one id. The decisions topic is keyed by event id, so both reach
// the same partition, in log order, and so the one ingest process reading
// it: here the first decision of a model and event id is kept, and a later
// one that is another decision (another time, version, variant or chosen
// action) goes to the dead-letter topic, named as such, instead of
// replacing the first (ReplacingMergeTree keeps the last row of a key). A
// second delivery of the same decision is no conflict: it is written again
// and stored once. Across a rebalance, a partition's new reader finds what
// the old one wrote in ClickHouse; only the batches it had not written yet
// can slip through.

// decisionKey identifies a stored decision beyond its model and event id.
type decisionKey = clickhouse.StoredDecision

func keyOf(r *row) decisionKey {
	return decisionKey{TsMs: uint64(r.d.Time.UnixMilli()), Version: uint32(r.d.Version), Variant: r.d.Variant, Chosen: r.d.Chosen}
}

// recentKeys remembers the decisions of the last recentKeysCap (model,
// event id) pairs this process batched, so that decisions of batches not
// yet written are seen; older ones are read from ClickHouse. It is used by
// the fetch stage alone.
type recentKeys struct {
	seed  maphash.Seed
	keys  map[uint64]decisionKey
	order []uint64 // ring, oldest at next
	next  int
}

const recentKeysCap = 1 << 17

func newRecentKeys() *recentKeys {
	return &recentKeys{seed: maphash.MakeSeed(), keys: make(map[uint64]decisionKey, recentKeysCap), order: make([]uint64, 0, recentKeysCap)}
}

func (k *recentKeys) hash(model, id string) uint64 {
	var h maphash.Hash
	h.SetSeed(k.seed)
	h.WriteString(model)
	h.WriteByte(0)
	h.WriteString(id)
	return h.Sum64()
}

func (k *recentKeys) get(h uint64) (decisionKey, bool) {
	d, ok := k.keys[h]
	return d, ok
}

func (k *recentKeys) put(h uint64, d decisionKey) {
	if _, ok := k.keys[h]; ok {
		return
	}
	if len(k.order) < recentKeysCap {
		k.order = append(k.order, h)
	} else {
		delete(k.keys, k.order[k.next])
		k.order[k.next] = h
		k.next = (k.next + 1) % recentKeysCap
	}
	k.keys[h] = d
}

// errReusedEventID is a decision whose model and event id name another.
type errReusedEventID struct {
	model, id string
	first     decisionKey
}

func (e errReusedEventID) Error() string {
	return fmt.Sprintf("event_id %q of model %q already names another decision (made at %s by version %d, %s, chosen %q): the first is kept",
		e.id, e.model, time.UnixMilli(int64(e.first.TsMs)).UTC().Format(time.RFC3339Nano), e.first.Version, e.first.Variant, e.first.Chosen)
}

// firstDecisions returns the decisions of a batch to write, in order, and
// dead-letters (into b) those whose model and event id name an earlier,
// other decision: in the batch, among the recent ones, or in ClickHouse.
// msgs[at[i]] is the record of decisions[i]. It fails only when ClickHouse
// cannot be read (ctx ended).
func (in *Ingester) firstDecisions(ctx context.Context, recent *recentKeys, msgs []kafkago.Message, decisions []*row, at []int, b *batch) ([]*row, error) {
	hashes := make([]uint64, len(decisions))
	unknown := map[string][]string{} // model → ids neither in the batch before nor recent
	inBatch := map[uint64]bool{}
	for i, r := range decisions {
		h := recent.hash(r.d.Model, r.d.EventID)
		hashes[i] = h
		// An id serving drew is no other decision's: it is remembered (a
		// client could still send it back as its own), not looked up.
		if _, ok := recent.get(h); !ok && !inBatch[h] && !r.d.ServerID {
			unknown[r.d.Model] = append(unknown[r.d.Model], r.d.EventID)
		}
		inBatch[h] = true
	}
	for model, ids := range unknown {
		var stored map[string]clickhouse.StoredDecision
		err := in.retry(ctx, "stored decisions", func() (err error) {
			stored, err = in.inserts.StoredDecisions(ctx, model, ids)
			return err
		})
		if err != nil {
			return nil, err
		}
		for id, d := range stored {
			recent.put(recent.hash(model, id), d)
		}
	}
	kept := decisions[:0:0]
	now := in.now()
	for i, r := range decisions {
		k := keyOf(r)
		if first, ok := recent.get(hashes[i]); ok && first != k {
			b.dead = append(b.dead, deadLetter(msgs[at[i]], errReusedEventID{model: r.d.Model, id: r.d.EventID, first: first}, now))
			in.reused.WithLabelValues(r.d.Model).Inc()
			continue
		}
		recent.put(hashes[i], k)
		kept = append(kept, r)
	}
	return kept, nil
}
