package ingest

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-dev/flywheel"

	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/kafka"
)

// The feedback watermark is the time through which every feedback record
// appended to Kafka is in ClickHouse, and the decisions watermark the same
// for decisions. A decision is closed (trained on, evaluated, in the
// examples view) only once its reward window ends by both, so that feedback
// still in Kafka is never taken for the default reward, and a decision never
// turns up already closed (a closed example is final: it never changes, and
// none is added behind a retrain's cutoff).
//
// It rests on the consumer group's committed offsets, not on this process's
// batches: ingest commits a partition's offset only after the batch that
// holds its records is inserted, so when, at time T, a partition's log ends
// at offset E (every record appended before T is below E), and later the
// group's committed offset reaches E, every record appended before T is
// ingested, whichever ingest process read it. Each check notes every
// partition's end with the time it asked, and claims for the partition the
// newest noted time whose end the committed offset has reached (the time of
// the check itself when the partition is caught up, which an idle partition
// always is); the topic's claim is the oldest of its partitions'. Claims are
// true on their own, so every ingest process writes its own and the largest
// counts. Record timestamps are not used: several serving processes write
// to a partition, and a spool ships late, so they are not in order.

// maxSnapshots bounds the ends noted per partition while ingest is behind:
// past it the oldest is dropped (its claim is superseded by a newer one).
const maxSnapshots = 256

// snapshot is a partition's log end offset and when it was asked for.
type snapshot struct {
	end int64
	at  time.Time
}

// watermark tracks the watermark of one topic (the feedback's or the
// decisions'). It is used by one goroutine.
type watermark struct {
	topic, stream string
	offsets       func(ctx context.Context) (map[int]kafka.PartitionOffsets, error)
	write         func(ctx context.Context, w clickhouse.Watermark) error
	now           func() time.Time

	noted   map[int][]snapshot // ends not yet reached by the committed offset, oldest first
	through map[int]time.Time  // per partition: everything appended before it is in
	written time.Time          // the last claim written
}

func newWatermark(topic, stream string, offsets func(ctx context.Context) (map[int]kafka.PartitionOffsets, error),
	write func(ctx context.Context, w clickhouse.Watermark) error, now func() time.Time) *watermark {
	return &watermark{topic: topic, stream: stream, offsets: offsets, write: write, now: now,
		noted: map[int][]snapshot{}, through: map[int]time.Time{}}
}

// check asks Kafka where the group is and writes the topic's watermark when
// it moved. It returns the watermark (zero while a partition has none yet)
// and the error of asking Kafka or of writing to ClickHouse.
func (w *watermark) check(ctx context.Context) (time.Time, error) {
	at := w.now() // before asking: every record appended before at is below the end Kafka reports
	offs, err := w.offsets(ctx)
	if err != nil {
		return time.Time{}, err
	}
	return w.update(ctx, at, offs)
}

// update notes offs, the topic's offsets asked for at at, and writes the
// watermark when it moved; it returns it as check does.
func (w *watermark) update(ctx context.Context, at time.Time, offs map[int]kafka.PartitionOffsets) (time.Time, error) {
	var through time.Time
	first := true
	for p, o := range offs {
		s := append(w.noted[p], snapshot{end: o.End, at: at})
		i := 0
		for i < len(s) && o.Committed >= s[i].end {
			w.through[p] = s[i].at
			i++
		}
		s = s[i:]
		if len(s) > maxSnapshots {
			s = s[len(s)-maxSnapshots:]
		}
		w.noted[p] = s
		if t := w.through[p]; first || t.Before(through) {
			through, first = t, false
		}
	}
	for p := range w.noted { // a partition that is gone
		if _, ok := offs[p]; !ok {
			delete(w.noted, p)
			delete(w.through, p)
		}
	}
	if through.IsZero() || !through.After(w.written) {
		return through, nil
	}
	if err := w.write(ctx, clickhouse.Watermark{Stream: w.stream, Topic: w.topic, Partitions: len(offs), Through: through}); err != nil {
		return through, err
	}
	w.written = through
	return through, nil
}

