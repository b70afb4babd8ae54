package ingest

import (
	"context"
	"sync"
	"time"

	"github.com/flywheel-dev/flywheel"

	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/kafka"
)

// The feedback watermark is the time through which every feedback record
// appended to Kafka is in ClickHouse. A decision is closed (trained on,
// evaluated, in the examples view) only once its reward window ends by the
// watermark, so that feedback still in Kafka is never taken for the default
// reward.
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

// watermark tracks the feedback watermark of one topic. It is used by one
// goroutine.
type watermark struct {
	topic   string
	offsets func(ctx context.Context) (map[int]kafka.PartitionOffsets, error)
	write   func(ctx context.Context, w clickhouse.Watermark) error
	now     func() time.Time

	noted   map[int][]snapshot // ends not yet reached by the committed offset, oldest first
	through map[int]time.Time  // per partition: everything appended before it is in
	written time.Time          // the last claim written
}

func newWatermark(topic string, offsets func(ctx context.Context) (map[int]kafka.PartitionOffsets, error),
	write func(ctx context.Context, w clickhouse.Watermark) error, now func() time.Time) *watermark {
	return &watermark{topic: topic, offsets: offsets, write: write, now: now,
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
	if err := w.write(ctx, clickhouse.Watermark{Stream: clickhouse.StreamFeedback, Topic: w.topic, Partitions: len(offs), Through: through}); err != nil {
		return through, err
	}
	w.written = through
	return through, nil
}

// runWatermark checks the feedback watermark every interval until ctx ends;
// failures are logged and retried at the next check (the watermark stays
// where it was, which only delays closing decisions).
func (in *Ingester) runWatermark(ctx context.Context) {
	topic := in.kcfg.Topics().Feedback
	w := newWatermark(topic, func(ctx context.Context) (map[int]kafka.PartitionOffsets, error) {
		offs, err := kafka.GroupOffsets(ctx, in.kcfg, in.cfg.Group, topic)
		return offs[topic], err
	}, in.inserts.WriteWatermark, in.now)
	tick := time.NewTicker(in.cfg.WatermarkInterval)
	defer tick.Stop()
	failing := false
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		through, err := w.check(cctx)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			if !failing {
				in.log.Warn("feedback watermark not updated; retrying", "err", err)
			}
			failing = true
		case err == nil:
			failing = false
		}
		if !through.IsZero() {
			in.watermark.Set(float64(through.UnixMilli()) / 1000)
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := in.spool.write(wctx, through, in.cfg.SpoolExpiry, in.now(), in.inserts.WriteSpoolWatermarks); err != nil && ctx.Err() == nil {
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

// The spool watermark. Feedback that a serving process has received but not
// yet shipped to Kafka (its spool is behind: Kafka is unreachable from it)
// is not covered by the Kafka watermark. Every serving process therefore
// writes to the feedback topic, every second or so, a claim that all it
// received before a time was in Kafka when it sent the claim
// (flywheel.SpoolWatermark). Ingest writes a claim to ClickHouse only once
// its Kafka watermark has passed the claim's sent time, so that what the
// claim covers is ingested too; the examples view then keeps decisions open
// behind the oldest newest-claim of the processes whose claims have not
// expired (ingest.spool_expiry after they were sent). A claim lost (ingest
// stopped before writing it) only holds decisions open a little longer:
// the next one replaces it.

// maxClaimsPerSource bounds the claims of one process waiting for the Kafka
// watermark; past it the oldest are dropped (a newer one supersedes them).
const maxClaimsPerSource = 64

// spoolClaims are the spool watermarks read from the feedback topic and not
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
