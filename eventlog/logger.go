package eventlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bytedance/sonic"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/kafka"
)

// Writer ships messages to one Kafka topic (kafka.LogWriter). On a partial
// failure WriteMessages returns a kafka.WriteErrors saying which messages
// were not written; the logger retries those, so a Writer should not retry
// by itself.
type Writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
	Close() error
}

var _ Writer = (*kafka.LogWriter)(nil)

// Logger logs decisions and feedback without ever making a request wait for
// Kafka. Every event is first appended to the local spool (a decision is
// written to the operating system, feedback is also fsynced before the call
// returns, group-committed); Run ships the spool to Kafka in order, with acks
// from all in-sync replicas, retrying with backoff while Kafka is down or
// slow, and remembers how far it got. After a crash or a restart, shipping
// resumes where it stopped. Delivery to Kafka is at least once (a batch
// retried after a timeout may land twice); ingest deduplicates by event id.
// Logger is safe for concurrent use.
type Logger struct {
	spool               *Spool
	decisions, feedback Writer
	log                 *slog.Logger
	wake                chan struct{}
	leftover            Position // the spool's end when Run started
	behind              bool     // a ship failed and the spool has not caught up since

	cursor atomic.Pointer[Position] // how far Run got, for Close

	cursorEvery time.Duration // the const cursorEvery; tests set it
	curMu       sync.Mutex    // guards the three below: Run and Close both save
	saved       Position      // the cursor last written to the spool's CURSOR file
	savedAt     time.Time
	released    int64 // segments before this one are deleted

	// The spool watermark (watermark.go); the fields after inflight are
	// Run's alone.
	watermarks Writer // nil: none is sent
	source     string
	every      time.Duration
	now        func() time.Time
	inflight   inflight
	floor      atomic.Int64 // Unix ns of the latest note: an event logged after it is claimed after it
	mark       *spoolMark
	through    time.Time // everything received before it is in Kafka
	sentAt     time.Time

	metrics
}

// NewLogger returns a logger spooling as sp says (sp.Log defaults to log)
// and shipping to the topics of cfg.
func NewLogger(cfg kafka.Config, sp SpoolOptions, reg prometheus.Registerer, log *slog.Logger) (*Logger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := cfg.Topics()
	// The logger retries by itself, resending only what Kafka reports as not
	// written; a lost spool watermark is followed by the next in a second.
	dw, fw := kafka.NewLogWriter(cfg, t.Decisions), kafka.NewLogWriter(cfg, t.Feedback)
	ww := kafka.NewLogWriter(cfg, t.SpoolWatermarks)
	return NewLoggerWith(sp, dw, fw, ww, reg, log)
}

