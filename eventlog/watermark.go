package eventlog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/kafka"
)

// The spool watermark. Events in the spool (decisions and feedback) are not
// yet in Kafka, so ingest cannot know of them; the logger therefore says,
// every second or so, through when everything this process logged has left
// the spool for Kafka (flywheel.SpoolWatermark, on the spool watermark
// topic), and decisions stay open behind the oldest such claim of the live
// serving processes.
//
// Before each shipping round the logger notes the spool's end E and the time
// T it looked (no later than the time of any event still being appended
// then, and any event timed before T but logged after is moved after T);
// once the shipped cursor reaches E, everything timed before T is in Kafka. The claim is sent after Kafka acknowledged what it
// covers. While Kafka is unreachable no claim is sent, and after
// ingest.spool_expiry without one, this process holds nothing back.

// DefaultWatermarkInterval is how often the spool watermark is sent when
// SpoolOptions.WatermarkInterval is 0.
const DefaultWatermarkInterval = time.Second

// sourceFile names, in the spool directory, the id its claims are sent
// under: kept across restarts, so that a restarted process's claims replace
// those of the process that left its records in the spool.
const sourceFile = "SOURCE"

// spoolSource returns the id of the spool in dir, creating it if needed.
func spoolSource(dir string) (string, error) {
	path := filepath.Join(dir, sourceFile)
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read the spool's source id: %w", err)
	}
	host, _ := os.Hostname()
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	id := host + "-" + hex.EncodeToString(r[:])
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("write the spool's source id: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("write the spool's source id: %w", err)
	}
	return id, nil
}

// inflight holds the times of the events being appended to the spool.
type inflight struct {
	mu    sync.Mutex
	next  uint64
	times map[uint64]time.Time
}

// add notes the earliest receive time of fs and returns the key to pass to
// done once fs is in the spool (or refused).
func (f *inflight) add(fs []flywheel.Feedback) uint64 {
	if len(fs) == 0 {
		return 0
	}
	t := fs[0].Time
	for i := range fs {
		if fs[i].Time.Before(t) {
			t = fs[i].Time
		}
	}
	return f.addTime(t)
}

// addTime is add for one event received at t.
func (f *inflight) addTime(t time.Time) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.times == nil {
		f.times = map[uint64]time.Time{}
	}
	f.next++
	f.times[f.next] = t
	return f.next
}

func (f *inflight) done(k uint64) {
	f.mu.Lock()
	delete(f.times, k)
	f.mu.Unlock()
}

// oldest returns the earliest receive time being appended, or t if that is
// earlier.
func (f *inflight) oldest(t time.Time) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, x := range f.times {
		if x.Before(t) {
			t = x
		}
	}
	return t
}

// spoolMark is the spool's end noted before a shipping round.
type spoolMark struct {
	end   Position
	claim time.Time // everything received before it was in the spool before end
}

// note remembers where the spool ends now, unless a noted end is still
// ahead of the cursor. Called by Run only.
func (l *Logger) note() {
	if l.watermarks == nil || l.mark != nil {
		return
	}
	at := l.now()
	l.floor.Store(at.UnixNano())   // before reading what is in flight: an event added after that sees it (after)
	claim := l.inflight.oldest(at) // before reading the end: what is appended after it was in flight, or received later
	l.mark = &spoolMark{end: l.spool.End(), claim: claim}
}

// after moves *t, the time of an event just added in flight, to just after
// the latest note when it is not after it. The caller took *t before adding
// the event, so a note in between missed it (it was not yet in flight, and
// may be appended after the end the note read) and may claim everything
// before the note's time in Kafka; moved after that time, the event is not
// in the claim, and the next note, which sees it in flight or in the spool,
// waits for it. Events are stored in ms, hence the ms after.
func (l *Logger) after(t *time.Time) {
	if f := l.floor.Load(); f != 0 && t.UnixNano() <= f {
		*t = time.Unix(0, f).Truncate(time.Millisecond).Add(time.Millisecond).In(t.Location())
	}
}

// reached moves the claim when the cursor has passed the noted end, and
// sends it when it is time. Called by Run only, after Kafka acknowledged
// everything before cur.
func (l *Logger) reached(ctx context.Context, cur Position) {
	if l.watermarks == nil {
		return
	}
	if l.mark != nil && !cur.less(l.mark.end) {
		if l.mark.claim.After(l.through) {
			l.through = l.mark.claim
		}
		l.mark = nil
	}
	now := l.now()
	if l.through.IsZero() || now.Sub(l.sentAt) < l.every {
		return
	}
	l.sentAt = now
	v, err := json.Marshal(flywheel.SpoolWatermarkRecord{Schema: flywheel.SchemaVersion,
		Watermark: flywheel.SpoolWatermark{Source: l.source, Through: l.through.UTC(), Sent: now.UTC()}})
	if err != nil {
		l.log.Error("encode the spool watermark", "err", err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := l.watermarks.WriteMessages(wctx, kafka.Message{Key: []byte(l.source), Value: v}); err != nil && ctx.Err() == nil {
		l.log.Debug("spool watermark not sent; trying again", "err", err)
	}
}
