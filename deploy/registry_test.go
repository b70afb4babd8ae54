package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/kafka"
	"github.com/flywheel-dev/flywheel/model"
)

type fakePublisher struct {
	mu     sync.Mutex
	events []flywheel.ModelEvent
}

func (f *fakePublisher) Publish(_ context.Context, e flywheel.ModelEvent) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, e)
	return nil
}

var (
	_ RegistryStore = (*clickhouse.Registry)(nil)
	_ Publisher     = (*kafka.EventPublisher)(nil)
	_ Leader        = (*kafka.Elector)(nil)
)

// testDB is the database behind a test's registry, for writing fixtures
// and tampering behind the registry's back.
type testDB struct {
	conn driver.Conn
	name string
}

func mustRegistry(t *testing.T) (*Registry, *fakePublisher, testDB) {
	t.Helper()
	addr := os.Getenv("FLYWHEEL_TEST_CLICKHOUSE")
	if addr == "" {
		t.Fatal("FLYWHEEL_TEST_CLICKHOUSE is not set: run `make test`, which starts ClickHouse")
	}
	ctx := context.Background()
	cfg := clickhouse.Config{DSN: fmt.Sprintf("clickhouse://%s/reg_%d", addr, time.Now().UnixNano())}
	if err := clickhouse.Migrate(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	conn, err := clickhouse.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.Database())
		conn.Close()
	})
	// The tests write decisions and feedback directly, as a caught-up
	// ingest would: a feedback watermark past everything leaves closing to
	// the reward windows alone.
	if err := clickhouse.NewInserts(conn, cfg.Database()).WriteWatermark(ctx, clickhouse.Watermark{Stream: clickhouse.StreamFeedback,
		Topic: "test", Partitions: 1, Through: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	pub := &fakePublisher{}
	r, err := NewRegistry(clickhouse.NewRegistry(conn, cfg.Database()), pub, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r, pub, testDB{conn: conn, name: cfg.Database()}
}

func TestRegistryLifecycle(t *testing.T) {
	r, pub, _ := mustRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}}}.WithDefaults()
	for i := 0; i < 2; i++ { // twice: bootstrapping is idempotent
		if err := r.Bootstrap(ctx, "homepage", mc); err != nil {
			t.Fatal(err)
		}
	}
	v, art, err := r.Champion(ctx, "homepage")
	if err != nil || v != 1 {
		t.Fatalf("champion after bootstrap: v%d, %v", v, err)
	}
	if _, err := model.Decode(art); err != nil {
		t.Fatalf("bootstrap artifact: %v", err)
	}
	m, _ := model.FromConfig(mc)
	art2, _ := m.MarshalBinary()
	v2, err := r.Register(ctx, "homepage", mc.Kind, append(art2[:0:0], art2...), map[string]int{"rows": 5}, nil)
	if err != nil || v2 != 2 {
		t.Fatalf("register: v%d, %v", v2, err)
	}
	if err := r.Promote(ctx, "homepage", 2, "test", "better"); err != nil {
		t.Fatal(err)
	}
	if err := r.Promote(ctx, "homepage", 9, "test", "no such"); flywheel.ErrorCode(err) != flywheel.ENOTFOUND {
		t.Fatalf("promote a missing version: %v", err)
	}
	back, err := r.Rollback(ctx, "homepage", "test", "worse online")
	if err != nil || back != 1 {
		t.Fatalf("rollback: v%d, %v", back, err)
	}
	v, art, _ = r.Champion(ctx, "homepage")
	first, _ := r.Get(ctx, "homepage", 1)
	if v != 1 || string(art) != string(first.Artifact) {
		t.Fatalf("rollback restored v%d, artifact equal: %v", v, string(art) == string(first.Artifact))
	}
	hist, err := r.History(ctx, "homepage")
	if err != nil || len(hist) < 3 || hist[0].Reason != "worse online" || hist[0].PreviousVersion != 2 {
		t.Fatalf("history %+v, %v", hist, err)
	}
	var types []string
	for _, e := range pub.events {
		types = append(types, e.Type)
	}
	if got := fmt.Sprint(types); got != "[promoted registered promoted rolled_back]" {
		t.Fatalf("model events %s", got)
	}
}

func TestRegistryRefusesTamperedArtifact(t *testing.T) {
	r, _, db := mustRegistry(t)
	ctx := context.Background()
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker}.WithDefaults()
	if err := r.Bootstrap(ctx, "m", mc); err != nil {
		t.Fatal(err)
	}
	// Overwrite version 1's bytes behind the registry's back.
	if err := db.conn.Exec(ctx, "ALTER TABLE "+db.name+".models UPDATE artifact = 'garbage' WHERE name = 'm'"); err != nil {
		t.Fatalf("tamper with the artifact: %v", err)
	}
	// The mutation is applied in the background.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, _, err := r.Champion(ctx, "m")
		if errors.Is(err, model.ErrCorrupt) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tampered artifact served: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A canary is started, served, and ends when it becomes the champion.
func TestRegistryCanary(t *testing.T) {
	r, pub, _ := mustRegistry(t)
	ctx := context.Background()
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker}.WithDefaults()
	if err := r.Bootstrap(ctx, "m", mc); err != nil {
		t.Fatal(err)
	}
	if v, _, err := r.Canary(ctx, "m"); err != nil || v != 0 {
		t.Fatalf("canary before any: v%d, %v", v, err)
	}
	if err := r.StartCanary(ctx, "m", 1, "t", "x"); flywheel.ErrorCode(err) != flywheel.ECONFLICT {
		t.Fatalf("the champion as canary: %v", err)
	}
	m, _ := model.FromConfig(mc)
	art, _ := m.MarshalBinary()
	if _, err := r.Register(ctx, "m", mc.Kind, art, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.StartCanary(ctx, "m", 2, "t", "try it"); err != nil {
		t.Fatal(err)
	}
	if v, a, err := r.Canary(ctx, "m"); err != nil || v != 2 || string(a) != string(art) {
		t.Fatalf("canary: v%d, %v", v, err)
	}
	if err := r.Promote(ctx, "m", 2, "t", "good"); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := r.Canary(ctx, "m"); v != 0 {
		t.Fatalf("canary after its promotion: v%d", v)
	}
	if err := r.EndCanary(ctx, "m", "t", "x"); flywheel.ErrorCode(err) != flywheel.ECONFLICT {
		t.Fatalf("ending no canary: %v", err)
	}
	last := pub.events[len(pub.events)-1]
	if last.Type != flywheel.EventCanaryEnded || last.Alias != Canary {
		t.Fatalf("last event %+v", last)
	}
}
