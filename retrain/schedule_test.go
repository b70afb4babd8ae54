package retrain

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/deploy"
	"github.com/flywheel-dev/flywheel/internal/testenv"
	"github.com/flywheel-dev/flywheel/kafka"
)

var _ Leader = (*kafka.Elector)(nil)

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
func (c *countingRegistry) Alias(context.Context, string, string) (int, error) { return 0, nil }
func (c *countingRegistry) PromoteFrom(context.Context, string, int, int, string, string) error {
	return nil
}
func (c *countingRegistry) StartCanaryFrom(context.Context, string, int, int, string, string) error {
	return nil
}

// blockingRegistry's Champion, the first step of a run, blocks until the
// run's context ends, then sends the context's cause on causes.
type blockingRegistry struct {
	countingRegistry
	entered chan struct{} // closed when the first run has started
	once    sync.Once
	causes  chan error
}

func (b *blockingRegistry) Champion(ctx context.Context, _ string) (int, []byte, error) {
	b.calls.Add(1)
	b.once.Do(func() { close(b.entered) })
	<-ctx.Done()
	b.causes <- context.Cause(ctx)
	return 0, nil, ctx.Err()
}

func testServices(t *testing.T) (kafka.Config, clickhouse.Config) {
	t.Helper()
	return kafka.Config{Brokers: testenv.Kafka(t), TopicPrefix: fmt.Sprintf("elect%d.", time.Now().UnixNano())},
		clickhouse.Config{DSN: "clickhouse://" + testenv.ClickHouse(t) + "/default"}
}

// mustElection makes the election topic of kcfg and returns a function that
// starts a member of its election, stopped at the end of the test.
func mustElection(t *testing.T, ctx context.Context, kcfg kafka.Config) func() (el *kafka.Elector, stop func()) {
	t.Helper()
	if err := kafka.EnsureTopics(ctx, kcfg); err != nil {
		t.Fatal(err)
	}
	return func() (*kafka.Elector, func()) {
		t.Helper()
		el, err := kafka.NewElector(kcfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		ectx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); el.Run(ectx) }()
		stop := sync.OnceFunc(func() { cancel(); <-done })
		t.Cleanup(stop)
		return el, stop
	}
}

// mustScheduler starts a scheduler of model "m" (scheduled every second)
// elected by el, stopped at the end of the test; stop waits for its runs.
func mustScheduler(t *testing.T, ctx context.Context, conn driver.Conn, reg Registry, el *kafka.Elector) (stop func()) {
	t.Helper()
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Retrain: flywheel.RetrainConfig{Schedule: "@every 1s"}}.WithDefaults()
	rt, err := New(Options{Models: map[string]flywheel.ModelConfig{"m": mc}, Store: clickhouse.NewTraining(conn, "default"), Registry: reg, CodeVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	rt.ElectWith(el)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); rt.Schedule(sctx) }()
	stop = sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(stop)
	return stop
}

