// Package ingest turns the Kafka log into ClickHouse tables: a consumer group
// over the decisions, feedback and spool watermark topics that inserts in batches (by rows and
// by time) and, only after an insert succeeded, commits the last offset of
// every partition in it. Delivery is at least once; the tables deduplicate by
// event id (and feedback id), so a record delivered twice appears once in
// every view. Records that cannot be decoded go to the dead-letter topic with
// the error and their origin, and ingest goes on. Ingest also writes the
// feedback watermark (watermark.go), behind which decisions close.
package ingest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/kafka"
)

// Config tunes batching.
type Config struct {
	Group     string        `yaml:"group"`      // consumer group; default flywheel-ingest (the command line puts kafka.topic_prefix before it)
	BatchRows int           `yaml:"batch_rows"` // flush at this many records; default 10000
	BatchWait time.Duration `yaml:"batch_wait"` // or this long after the first; default 500ms
	// BatchBytes flushes at this many bytes of records (default 64 MiB), so
	// that the memory a batch of large decisions takes stays bounded.
	BatchBytes int `yaml:"batch_bytes"`
	// WatermarkInterval is how often the feedback watermark (the time
	// through which all feedback in Kafka is in ClickHouse; decisions close
	// only behind it) is checked and written; default 1s.
	WatermarkInterval time.Duration `yaml:"watermark_interval"`
	// SpoolExpiry is how long the last claim of a serving process (that
	// everything it received up to some time has left its spool) holds
	// decisions open once no newer claim arrives: a process that stopped
	// or cannot reach Kafka holds them for at most this long; default 10m.
	SpoolExpiry time.Duration `yaml:"spool_expiry"`
}

// GroupName is the consumer group, with its default.
func (c Config) GroupName() string { return c.withDefaults().Group }

func (c Config) withDefaults() Config {
	if c.Group == "" {
		c.Group = "flywheel-ingest"
	}
	if c.BatchRows <= 0 {
		c.BatchRows = 10000
	}
	if c.BatchBytes <= 0 {
		c.BatchBytes = 64 << 20
	}
	if c.BatchWait <= 0 {
		c.BatchWait = 500 * time.Millisecond
	}
	if c.WatermarkInterval <= 0 {
		c.WatermarkInterval = time.Second
	}
	if c.SpoolExpiry <= 0 {
		c.SpoolExpiry = 10 * time.Minute
	}
	return c
}

// Ingester consumes and inserts. Run it once per process; several processes
// with the same group share the partitions.
type Ingester struct {
	cfg     Config
	kcfg    kafka.Config
	inserts Inserter
	dlq     *kafkago.Writer
	log     *slog.Logger
	now     func() time.Time
	metrics
	spool *spoolClaims // read from the feedback topic, written behind the Kafka watermark
}

// Options are an Ingester's dependencies.
type Options struct {
	Kafka   kafka.Config // the cluster and topics to consume; required
	Inserts Inserter     // where the rows go (clickhouse.NewInserts); required
	// Registerer takes the metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	Logger     *slog.Logger     // nil discards
	Now        func() time.Time // the clock; nil is time.Now
}

// New returns an ingester of the records of o.Kafka into o.Inserts, or the
// error of a bad option or of registering its metrics.
func New(cfg Config, o Options) (*Ingester, error) {
	kcfg := o.Kafka
	if err := kcfg.Validate(); err != nil {
		return nil, err
	}
	if o.Inserts == nil {
		return nil, errors.New("ingest: no inserts (clickhouse.NewInserts)")
	}
	log, now := o.Logger, o.Now
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	in := &Ingester{
		cfg: cfg.withDefaults(), kcfg: kcfg, inserts: o.Inserts, log: log, now: now, spool: newSpoolClaims(),
		dlq: kafka.NewWriter(kcfg, kcfg.Topics().DLQ), metrics: m,
	}
	return in, nil
}