// NewLoggerWith returns a logger over the given writers; watermarks takes
// the spool watermarks (nil: none is sent).
func NewLoggerWith(so SpoolOptions, decisions, feedback, watermarks Writer, reg prometheus.Registerer, log *slog.Logger) (*Logger, error) {
	if so.Dir == "" {
		return nil, fmt.Errorf("serve.spool_dir is empty")
	}
	if so.MaxBytes < 0 {
		return nil, fmt.Errorf("serve.spool_max_bytes is %d: it must be positive (0 means %d)", so.MaxBytes, DefaultSpoolMaxBytes)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if so.Log == nil {
		so.Log = log
	}
	if so.WatermarkInterval < 0 {
		return nil, fmt.Errorf("the spool watermark interval is %v: it must be positive (0 means %v)", so.WatermarkInterval, DefaultWatermarkInterval)
	}
	sp, err := OpenSpool(so)
	if err != nil {
		return nil, err
	}
	source, err := spoolSource(so.Dir)
	if err != nil {
		sp.Close()
		return nil, err
	}
	every, now := so.WatermarkInterval, so.Now
	if every == 0 {
		every = DefaultWatermarkInterval
	}
	if now == nil {
		now = time.Now
	}
	m, err := newMetrics(reg, sp)
	if err != nil {
		sp.Close()
		return nil, err
	}
	l := &Logger{
		spool: sp, decisions: decisions, feedback: feedback, log: log, wake: make(chan struct{}, 1),
		watermarks: watermarks, source: source, every: every, now: now, metrics: m, cursorEvery: cursorEvery,
	}
	return l, nil
}

func kindName(k byte) string {
	if k == KindDecision {
		return "decision"
	}
	return "feedback"
}

// LogDecision spools d. It returns an ESPOOLFULL or EUNAVAILABLE error if
// the spool could not take it (the caller must then not answer as if it
// were logged).
//
// Like LogFeedback, it may move d.Time forward, by as long as the caller
// took between taking the time and logging the decision (microseconds, or
// longer under load): to just after the spool watermark's latest claim when
// it was taken before (the claim did not cover it), so that the claim holds
// for the decision as logged.
func (l *Logger) LogDecision(ctx context.Context, d *flywheel.Decision) error {
	defer l.inflight.done(l.inflight.addTime(d.Time)) // until it is in the spool: the spool watermark waits for it
	l.after(&d.Time)
	bp := getBuf(0)
	defer putBuf(bp)
	v, err := appendDecision(*bp, d)
	if err != nil {
		return fmt.Errorf("encode decision %s: %w", d.EventID, err)
	}
	*bp = v
	if n := len(v) + len(d.EventID); n > kafka.MaxRecordBytes {
		return flywheel.Errorf(flywheel.ETOOLARGE, "the decision's log record would be %d bytes, more than the %d a Kafka record takes: send fewer or smaller actions", n, kafka.MaxRecordBytes)
	}
	rec := [1]Record{{Kind: KindDecision, Key: []byte(d.EventID), Value: v}}
	return l.append(rec[:], false) // the spool copies the record and keeps nothing of it
}

func encodeDecision(d *flywheel.Decision) ([]byte, error) { return appendDecision(nil, d) }

// appendDecision appends d's log record (its JSON) to dst.
func appendDecision(dst []byte, d *flywheel.Decision) ([]byte, error) {
	if d.RawContext == nil || (d.RawActions == nil && len(d.Actions) > 0) {
		v, err := sonic.Marshal(d)
		return append(dst, v...), err
	}
	r, err := d.Record() // the raw JSON as it is: nothing encoded again
	if err != nil {
		return nil, err
	}
	n := len(r.Context) + 256 + 16*len(r.Probabilities)
	for _, a := range r.Actions {
		n += len(a.Features) + 2*len(a.ID) + 24
	}
	return r.AppendJSON(slices.Grow(dst, n))
}

// LogFeedback spools fs and returns once they are fsynced; it fails as
// LogDecision does, and may move their times forward as it does.
func (l *Logger) LogFeedback(ctx context.Context, fs []flywheel.Feedback) error {
	defer l.inflight.done(l.inflight.add(fs)) // until it is in the spool: the spool watermark waits for it
	recs := make([]Record, len(fs))
	for i := range fs {
		l.after(&fs[i].Time)
		v, err := sonic.Marshal(&fs[i])
		if err != nil {
			return fmt.Errorf("encode feedback %s: %w", fs[i].FeedbackID, err)
		}
		recs[i] = Record{Kind: KindFeedback, Key: []byte(fs[i].EventID), Value: v}
	}
	return l.append(recs, true)
}

// retryError is a flywheel error that also tells the client when to try
// again (serve answers it with Retry-After).
type retryError struct {
	err   *flywheel.Error
	after time.Duration
}

func (e *retryError) Error() string             { return e.err.Error() }
func (e *retryError) Unwrap() error             { return e.err }
func (e *retryError) RetryAfter() time.Duration { return e.after }

// append spools recs. When the spool refuses them it returns an ESPOOLFULL
// error (at its cap or the disk is full) or an EUNAVAILABLE one, both with a
// retry delay.
func (l *Logger) append(recs []Record, durable bool) error {
	kind := kindName(recs[0].Kind)
	if _, err := l.spool.Append(recs, durable); err != nil {
		if errors.Is(err, ErrSpoolFull) {
			l.failed.WithLabelValues(kind, "full").Add(float64(len(recs)))
			l.log.Warn("spool full: events refused", "kind", kind, "count", len(recs), "err", err)
			return &retryError{flywheel.Errorf(flywheel.ESPOOLFULL, "the event log of this server is full, so the %s was not logged: try again later", kind), 5 * time.Second}
		}
		l.failed.WithLabelValues(kind, "error").Add(float64(len(recs)))
		l.log.Error("spool refused events", "kind", kind, "count", len(recs), "err", err)
		return &retryError{flywheel.Errorf(flywheel.EUNAVAILABLE, "the %s could not be logged", kind), time.Second}
	}
	l.spooled.WithLabelValues(kind).Add(float64(len(recs)))
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return nil
}

// Health returns nil while the spool takes events, or why it does not (see
// Spool.Health). It is safe for concurrent use.
func (l *Logger) Health() error { return l.spool.Health() }

// Run ships the spool to Kafka until ctx ends. It returns an error only if
// the spool's directory cannot be listed; a segment it cannot read is
// retried with backoff and logged, so that serving goes on.
func (l *Logger) Run(ctx context.Context) error {
	cur, err := l.spool.LoadCursor()
	if err != nil {
		return err
	}
	if n := l.spool.Pending(cur); n > 0 {
		l.log.Info("replaying spooled events to Kafka", "bytes", n)
	}
	l.leftover = l.spool.End()
	l.curMu.Lock()
	l.saved, l.savedAt = cur, time.Now()
	l.curMu.Unlock()
	start := cur
	l.cursor.Store(&start)
	retry := 100 * time.Millisecond
	for {
		l.note()
		next, n, err := l.shipOnce(ctx, cur)
		if ctx.Err() != nil {
			return nil
		}
		wait := 100 * time.Millisecond
		if err != nil {
			l.log.Error("reading the spool failed; trying again", "cursor", cur, "retry_in", retry, "err", err)
			wait, retry = retry, min(retry*2, 10*time.Second)
		} else {
			retry = 100 * time.Millisecond
			moved := next != cur
			cur = next
			c := cur // how far Run got, for Close: saveCursor may not have saved it
			l.cursor.Store(&c)
			l.reached(ctx, cur)
			if n >= shipBatch || moved {
				continue
			}
			if n > 0 && !l.linger(ctx) { // a partial batch: let the next one gather
				return nil
			}
			if n > 0 {
				continue
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-l.wake:
			if !l.linger(ctx) {
				return nil
			}
		case <-time.After(wait):
		}
	}
}

// shipBatch is the most records one shipOnce reads from the spool.
const shipBatch = 2000

// shipLinger is how long the shipper lets events gather after the first of
// a batch arrives. Shipping costs about the same per produce request
// whatever it holds (a spool read, a Kafka round trip, a cursor save), so
// at moderate rates shipping every event as it comes cost serving more CPU
// per request than at peak, where batches fill by themselves. A request is
// answered once its event is in the spool, so this delays only delivery
// to Kafka, never an answer.
const shipLinger = 5 * time.Millisecond

// linger waits shipLinger; false if ctx ended first.
func (l *Logger) linger(ctx context.Context) bool {
	t := time.NewTimer(shipLinger)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// shipOnce ships one batch from cur, retrying with backoff until Kafka has
// taken all of it or ctx ends; it returns the new cursor and how many
// records it shipped. A retry resends only the records Kafka reported as not
// written, so that a partly written batch is not written twice.
func (l *Logger) shipOnce(ctx context.Context, cur Position) (Position, int, error) {
	recs, next, err := l.spool.ReadFrom(cur, shipBatch)
	if err != nil || len(recs) == 0 {
		if err == nil {
			l.behind = false // caught up
			if next != cur { // past a quarantined stretch
				l.saveCursor(next, true)
				cur = next
			}
		}
		l.pending.Set(float64(l.spool.Pending(cur)))
		return cur, 0, err
	}
	start := time.Now()
	var dec, fb []kafka.Message
	for _, r := range recs {
		m := kafka.Message{Key: r.Key, Value: r.Value}
		if r.Kind == KindDecision {
			dec = append(dec, m)
		} else {
			fb = append(fb, m)
		}
	}
	nd, nf := len(dec), len(fb)
	backoff := 50 * time.Millisecond
	late := l.behind || cur.less(l.leftover) // waited through an outage, or left by an earlier run
	for len(dec)+len(fb) > 0 {
		var err error
		if dec, err = l.write(ctx, l.decisions, dec); err == nil {
			fb, err = l.write(ctx, l.feedback, fb)
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return cur, 0, ctx.Err()
		}
		l.errors.Inc()
		late, l.behind = true, true
		// What waits is still pending: the gauge must not keep saying the
		// spool was empty while Kafka is away.
		l.pending.Set(float64(l.spool.Pending(cur)))
		l.log.Warn("shipping to Kafka failed; events stay in the spool", "unshipped", len(dec)+len(fb), "pending_bytes", l.spool.Pending(cur), "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return cur, 0, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	l.saveCursor(next, false)
	if late {
		l.replayed.Add(float64(len(recs)))
	}
	l.shipped.WithLabelValues("decision").Add(float64(nd))
	l.shipped.WithLabelValues("feedback").Add(float64(nf))
	l.batchSec.Observe(time.Since(start).Seconds())
	l.pending.Set(float64(l.spool.Pending(next)))
	return next, len(recs), nil
}

// cursorEvery is how often the shipper writes its cursor while shipping
// within one segment. Writing it is a create, a write, an fsync and a
// rename; once per batch that was 200 fsyncs a second at a steady load,
// more than the Kafka writes they follow. A crash ships again at most the
// last cursorEvery of events, which the consumers drop as duplicates (they
// are idempotent: delivery is at-least-once anyway). The cursor is written
// at once when it moves into the next segment, so that the shipped one is
// deleted, and by Close.
const cursorEvery = time.Second

// saveCursor saves the shipping position, at most every cursorEvery unless
// force or the position is in a later segment than the one saved, and
// deletes the segments shipped. A cursor that cannot be saved (the disk is
// full) is logged and kept in memory: the segments shipped are deleted all
// the same, which frees room, and a restart before the next save ships a
// few events twice.
func (l *Logger) saveCursor(p Position, force bool) {
	l.curMu.Lock()
	defer l.curMu.Unlock()
	if p == l.saved {
		return
	}
	now := time.Now()
	if !force && p.Seg == l.saved.Seg && now.Sub(l.savedAt) < l.cursorEvery {
		return
	}
	if err := l.spool.SaveCursor(p); err != nil {
		l.log.Warn("could not save the spool's cursor; a restart now would ship some events again", "err", err)
	} else {
		l.saved, l.savedAt = p, now
	}
	if p.Seg <= l.released {
		return
	}
	if err := l.spool.Release(p); err != nil {
		l.log.Warn("could not delete a shipped spool segment", "err", err)
		return
	}
	l.released = p.Seg
}

// write sends msgs and returns those still to send: none on success, the
// ones Kafka reported as failed on a partial failure, all of them when the
// outcome is unknown.
func (l *Logger) write(ctx context.Context, w Writer, msgs []kafka.Message) ([]kafka.Message, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := w.WriteMessages(wctx, msgs...)
	if err == nil {
		return nil, nil
	}
	var we kafka.WriteErrors
	if errors.As(err, &we) && len(we) == len(msgs) {
		var rest []kafka.Message
		for i, e := range we {
			if e != nil {
				rest = append(rest, msgs[i])
			}
		}
		return rest, fmt.Errorf("%d of %d records not written: %w", len(rest), len(msgs), err)
	}
	return msgs, err
}

// Close ships what is left for at most timeout, then closes the spool and
// the writers. What could not be shipped stays in the spool for the next
// start.
func (l *Logger) Close(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := l.spool.Sync(); err != nil { // what was appended lazily, too
		l.log.Warn("spool sync at close failed", "err", err)
	}
	cur, err := l.spool.LoadCursor()
	if p := l.cursor.Load(); p != nil && (err != nil || cur.less(*p)) { // Run got this far without saving it
		cur, err = *p, nil
	}
	known := err == nil // cur is a real position, worth saving
	for err == nil && l.spool.Pending(cur) > 0 && ctx.Err() == nil {
		var n int
		cur, n, err = l.shipOnce(ctx, cur)
		if n == 0 && err == nil {
			break
		}
	}
	if known {
		l.saveCursor(cur, true) // Run saves at most every cursorEvery
	}
	if rest := l.spool.Pending(cur); rest > 0 {
		l.log.Warn("stopping with events still in the spool; they are shipped at the next start", "bytes", rest, "err", err)
	}
	serr := l.spool.Close()
	l.decisions.Close()
	l.feedback.Close()
	if l.watermarks != nil {
		l.watermarks.Close()
	}
	return serr
}