// waitFor waits up to d for cond, or fails the test.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two schedulers against one Kafka cluster run each scheduled job once: only
// the elected one runs it, and the other takes over when it stops. A panic in
// a run leaves the scheduler running.
func TestTwoSchedulersRunAJobOnce(t *testing.T) {
	kcfg, ccfg := testServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	member := mustElection(t, ctx, kcfg)
	conn, err := clickhouse.Open(ctx, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	type sched struct {
		reg  *countingRegistry
		el   *kafka.Elector
		stop func()
	}
	var s [2]sched
	for i := range s {
		s[i].reg = &countingRegistry{}
		s[i].reg.panicFirst.Store(true)
		var stopEl func()
		s[i].el, stopEl = member()
		stopSched := mustScheduler(t, ctx, conn, s[i].reg, s[i].el)
		s[i].stop = func() { stopSched(); stopEl() }
	}
	waitFor(t, 30*time.Second, "both schedulers in one generation, one of them leading", func() bool {
		g := s[0].el.Generation()
		return g > 0 && g == s[1].el.Generation() && s[0].el.IsLeader() != s[1].el.IsLeader()
	})
	li := 0
	if s[1].el.IsLeader() {
		li = 1
	}
	leader, other := s[li], s[1-li]
	term, done, ok := leader.el.Lead(ctx)
	defer done()
	if !ok {
		t.Fatalf("the leader stopped leading: %v", context.Cause(term))
	}
	// Its first run panics; the scheduler goes on.
	waitFor(t, 30*time.Second, "three runs of the leader", func() bool { return leader.reg.calls.Load() >= 3 })
	if err := term.Err(); err != nil {
		t.Fatalf("the leadership moved: %v", context.Cause(term))
	}
	if n := other.reg.calls.Load(); n != 0 || other.el.IsLeader() {
		t.Fatalf("the other scheduler ran %d times (leads: %v); the leader ran %d times", n, other.el.IsLeader(), leader.reg.calls.Load())
	}
	start := time.Now()
	leader.stop()
	ran := leader.reg.calls.Load()
	waitFor(t, 30*time.Second, "the other scheduler to take over", other.el.IsLeader)
	took := time.Since(start)
	// Its first run panics too.
	waitFor(t, 30*time.Second, "two runs of the new leader", func() bool { return other.reg.calls.Load() >= 2 })
	if n := leader.reg.calls.Load(); n != ran {
		t.Fatalf("the stopped scheduler ran %d more times", n-ran)
	}
	t.Logf("the other scheduler took over %.1fs after the leader stopped", took.Seconds())
}

// A scheduled run in progress is cancelled, with cause kafka.ErrNotLeader,
// when its process stops leading (here its election stops); the scheduler
// then runs nothing more.
func TestSchedulerRunIsCancelledWhenLeadershipIsLost(t *testing.T) {
	kcfg, ccfg := testServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	member := mustElection(t, ctx, kcfg)
	conn, err := clickhouse.Open(ctx, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	reg := &blockingRegistry{entered: make(chan struct{}), causes: make(chan error, 1)}
	el, stopElection := member()
	stopSched := mustScheduler(t, ctx, conn, reg, el)
	select {
	case <-reg.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("timed out waiting for a scheduled run")
	}
	stopElection()
	select {
	case cause := <-reg.causes:
		if !errors.Is(cause, kafka.ErrNotLeader) {
			t.Fatalf("the run's context ended with %v, want %v", cause, kafka.ErrNotLeader)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the run in progress went on after its process stopped leading")
	}
	stopSched()
	if n := reg.calls.Load(); n != 1 {
		t.Fatalf("%d runs, want 1: the scheduler ran without the leadership", n)
	}
}

// namedRegistry counts the runs of each model (each starts by asking for
// the champion).
type namedRegistry struct {
	countingRegistry
	mu   sync.Mutex
	runs map[string]int
}

func (n *namedRegistry) Champion(_ context.Context, name string) (int, []byte, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.runs[name]++
	return 0, nil, errors.New("no champion in this test")
}

func (n *namedRegistry) count(name string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.runs[name]
}

// A model scheduled "manual" is never run by the scheduler, while another
// model of the same scheduler runs on its schedule; a bad spec is refused
// naming the field.
func TestManualScheduleRunsNothingByItself(t *testing.T) {
	if err := ParseSchedule("models.m.retrain.schedule", ScheduleManual); err != nil {
		t.Fatalf("manual refused: %v", err)
	}
	if err := ParseSchedule("models.m.retrain.schedule", "manually"); err == nil || !strings.Contains(err.Error(), "models.m.retrain.schedule") {
		t.Fatalf("a bad spec gives %v; want an error naming the field", err)
	}
	reg := &namedRegistry{runs: map[string]int{}}
	models := map[string]flywheel.ModelConfig{
		"auto":  flywheel.ModelConfig{Kind: flywheel.KindRanker, Retrain: flywheel.RetrainConfig{Schedule: "@every 1s"}}.WithDefaults(),
		"asked": flywheel.ModelConfig{Kind: flywheel.KindRanker, Retrain: flywheel.RetrainConfig{Schedule: ScheduleManual}}.WithDefaults(),
	}
	rt, err := New(Options{Models: models, Store: clickhouse.NewTraining(nil, "default"), Registry: reg, CodeVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rt.Schedule(ctx) }()
	waitFor(t, 10*time.Second, "two scheduled runs of auto", func() bool { return reg.count("auto") >= 2 })
	cancel()
	<-done
	if n := reg.count("asked"); n != 0 {
		t.Fatalf("the manual model ran %d times by itself; auto ran %d", n, reg.count("auto"))
	}
}