// Run consumes until ctx ends. It returns nil on a clean stop.
func (in *Ingester) Run(ctx context.Context) error {
	t := in.kcfg.Topics()
	r := kafka.NewLoggedGroupReader(in.kcfg, in.log, in.cfg.Group, t.Decisions, t.Feedback, t.SpoolWatermarks)
	defer r.Close()
	defer in.dlq.Close()
	// Three stages, each on its own goroutine: fetching and decoding batch
	// N+2, building the inserts of batch N+1 (prepared and appended), and
	// sending batch N's inserts then committing its offsets, in order.
	g, gctx := errgroup.WithContext(ctx)
	decoded, ready := make(chan *batch, 1), make(chan *batch, 1)
	// A batch written as the run stops is still committed, so that a clean
	// stop (a rolling restart) does not deliver it again.
	cctx, stopCommits := afterEnd(gctx, commitGrace)
	defer stopCommits()
	g.Go(func() error {
		for b := range ready {
			if err := in.write(gctx, b); err != nil {
				b.abort()
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			last := lastPerPartition(b.msgs)
			if in.log.Enabled(gctx, slog.LevelDebug) {
				in.log.Debug("batch written", "records", len(b.msgs), "inserts", b.rowsByTable(), "offsets", offsetRanges(b.msgs))
			}
			if err := r.CommitMessages(cctx, last...); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				// The batch is written; a group that is rebalancing, or whose
				// coordinator moved, delivers its records again after the
				// rebalance, and writing them twice changes nothing (the
				// tables keep one row per key). A later commit covers them.
				in.log.Warn("committing offsets failed; the records may be delivered again", "err", err)
			}
			for _, m := range last {
				in.lag.WithLabelValues(m.Topic, strconv.Itoa(m.Partition)).Set(float64(max(0, m.HighWaterMark-m.Offset-1)))
			}
			in.spool.add(b.spool)
			in.sizes.Observe(float64(len(b.msgs)))
		}
		return nil
	})
	g.Go(func() error {
		defer close(ready)
		for b := range decoded {
			for _, x := range b.inserts {
				x.prefill(gctx)
			}
			select {
			case ready <- b:
			case <-gctx.Done():
				b.abort()
				return nil
			}
		}
		return nil
	})
	g.Go(func() error {
		in.runWatermark(gctx)
		return nil
	})
	g.Go(func() error {
		defer close(decoded)
		err := in.fetch(gctx, r, decoded)
		if ctx.Err() != nil || errors.Is(err, context.Canceled) {
			return nil // uncommitted records are delivered again after restart
		}
		return err
	})
	err := g.Wait()
	for range decoded {
	}
	for b := range ready { // batches built but never written: release their connections
		b.abort()
	}
	return err
}

// batch is fetched records, decoded, with their inserts (decisions, then
// feedback) and dead letters.
type batch struct {
	msgs    []kafkago.Message
	inserts []*insert
	dead    []kafkago.Message
	spool   []flywheel.SpoolWatermark
}

// rowsByTable says how many rows the batch inserts into each table.
func (b *batch) rowsByTable() string {
	var parts []string
	for _, x := range b.inserts {
		parts = append(parts, fmt.Sprintf("%s:%d", x.table, x.rows))
	}
	return strings.Join(parts, " ")
}

