package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/internal/testenv"
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

// countingStore counts the claims its registry lost to another writer.
type countingStore struct {
	*clickhouse.Registry
	lost atomic.Int64
}

func (c *countingStore) Claim(ctx context.Context, what, name string, n uint64) (bool, error) {
	ok, err := c.Registry.Claim(ctx, what, name, n)
	if err == nil && !ok {
		c.lost.Add(1)
	}
	return ok, err
}

// mustWriter is another registry writer on db's tables, with its own
// connection, as another process would have.
func mustWriter(t *testing.T, db testDB) (*Registry, *countingStore) {
	t.Helper()
	cfg := clickhouse.Config{DSN: fmt.Sprintf("clickhouse://%s/%s", os.Getenv("FLYWHEEL_TEST_CLICKHOUSE"), db.name)}
	conn, err := clickhouse.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	store := &countingStore{Registry: clickhouse.NewRegistry(conn, db.name)}
	r, err := NewRegistry(store, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r, store
}

// Two writers, each with its own connection, register and promote at the
// same time, many times: every version is stored once, the numbers have no
// gap, the alias history is ordered by seq without a gap or a tie, and each
// move's previous version is the one the move before it left (no move was
// decided on a state another had changed).
func TestRegistryManyWriters(t *testing.T) {
	_, _, db := mustRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker}.WithDefaults()
	m, _ := model.FromConfig(mc)
	art, _ := m.MarshalBinary()
	const writers, each = 2, 100
	var regs []*Registry
	var stores []*countingStore
	for len(regs) < writers {
		r, s := mustWriter(t, db)
		regs, stores = append(regs, r), append(stores, s)
	}
	r0 := regs[0]
	// Bootstrapping at once too: one version 1, one champion move.
	var wg sync.WaitGroup
	errs := make(chan error, writers*each*2)
	for _, r := range regs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- r.Bootstrap(ctx, "m", mc)
		}()
	}
	wg.Wait()
	got := make([][]int, writers)
	for w, r := range regs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				v, err := r.Register(ctx, "m", mc.Kind, art, map[string]int{"writer": w, "i": i}, nil)
				if err != nil {
					errs <- err
					return
				}
				got[w] = append(got[w], v)
				if err := r.Promote(ctx, "m", v, fmt.Sprint("writer", w), "test"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	seen := map[int]int{}
	for w, vs := range got {
		for _, v := range vs {
			if o, dup := seen[v]; dup {
				t.Fatalf("v%d returned to writers %d and %d", v, o, w)
			}
			seen[v] = w
		}
	}
	vers, err := r0.Versions(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	if len(vers) != writers*each+1 {
		t.Fatalf("%d versions stored, want %d", len(vers), writers*each+1)
	}
	for i, v := range vers { // newest first
		if want := len(vers) - i; v.Version != want {
			t.Fatalf("versions[%d] is v%d, want v%d: a gap or a duplicate", i, v.Version, want)
		}
		if v.Version > 1 && !bytesEqualManifest(v.Manifest, seen, v.Version) {
			t.Fatalf("v%d's manifest %s is not that of writer %d", v.Version, v.Manifest, seen[v.Version])
		}
	}
	hist, err := r0.History(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != writers*each+1 {
		t.Fatalf("%d moves, want %d (one bootstrap and one per promotion)", len(hist), writers*each+1)
	}
	prev := 0
	for i := len(hist) - 1; i >= 0; i-- { // oldest first
		d := hist[i]
		if want := uint64(len(hist) - i); d.Seq != want {
			t.Fatalf("move %d has seq %d, want %d", len(hist)-i, d.Seq, want)
		}
		if d.PreviousVersion != prev {
			t.Fatalf("move seq %d to v%d says the champion was v%d, but it was v%d", d.Seq, d.Version, d.PreviousVersion, prev)
		}
		prev = d.Version
	}
	var claims uint64
	if err := db.conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND startsWith(name, 'registry_claim_')", db.name).Scan(&claims); err != nil || claims != 0 {
		t.Fatalf("%d claims left behind (%v)", claims, err)
	}
	var lost int64
	for _, s := range stores {
		lost += s.lost.Load()
	}
	t.Logf("%d writers × %d registrations and promotions: %d unique versions, gapless; %d moves, seq 1..%d without a gap, each on the state before it; %d claims lost to the other writer and retried",
		writers, each, len(vers), len(hist), len(hist), lost)
}

func bytesEqualManifest(man []byte, writer map[int]int, v int) bool {
	var m map[string]int
	if err := json.Unmarshal(man, &m); err != nil {
		return false
	}
	return m["writer"] == writer[v]
}

// Rollbacks walk back: after v1, v2, v3 the first goes to v2, the second to
// v1, a third has nowhere to go; promoting again starts from there.
func TestRegistryRollbackWalksBack(t *testing.T) {
	r, pub, _ := mustRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker}.WithDefaults()
	if err := r.Bootstrap(ctx, "m", mc); err != nil {
		t.Fatal(err)
	}
	m, _ := model.FromConfig(mc)
	art, _ := m.MarshalBinary()
	for want := 2; want <= 4; want++ {
		v, err := r.Register(ctx, "m", mc.Kind, art, nil, nil)
		if err != nil || v != want {
			t.Fatalf("register: v%d, %v", v, err)
		}
	}
	champion := func() int {
		t.Helper()
		v, err := r.Alias(ctx, "m", Champion)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	rollback := func(want int) {
		t.Helper()
		v, err := r.Rollback(ctx, "m", "t", "worse")
		if want == 0 {
			if flywheel.ErrorCode(err) != flywheel.ECONFLICT {
				t.Fatalf("rollback with nothing before: v%d, %v", v, err)
			}
			return
		}
		if err != nil || v != want || champion() != want {
			t.Fatalf("rollback: v%d (champion v%d), %v; want v%d", v, champion(), err, want)
		}
	}
	for _, v := range []int{2, 3} {
		if err := r.Promote(ctx, "m", v, "t", "better"); err != nil {
			t.Fatal(err)
		}
	}
	rollback(2)
	rollback(1) // not v3 again
	rollback(0)
	// Promoting the same version twice: a rollback skips the repeat.
	for _, v := range []int{4, 4} {
		if err := r.Promote(ctx, "m", v, "t", "again"); err != nil {
			t.Fatal(err)
		}
	}
	rollback(1)
	// Rollback through Demote, twice at once from two replicas: one does it.
	if err := r.Promote(ctx, "m", 3, "t", "x"); err != nil {
		t.Fatal(err)
	}
	if err := r.Promote(ctx, "m", 4, "t", "y"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = r.Demote(ctx, "m", 4, "guardrail", "errors") }()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) || champion() != 3 {
		t.Fatalf("two demotions of v4 at once: %v, %v; champion v%d, want v3", errs[0], errs[1], champion())
	}
	hist, _ := r.History(ctx, "m")
	var order []string
	for i := len(hist) - 1; i >= 0; i-- {
		order = append(order, fmt.Sprintf("%d:v%d", hist[i].Seq, hist[i].Version))
	}
	if got := fmt.Sprint(order); got != "[1:v1 2:v2 3:v3 4:v2 5:v1 6:v4 7:v4 8:v1 9:v3 10:v4 11:v3]" {
		t.Fatalf("history %s", got)
	}
	if n := len(pub.events); n < 11 {
		t.Fatalf("%d model events", n)
	}
}

