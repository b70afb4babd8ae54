package retrain

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/deploy"
	"github.com/flywheel-dev/flywheel/kafka"
)

// countingRegistry counts scheduled runs (each starts by asking for the
// champion) and can panic on its first call.
type countingRegistry struct {
	calls      atomic.Int64
	panicFirst atomic.Bool
}

func (c *countingRegistry) Champion(context.Context, string) (int, []byte, error) {
	c.calls.Add(1)
	if c.panicFirst.CompareAndSwap(true, false) {
		panic("boom")
	}
	return 0, nil, errors.New("no champion in this test")
}
func (c *countingRegistry) Get(context.Context, string, int) (*deploy.Version, error) {
	return nil, nil
}
func (c *countingRegistry) Latest(context.Context, string) (int, error) { return 0, nil }
func (c *countingRegistry) Register(context.Context, string, string, []byte, any, any) (int, error) {
	return 0, nil
}
func (c *countingRegistry) Promote(context.Context, string, int, string, string) error { return nil }
func (c *countingRegistry) Alias(context.Context, string, string) (int, error)         { return 0, nil }
func (c *countingRegistry) StartCanary(context.Context, string, int, string, string) error {
	return nil
}

func testServices(t *testing.T) (kafka.Config, clickhouse.Config) {
	t.Helper()
	k, c := os.Getenv("FLYWHEEL_TEST_KAFKA"), os.Getenv("FLYWHEEL_TEST_CLICKHOUSE")
	if k == "" || c == "" {
		t.Fatal("FLYWHEEL_TEST_KAFKA and FLYWHEEL_TEST_CLICKHOUSE must be set: run `make test`")
	}
	return kafka.Config{Brokers: strings.Split(k, ","), TopicPrefix: fmt.Sprintf("elect%d.", time.Now().UnixNano())},
		clickhouse.Config{DSN: "clickhouse://" + c + "/default"}
}

// Two schedulers against one Kafka cluster run each scheduled job once: only
// the elected one runs it; when it stops, the other takes over. A panic in a
// run leaves the scheduler running.
func TestTwoSchedulersRunAJobOnce(t *testing.T) {
	kcfg, ccfg := testServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, kcfg); err != nil {
		t.Fatal(err)
	}
	conn, err := clickhouse.Open(ctx, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Retrain: flywheel.RetrainConfig{Schedule: "@every 1s"}}.WithDefaults()
	type sched struct {
		reg  *countingRegistry
		el   *Elector
		stop context.CancelFunc
		done chan struct{}
	}
	var s [2]*sched
	for i := range s {
		reg := &countingRegistry{}
		reg.panicFirst.Store(true)
		rt, err := New(map[string]flywheel.ModelConfig{"m": mc}, conn, "default", reg, "test", nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		el, err := NewElector(kcfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		rt.ElectWith(el)
		sctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); go el.Run(sctx); rt.Schedule(sctx) }()
		s[i] = &sched{reg: reg, el: el, stop: stop, done: done}
	}
	defer func() {
		for _, x := range s {
			x.stop()
			<-x.done
		}
	}()
	leaders := func() (n, idx int) {
		for i, x := range s {
			if x.el.IsLeader() {
				n, idx = n+1, i
			}
		}
		return n, idx
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	wait("one leader", func() bool { n, _ := leaders(); return n == 1 })
	_, li := leaders()
	time.Sleep(1500 * time.Millisecond) // the leader's first run panics; the scheduler must go on
	before := [2]int64{s[0].reg.calls.Load(), s[1].reg.calls.Load()}
	time.Sleep(5 * time.Second)
	after := [2]int64{s[0].reg.calls.Load(), s[1].reg.calls.Load()}
	runsLeader, runsOther := after[li]-before[li], after[1-li]-before[1-li]
	t.Logf("in 5 s: leader ran %d times, the other %d", runsLeader, runsOther)
	if n, _ := leaders(); n != 1 || runsOther != 0 || runsLeader < 3 || runsLeader > 6 {
		t.Fatalf("%d leaders; leader ran %d times, the other %d", n, runsLeader, runsOther)
	}
	start := time.Now()
	s[li].stop()
	<-s[li].done
	wait("the other scheduler to take over", func() bool { return s[1-li].el.IsLeader() })
	took := time.Since(start)
	base := s[1-li].reg.calls.Load()
	wait("the new leader to run the schedule", func() bool { return s[1-li].reg.calls.Load() > base })
	t.Logf("the other scheduler took over %.1fs after the leader stopped", took.Seconds())
}
