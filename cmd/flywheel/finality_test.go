package main

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel/clickhouse"
)

// finality watches, while a test drives the loop, that a closed example
// never changes: every poll reads the model's examples, and an event id
// seen before with another reward (or feedback count) is a change. A
// closed decision is trained on and judged as it is, so feedback reaching
// ClickHouse after the decision closed is a bug of the watermarks.
type finality struct {
	t       *testing.T
	d       *devEnv
	model   string
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	seen    map[string]closedExample
	changes []string
	polls   int
	marks   []string // per poll: the watermarks it read
}

type closedExample struct {
	reward float64
	count  uint64
}

// watchFinality starts polling d's examples of model every interval until
// check is called.
func watchFinality(t *testing.T, d *devEnv, model string, interval time.Duration) *finality {
	f := &finality{t: t, d: d, model: model, stop: make(chan struct{}), done: make(chan struct{}), seen: map[string]closedExample{}}
	go func() {
		defer close(f.done)
		for {
			f.poll()
			select {
			case <-f.stop:
				f.poll()
				return
			case <-d.ctx.Done():
				return
			case <-time.After(interval):
			}
		}
	}()
	return f
}

func (f *finality) poll() {
	ctx, cancel := context.WithTimeout(f.d.ctx, 20*time.Second)
	defer cancel()
	var kafkaMs, spoolMs uint64
	if err := f.d.conn.QueryRow(ctx, "SELECT (SELECT max(through_ms) FROM "+f.d.db+".ingest_watermarks WHERE stream = 'feedback'), "+
		"(SELECT if(count() = 0, toUInt64(0), toUInt64(min(through))) FROM (SELECT source, max(through_ms) AS through, max(valid_until_ms) AS valid_until FROM "+
		f.d.db+".spool_watermarks GROUP BY source) AS sw WHERE valid_until >= toUInt64(toUInt32(now())) * 1000)").Scan(&kafkaMs, &spoolMs); err != nil {
		f.t.Logf("finality poll: %v", err)
	}
	// The view, as analysts read it, and the bounded read training, the
	// judge and the dashboard make.
	view, err := f.readView(ctx)
	if err != nil {
		if f.d.ctx.Err() == nil {
			f.t.Logf("finality poll of the view: %v", err)
		}
		return
	}
	bounded := map[string]closedExample{}
	err = clickhouse.NewTraining(f.d.conn, f.d.db).Rankers(ctx, f.model, 0, math.MaxUint64, func(scan func(dst ...any) error) error {
		var id, ctxJSON, actsJSON, keys string
		var ts uint64
		var ver uint32
		var probs []float64
		var chosen uint16
		var e closedExample
		if err := scan(&id, &ts, &ver, &ctxJSON, &actsJSON, &keys, &probs, &chosen, &e.reward, &e.count); err != nil {
			return err
		}
		bounded["bounded "+id] = e
		return nil
	})
	if err != nil {
		if f.d.ctx.Err() == nil {
			f.t.Logf("finality poll of the bounded read: %v", err)
		}
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.polls++
	f.marks = append(f.marks, fmt.Sprintf("poll %d at %d: kafka %d spool %d", f.polls, time.Now().UnixMilli(), kafkaMs, spoolMs))
	for _, now := range []map[string]closedExample{view, bounded} {
		for id, e := range now {
			if was, ok := f.seen[id]; ok && was != e {
				f.changes = append(f.changes, fmt.Sprintf("%s: reward %g on %d feedback, then %g on %d (poll %d)", id, was.reward, was.count, e.reward, e.count, f.polls))
			}
			f.seen[id] = e
		}
	}
	for id := range f.seen {
		_, inView := view[id]
		_, inBounded := bounded[id]
		if !inView && !inBounded {
			f.changes = append(f.changes, fmt.Sprintf("%s: closed, then gone (poll %d)", id, f.polls))
			delete(f.seen, id)
		}
	}
}

// readView reads the model's examples from the view, by event id.
func (f *finality) readView(ctx context.Context) (map[string]closedExample, error) {
	rows, err := f.d.conn.Query(ctx, "SELECT event_id, reward, feedback_count FROM "+f.d.db+".examples WHERE model = ?", f.model)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]closedExample{}
	for rows.Next() {
		var id string
		var e closedExample
		if err := rows.Scan(&id, &e.reward, &e.count); err != nil {
			return nil, err
		}
		out[id] = e
	}
	return out, rows.Err()
}

// check stops the watch and fails the test if any closed example changed.
func (f *finality) check() {
	f.t.Helper()
	close(f.stop)
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t.Logf("finality: %d closed examples watched (in the view and the bounded read) over %d polls, %d changed", len(f.seen)/2, f.polls, len(f.changes))
	if len(f.changes) > 0 {
		n := min(len(f.changes), 10)
		f.t.Errorf("%d closed examples changed after they closed; the first %d:\n%v", len(f.changes), n, f.changes[:n])
		for _, m := range f.marks {
			f.t.Log(m)
		}
		f.explain()
	}
}

// explain logs, for the first changed examples, their decision's deadline
// and their feedback's times.
func (f *finality) explain() {
	for _, c := range f.changes[:min(len(f.changes), 5)] {
		id, _, _ := strings.Cut(strings.TrimPrefix(c, "bounded "), ":")
		rows, err := f.d.conn.Query(f.d.ctx, "SELECT d.ts_ms + d.reward_window_s * 1000, d.ingested_at, f.ts_ms, f.ingested_at, f.feedback_id FROM "+
			f.d.db+".feedback AS f ALL INNER JOIN (SELECT event_id, ts_ms, reward_window_s, ingested_at FROM "+f.d.db+".decisions WHERE model = ?) AS d USING event_id WHERE event_id = ?", f.model, id)
		if err != nil {
			f.t.Log(err)
			continue
		}
		for rows.Next() {
			var deadline, fts uint64
			var din, fin time.Time
			var fid string
			if err := rows.Scan(&deadline, &din, &fts, &fin, &fid); err == nil {
				f.t.Logf("%s: deadline %d, decision ingested %s; feedback %s at %d ingested %s", id, deadline, din.Format(time.TimeOnly), fid, fts, fin.Format(time.TimeOnly))
			}
		}
		rows.Close()
	}
}