// A conditional promotion or canary is refused once the aliases moved.
func TestRegistryPromoteFrom(t *testing.T) {
	r, _, _ := mustRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker}.WithDefaults()
	if err := r.Bootstrap(ctx, "m", mc); err != nil {
		t.Fatal(err)
	}
	m, _ := model.FromConfig(mc)
	art, _ := m.MarshalBinary()
	for range 3 {
		if _, err := r.Register(ctx, "m", mc.Kind, art, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.PromoteFrom(ctx, "m", 2, 1, "retrain", "better than v1"); err != nil {
		t.Fatal(err)
	}
	if err := r.PromoteFrom(ctx, "m", 3, 1, "retrain", "better than v1"); flywheel.ErrorCode(err) != flywheel.ECONFLICT || !strings.Contains(err.Error(), "moved from v1 to v2") {
		t.Fatalf("promotion judged against a replaced champion: %v", err)
	}
	if err := r.StartCanaryFrom(ctx, "m", 3, 2, "retrain", "try it"); err != nil {
		t.Fatal(err)
	}
	if err := r.PromoteFrom(ctx, "m", 4, 2, "retrain", "x"); flywheel.ErrorCode(err) != flywheel.ECONFLICT || !strings.Contains(err.Error(), "canary v3") {
		t.Fatalf("promotion beside a canary: %v", err)
	}
	// A version not (yet) registered is waited for, briefly here, then not found.
	defer func(d time.Duration) { registeredWait = d }(registeredWait)
	registeredWait = 300 * time.Millisecond
	began := time.Now()
	if err := r.PromoteFrom(ctx, "m", 9, 2, "retrain", "x"); flywheel.ErrorCode(err) != flywheel.ENOTFOUND || time.Since(began) < registeredWait {
		t.Fatalf("promotion of a missing version: %v", err)
	}
	if c, _ := r.Alias(ctx, "m", Champion); c != 2 {
		t.Fatalf("champion v%d", c)
	}
}

// A writer that dies holding a claim (here: a claim made and never
// written) leaves its number unused: the next registration and the next
// move go past it, and nothing is stored twice.
func TestRegistryClaimOfADeadWriter(t *testing.T) {
	r, _, db := mustRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker}.WithDefaults()
	if err := r.Bootstrap(ctx, "m", mc); err != nil {
		t.Fatal(err)
	}
	dead := clickhouse.NewRegistry(db.conn, db.name)
	if ok, err := dead.Claim(ctx, clickhouse.ClaimVersion, "m", 2); !ok || err != nil {
		t.Fatalf("claim v2: %v, %v", ok, err)
	}
	if ok, err := dead.Claim(ctx, clickhouse.ClaimVersion, "m", 2); ok || err != nil {
		t.Fatalf("v2 claimed twice: %v, %v", ok, err)
	}
	if ok, err := dead.Claim(ctx, clickhouse.ClaimVersion, "m", 1); ok || err != nil {
		t.Fatalf("v1, which is stored, claimed: %v, %v", ok, err)
	}
	m, _ := model.FromConfig(mc)
	art, _ := m.MarshalBinary()
	v, err := r.Register(ctx, "m", mc.Kind, art, nil, nil)
	if err != nil || v != 3 {
		t.Fatalf("register past the dead claim: v%d, %v; want v3", v, err)
	}
	if ok, err := dead.Claim(ctx, clickhouse.ClaimMove, "m", 2); !ok || err != nil {
		t.Fatalf("claim seq 2: %v, %v", ok, err)
	}
	start := time.Now()
	if err := r.Promote(ctx, "m", 3, "t", "past a dead claim"); err != nil {
		t.Fatal(err)
	}
	hist, _ := r.History(ctx, "m")
	if len(hist) != 2 || hist[0].Seq != 3 || hist[0].Version != 3 || hist[0].PreviousVersion != 1 {
		t.Fatalf("history %+v", hist)
	}
	t.Logf("the move waited %v for the dead writer's seq 2, then went past it", time.Since(start).Round(time.Millisecond))
}