// runWatermark checks the feedback and decisions watermarks every interval
// until ctx ends; failures are logged and retried at the next check (the
// watermarks stay where they were, which only delays closing decisions).
func (in *Ingester) runWatermark(ctx context.Context) {
	t := in.kcfg.Topics()
	marks := []*watermark{
		newWatermark(t.Feedback, clickhouse.StreamFeedback, nil, in.inserts.WriteWatermark, in.now),
		newWatermark(t.Decisions, clickhouse.StreamDecisions, nil, in.inserts.WriteWatermark, in.now),
	}
	gauges := []prometheus.Gauge{in.watermark, in.decisionsWatermark}
	tick := time.NewTicker(in.cfg.WatermarkInterval)
	defer tick.Stop()
	failing := false
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		at := in.now() // before asking: every record appended before at is below the ends Kafka reports
		offs, err := kafka.GroupOffsets(cctx, in.kcfg, in.cfg.Group, t.Feedback, t.Decisions)
		var both time.Time // the older of the two: what a spool's claim must wait for
		for i, w := range marks {
			if err != nil {
				break
			}
			var through time.Time
			through, err = w.update(cctx, at, offs[w.topic])
			if !through.IsZero() {
				gauges[i].Set(float64(through.UnixMilli()) / 1000)
			}
			if i == 0 || through.Before(both) {
				both = through
			}
		}
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			if !failing {
				in.log.Warn("ingest watermarks not updated; retrying", "err", err)
			}
			failing = true
		case err == nil:
			failing = false
		}
		if err == nil && !both.IsZero() {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := in.spool.write(wctx, both, in.cfg.SpoolExpiry, in.now(), in.inserts.WriteSpoolWatermarks); err != nil && ctx.Err() == nil {
				in.log.Warn("spool watermarks not written; retrying", "err", err)
			}
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// The spool watermark. Events (decisions and feedback) that a serving
// process has logged but not yet shipped to Kafka (its spool is behind:
// Kafka is unreachable from it) are not covered by the Kafka watermarks.
// Every serving process therefore writes to the spool watermark topic, every
// second or so, a claim that all it logged timed before a time was in Kafka
// when it sent the claim (flywheel.SpoolWatermark). Ingest writes a claim to
// ClickHouse only once both Kafka watermarks have passed the claim's sent
// time, so that what the claim covers is ingested too; the examples view
// then keeps decisions open behind the oldest newest-claim of the processes
// whose claims have not expired (ingest.spool_expiry after they were sent).
// A claim lost (ingest stopped before writing it) only holds decisions open
// a little longer: the next one replaces it.

// maxClaimsPerSource bounds the claims of one process waiting for the Kafka
// watermark; past it the oldest are dropped (a newer one supersedes them).
const maxClaimsPerSource = 64

// spoolClaims are the spool watermarks read from their topic and not
// yet written. It is safe for concurrent use.
type spoolClaims struct {
	mu      sync.Mutex
	pending map[string][]flywheel.SpoolWatermark // by source, in the order read
}

func newSpoolClaims() *spoolClaims {
	return &spoolClaims{pending: map[string][]flywheel.SpoolWatermark{}}
}

// add takes the claims of a committed batch.
func (c *spoolClaims) add(ws []flywheel.SpoolWatermark) {
	if len(ws) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range ws {
		p := append(c.pending[w.Source], w)
		if len(p) > maxClaimsPerSource {
			p = p[len(p)-maxClaimsPerSource:]
		}
		c.pending[w.Source] = p
	}
}

// write stores, for every source, its newest claim sent by kafkaThrough
// (the Kafka watermark), valid for expiry after it was sent, and keeps the
// later claims for a later call. It returns the error of the insert; the
// claims are then kept to be tried again.
func (c *spoolClaims) write(ctx context.Context, kafkaThrough time.Time, expiry time.Duration, now time.Time,
	insert func(ctx context.Context, ws []clickhouse.SpoolWatermark, ingestedAt time.Time) error) error {
	c.mu.Lock()
	var out []clickhouse.SpoolWatermark
	taken := map[string]int{}
	for src, ws := range c.pending {
		n := 0
		for n < len(ws) && !ws[n].Sent.After(kafkaThrough) {
			n++
		}
		if n == 0 {
			continue
		}
		var newest flywheel.SpoolWatermark
		for _, w := range ws[:n] {
			if w.Through.After(newest.Through) {
				newest = w
			}
		}
		out = append(out, clickhouse.SpoolWatermark{Source: src, Through: newest.Through, Sent: newest.Sent, ValidUntil: newest.Sent.Add(expiry)})
		taken[src] = n
	}
	c.mu.Unlock()
	if len(out) == 0 {
		return nil
	}
	if err := insert(ctx, out, now); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for src, n := range taken {
		ws := c.pending[src]
		if n > len(ws) { // trimmed meanwhile
			n = len(ws)
		}
		if rest := ws[n:]; len(rest) > 0 {
			c.pending[src] = rest
		} else {
			delete(c.pending, src)
		}
	}
	return nil
}