// offsetRanges lists the first and last offset of each topic-partition in
// msgs, for the debug log.
func offsetRanges(msgs []kafkago.Message) string {
	type span struct{ first, last int64 }
	spans := map[tp]span{}
	for _, m := range msgs {
		k := tp{m.Topic, m.Partition}
		if s, ok := spans[k]; !ok {
			spans[k] = span{m.Offset, m.Offset}
		} else {
			spans[k] = span{min(s.first, m.Offset), max(s.last, m.Offset)}
		}
	}
	out := make([]string, 0, len(spans))
	for k, s := range spans {
		out = append(out, fmt.Sprintf("%s[%d]:%d-%d", k.topic, k.part, s.first, s.last))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// abort releases the connections of the inserts built ahead of time.
func (b *batch) abort() {
	for _, x := range b.inserts {
		x.abort()
	}
}

// fetchPause is the pause after a failed fetch: short, since the reader
// paces its own retries, and not nothing, so that a reader failing at once
// and forever does not pin a core.
const fetchPause = 20 * time.Millisecond

// fetchErrorLogEvery bounds how often failed fetches are logged.
const fetchErrorLogEvery = 5 * time.Second

// earlyRows is the smallest batch inserted as soon as ingest has caught
// up with the log, before batch_wait: ClickHouse's guidance is inserts of
// at least 1000 rows or at most one a second.
const earlyRows = 1000

// fetch reads records into batches and hands each, decoded, to ready, until
// ctx ends. A batch is cut at batch_rows records or batch_bytes bytes, at
// batch_wait after its first record, or as soon as it has earlyRows records
// and every partition in it is read to its end (nothing is waiting).
func (in *Ingester) fetch(ctx context.Context, r *kafkago.Reader, ready chan<- *batch) error {
	type fetched struct {
		m   kafkago.Message
		err error
	}
	// FetchMessage blocks; a goroutine feeds the batcher so that it can
	// see when nothing is waiting.
	incoming := make(chan fetched, 1024)
	go func() {
		var failed int       // errors since the last logged
		var logged time.Time // when the last was
		for {
			m, err := r.FetchMessage(ctx)
			// io.EOF too: the reader returns it for a connection a killed
			// broker closed mid-read, not only once it is closed itself
			// (which happens after ctx ends).
			if err != nil && ctx.Err() == nil {
				// The group reader heals by itself (a coordinator that moved
				// with a broker, offsets still loading, a leader back) and
				// paces its own retries (ReadBackoffMin/Max); the errors it
				// met meanwhile wait in its queue, so they are drained
				// without waiting again (at 10 s each, a broker down for 20 s
				// held ingest back for 5 minutes), logged at most once every
				// fetchErrorLogEvery.
				failed++
				if now := time.Now(); now.Sub(logged) >= fetchErrorLogEvery {
					in.log.Warn("fetching from Kafka failed; fetching on", "errors", failed, "err", err)
					failed, logged = 0, now
				}
				select {
				case <-time.After(fetchPause):
				case <-ctx.Done():
					return
				}
				continue
			}
			select {
			case incoming <- fetched{m, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var (
		msgs     []kafkago.Message
		dec      = newDecoder(in.kcfg.Topics().Decisions)
		known    = newKnownActions()
		recent   = newRecentKeys()
		size     int
		behind   = map[tp]bool{} // partitions of the batch not read to their end
		deadline *time.Timer
		expired  <-chan time.Time
	)
	add := func(f fetched) error {
		if f.err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("fetch: %w", f.err)
		}
		if len(msgs) == 0 {
			deadline = time.NewTimer(in.cfg.BatchWait)
			expired = deadline.C
		}
		msgs = append(msgs, f.m)
		size += len(f.m.Value)
		dec.add(msgs, false)
		behind[tp{f.m.Topic, f.m.Partition}] = f.m.Offset+1 < f.m.HighWaterMark
		return nil
	}
	for {
		full := len(msgs) >= in.cfg.BatchRows || size >= in.cfg.BatchBytes
		if !full {
			select {
			case f := <-incoming:
				if err := add(f); err != nil {
					return err
				}
				continue
			default:
			}
			caughtUp := len(msgs) >= min(earlyRows, in.cfg.BatchRows)
			for _, b := range behind {
				caughtUp = caughtUp && !b
			}
			if !caughtUp {
				select {
				case f := <-incoming:
					if err := add(f); err != nil {
						return err
					}
					continue
				case <-expired:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		if deadline != nil {
			deadline.Stop()
		}
		b, err := in.batch(ctx, msgs, dec.wait(msgs), known, recent)
		if err != nil {
			return err
		}
		select {
		case ready <- b:
		case <-ctx.Done():
			return ctx.Err()
		}
		msgs, size, deadline, expired = nil, 0, nil, nil
		dec = newDecoder(in.kcfg.Topics().Decisions)
		clear(behind)
	}
}

// knownActions is what this run knows of actions, by key: seen once, or
// seen again and written to the actions table (once, not with every
// decision that names it). Two generations of at most maxKnownActions keys
// bound its memory. Every hour it forgets everything, so that an action in
// use is written again with a fresh seen_at (its row outlives a retention
// TTL, and comes back if the table lost it); a new run starts knowing
// nothing.
type knownActions struct {
	cur, old map[[16]byte]uint8 // by the hash behind the key: no pointers for the GC to follow
	since    time.Time
}

const (
	maxKnownActions = 1 << 18
	seenOnce        = 1
	written         = 2
)

func newKnownActions() *knownActions {
	return &knownActions{cur: map[[16]byte]uint8{}}
}

// state is what is known of key: 0 (nothing), seenOnce or written.
func (k *knownActions) state(key [16]byte, now time.Time) uint8 {
	if now.Sub(k.since) >= time.Hour {
		k.cur, k.old, k.since = map[[16]byte]uint8{}, nil, now
	}
	if st, ok := k.cur[key]; ok {
		return st
	}
	if st, ok := k.old[key]; ok {
		k.set(key, st)
		return st
	}
	return 0
}

func (k *knownActions) set(key [16]byte, st uint8) {
	if _, ok := k.cur[key]; !ok && len(k.cur) >= maxKnownActions {
		k.cur, k.old = map[[16]byte]uint8{}, k.cur
	}
	k.cur[key] = st
}

// commitGrace is how long the offsets of a batch written as the run stops
// may take to commit.
const commitGrace = 5 * time.Second

// afterEnd returns a context that ends grace after ctx ends (or when the
// CancelFunc is called).
func afterEnd(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(grace, cancel) })
	return c, func() { stop(); cancel() }
}

// tp names a topic-partition.
type tp struct {
	topic string
	part  int
}

// lastPerPartition returns the last message of every topic-partition in
// batch: committing it commits everything before it in that partition.
func lastPerPartition(batch []kafkago.Message) []kafkago.Message {
	last := map[tp]kafkago.Message{}
	for _, m := range batch {
		k := tp{m.Topic, m.Partition}
		if prev, ok := last[k]; !ok || m.Offset > prev.Offset {
			last[k] = m
		}
	}
	out := make([]kafkago.Message, 0, len(last))
	for _, m := range last {
		out = append(out, m)
	}
	return out
}

// batch sorts a batch's decoded records into decisions, feedback and dead
// letters, and makes its inserts.
func (in *Ingester) batch(ctx context.Context, msgs []kafkago.Message, outcomes []decoded, known *knownActions, recent *recentKeys) (*batch, error) {
	b := &batch{msgs: msgs}
	var decisions []*row
	var at []int // msgs[at[i]] is decisions[i]'s record
	var feedback []*flywheel.Feedback
	for i, x := range outcomes {
		switch {
		case x.err != nil:
			b.dead = append(b.dead, deadLetter(msgs[i], x.err, in.now()))
		case x.decision != nil:
			decisions = append(decisions, x.decision)
			at = append(at, i)
		case x.spool != nil:
			b.spool = append(b.spool, *x.spool)
		default:
			feedback = append(feedback, x.feedback)
		}
	}
	decisions, err := in.firstDecisions(ctx, recent, msgs, decisions, at, b)
	if err != nil {
		return nil, err
	}
	// In each table's order: the server then writes the part as it comes
	// instead of sorting it (a permutation of every column, the wide JSON
	// ones included). Stable, so that of two deliveries of a record the
	// later stays the later.
	slices.SortStableFunc(decisions, func(a, b *row) int {
		return cmp.Or(strings.Compare(a.d.Model, b.d.Model), strings.Compare(a.d.EventID, b.d.EventID))
	})
	slices.SortStableFunc(feedback, func(a, b *flywheel.Feedback) int {
		return cmp.Or(strings.Compare(a.EventID, b.EventID), strings.Compare(a.FeedbackID, b.FeedbackID))
	})
	// An action is written to the actions table when it is seen the second
	// time: actions that recur (a catalogue's) are stored once, and those
	// that do not (an action made for one decision) are not stored twice. A
	// decision whose actions were all seen before names them by key alone;
	// one with a first sighting carries its actions' JSON as well. The
	// actions go in first, so a decision is never in before the actions it
	// names; they count as written from here, since batches are written in
	// order, each retried until it is in or the run ends.
	var acts []newAction
	now := in.now()
	var states []uint8
	for _, r := range decisions {
		states = states[:0]
		for _, h := range r.actionHashes {
			st := known.state(h, now)
			states = append(states, st)
			r.inline = r.inline || st == 0
		}
		for i, h := range r.actionHashes {
			switch states[i] {
			case 0:
				known.set(h, seenOnce)
			case seenOnce:
				if known.state(h, now) == seenOnce { // not written for an earlier action of this decision
					known.set(h, written)
					acts = append(acts, newAction{key: r.actionKeys[i], id: r.actionIDs[i], json: r.actionJSON[i]})
				}
			}
		}
	}
	if len(acts) > 0 {
		b.inserts = append(b.inserts, in.actionsInsert(acts))
	}
	if len(decisions) > 0 {
		b.inserts = append(b.inserts, in.decisionsInsert(decisions))
	}
	if len(feedback) > 0 {
		b.inserts = append(b.inserts, in.feedbackInsert(feedback))
	}
	return b, nil
}

// write inserts a batch's decisions and feedback and dead-letters the rest,
// retrying ClickHouse and Kafka with backoff until they succeed or ctx ends.
func (in *Ingester) write(ctx context.Context, b *batch) error {
	for _, x := range b.inserts {
		if err := in.retry(ctx, x.table, func() error { return in.send(ctx, x) }); err != nil {
			return err
		}
	}
	if len(b.dead) > 0 {
		if err := in.retry(ctx, "dlq", func() error { return in.dlq.WriteMessages(ctx, b.dead...) }); err != nil {
			return err
		}
		in.dead.Add(float64(len(b.dead)))
		in.log.Warn("records sent to the dead-letter topic", "count", len(b.dead))
	}
	return nil
}

// retry runs fn until it succeeds, backing off from 100 ms to 10 s.
func (in *Ingester) retry(ctx context.Context, what string, fn func() error) error {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			return nil
		}
		in.log.Warn("write failed; retrying", "what", what, "attempt", attempt, "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

type deadRecord struct {
	Schema    int       `json:"schema"`
	Error     string    `json:"error"`
	Topic     string    `json:"topic"`
	Partition int       `json:"partition"`
	Offset    int64     `json:"offset"`
	Key       string    `json:"key"`
	Value     string    `json:"value"`
	Time      time.Time `json:"ts"`
}

func deadLetter(m kafkago.Message, err error, now time.Time) kafkago.Message {
	v, _ := json.Marshal(deadRecord{Schema: flywheel.SchemaVersion, Error: err.Error(), Topic: m.Topic, Partition: m.Partition,
		Offset: m.Offset, Key: string(m.Key), Value: string(m.Value), Time: now.UTC()})
	return kafkago.Message{Key: m.Key, Value: v}
}