// On a ClickHouse cluster (scripts/services.sh cluster-up;
// FLYWHEEL_TEST_CLICKHOUSE_CLUSTER is one node, _CLUSTER_NAME its cluster,
// default flywheel), two writers connected to nodes of different shards
// register and promote at once: the claims are made in ZooKeeper, so the
// versions and the seqs are unique and gapless though each node reads its
// own replica of the registry.
func TestRegistryManyWritersOnCluster(t *testing.T) {
	addr, cluster := testenv.ClickHouseCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	db := fmt.Sprintf("regc_%d", time.Now().UnixNano())
	admin, err := clickhouse.Open(ctx, clickhouse.Config{DSN: "clickhouse://" + addr + "/default", Cluster: cluster})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db+" ON CLUSTER "+cluster); err != nil {
			// ClickHouse 18.16 leaves behind the (empty) data directory of a
			// replicated CREATE it refused, a claim lost in a race; with it
			// the database's directory cannot be removed. On the loopback
			// cluster of scripts/services.sh, remove them.
			dirs, _ := filepath.Glob(filepath.Join(servicesDir(), "clickhouse-cluster", "*", "data", "data", db))
			for _, d := range dirs {
				os.RemoveAll(d)
			}
			t.Logf("drop %s: %v (removed %d data directories left behind)", db, err, len(dirs))
		}
		admin.Close()
	})
	nodes, err := clickhouse.ClusterNodes(ctx, admin, cluster)
	if err != nil || len(nodes) < 3 {
		t.Fatalf("nodes of %s: %v, %v", cluster, nodes, err)
	}
	if err := clickhouse.Migrate(ctx, clickhouse.Config{DSN: "clickhouse://" + addr + "/" + db, Cluster: cluster}); err != nil {
		t.Fatal(err)
	}
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker}.WithDefaults()
	m, _ := model.FromConfig(mc)
	art, _ := m.MarshalBinary()
	const writers, each = 2, 40
	var regs []*Registry
	var stores []*countingStore
	for _, node := range []string{nodes[0], nodes[len(nodes)-1]} { // different shards
		cfg := clickhouse.Config{DSN: "clickhouse://" + node + "/" + db, Cluster: cluster}
		conn, err := clickhouse.Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		s := &countingStore{Registry: clickhouse.NewRegistry(conn, db).WithCluster(cluster)}
		r, err := NewRegistry(s, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		regs, stores = append(regs, r), append(stores, s)
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers*each+writers)
	for _, r := range regs {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- r.Bootstrap(ctx, "m", mc) }()
	}
	wg.Wait()
	got := make([][]int, writers)
	for w, r := range regs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				v, err := r.Register(ctx, "m", mc.Kind, art, map[string]int{"writer": w, "i": i}, nil)
				if err != nil {
					errs <- err
					return
				}
				got[w] = append(got[w], v)
				if err := r.Promote(ctx, "m", v, fmt.Sprint("writer", w), "test"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	seen := map[int]int{}
	for w, vs := range got {
		for _, v := range vs {
			if o, dup := seen[v]; dup {
				t.Fatalf("v%d returned to writers %d and %d", v, o, w)
			}
			seen[v] = w
		}
	}
	// Both nodes' replicas, once replication has caught up.
	for i, r := range regs {
		var vers []Version
		var hist []Deployment
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			vers, _ = r.Versions(ctx, "m")
			hist, _ = r.History(ctx, "m")
			if len(vers) >= writers*each+1 && len(hist) >= writers*each+1 || time.Now().After(deadline) {
				break
			}
		}
		if len(vers) != writers*each+1 {
			t.Fatalf("node %d: %d versions, want %d", i, len(vers), writers*each+1)
		}
		for j, v := range vers {
			if want := len(vers) - j; v.Version != want {
				t.Fatalf("node %d: versions[%d] is v%d, want v%d", i, j, v.Version, want)
			}
			if v.Version > 1 && !bytesEqualManifest(v.Manifest, seen, v.Version) {
				t.Fatalf("node %d: v%d's manifest %s is not that of writer %d", i, v.Version, v.Manifest, seen[v.Version])
			}
		}
		if len(hist) != writers*each+1 {
			t.Fatalf("node %d: %d moves, want %d", i, len(hist), writers*each+1)
		}
		stale := 0
		prev := 0
		for j := len(hist) - 1; j >= 0; j-- {
			d := hist[j]
			if want := uint64(len(hist) - j); d.Seq != want {
				t.Fatalf("node %d: move %d has seq %d", i, len(hist)-j, d.Seq)
			}
			if d.PreviousVersion != prev {
				stale++
			}
			prev = d.Version
		}
		if stale > 0 {
			t.Errorf("node %d: %d moves were decided on a state without the move before them", i, stale)
		}
	}
	var lost int64
	for _, s := range stores {
		lost += s.lost.Load()
	}
	var left uint64
	if err := admin.QueryRow(ctx, "SELECT count() FROM remote('"+strings.Join(nodes, ",")+"', system.tables) WHERE database = ? AND startsWith(name, 'registry_claim_')", db).Scan(&left); err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster: %d writers on two shards × %d registrations and promotions: %d unique versions, gapless, seq 1..%d; %d claims lost and retried; %d claim tables kept (the highest of each kind, on each node)",
		writers, each, writers*each+1, writers*each+1, lost, left)
}

// servicesDir is where scripts/services.sh keeps the services' data
// (FLYWHEEL_SERVICES_DIR, default .services/ in the repository).
func servicesDir() string {
	if d := os.Getenv("FLYWHEEL_SERVICES_DIR"); d != "" {
		return d
	}
	return filepath.Join("..", ".services")
}
