package eventlog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/internal/testenv"
	"github.com/flywheel-dev/flywheel/kafka"
)

// realKafka returns a configuration of the broker named by
// FLYWHEEL_TEST_KAFKA with topics of the test's own, created. make test
// starts the broker and sets it; without it the test fails.
func realKafka(t *testing.T, ctx context.Context) kafka.Config {
	t.Helper()
	cfg := kafka.Config{Brokers: testenv.Kafka(t), TopicPrefix: fmt.Sprintf("spool%d.", time.Now().UnixNano()), Partitions: 2}
	if err := kafka.EnsureTopics(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// mustSmallFS mounts a file system of kib KiB on a new directory: a tmpfs,
// or, where tmpfs cannot be mounted, a loop-mounted ext4 image. It needs
// root, as make test runs in CI.
func mustSmallFS(t *testing.T, kib int) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dk", kib), "tmpfs", dir).CombinedOutput()
	if err != nil {
		img := filepath.Join(t.TempDir(), "fs.img")
		var out2 []byte
		err2 := os.WriteFile(img, nil, 0o600)
		if err2 == nil {
			err2 = os.Truncate(img, int64(kib)<<10)
		}
		for _, args := range [][]string{{"mkfs.ext4", "-q", "-F", "-m", "0", img}, {"mount", "-o", "loop", img, dir}} {
			if err2 != nil {
				break
			}
			out2, err2 = exec.Command(args[0], args[1:]...).CombinedOutput()
		}
		if err2 != nil {
			t.Fatalf("the disk-full test needs a small file system and root to mount it: tmpfs: %v (%s); loop ext4: %v (%s)", err, out, err2, out2)
		}
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v (%s)", dir, err, out)
		}
	})
	return dir
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// mustReadKeys reads both event topics of cfg until every key of want has
// arrived (or ctx ends) and returns how many times each key arrived.
func mustReadKeys(t *testing.T, ctx context.Context, cfg kafka.Config, want map[string]bool) map[string]int {
	t.Helper()
	r := kafka.NewGroupReader(cfg, cfg.TopicPrefix+"check", cfg.Topics().Decisions, cfg.Topics().Feedback)
	defer r.Close()
	seen := map[string]int{}
	missing := len(want)
	for missing > 0 {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("read Kafka: %v; %d acknowledged events never arrived", err, missing)
		}
		k := string(m.Key)
		if want[k] && seen[k] == 0 {
			missing--
		}
		seen[k]++
	}
	return seen
}

// The spool fills (its disk, or serve.spool_max_bytes): events are refused
// with spool_full and a retry delay, Health says why; once there is room
// again (space freed by hand, or shipping releases segments, even while the
// disk is still full) events are taken again, without a restart; every
// event acknowledged reaches Kafka, and the failed writes left no torn
// bytes in the spool.
func TestLoggerSpoolFullRefusesRecoversAndLosesNothing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// setup returns the spool's options and what makes room (run
		// starts shipping)
		setup    func(t *testing.T) (SpoolOptions, func(run func()))
		diskFull bool // the disk fills (write errors), not the cap
	}{
		{name: "disk full, space freed by hand", diskFull: true, setup: func(t *testing.T) (SpoolOptions, func(func())) {
			fs := mustSmallFS(t, 256)
			filler := filepath.Join(fs, "filler")
			if err := os.WriteFile(filler, make([]byte, 64<<10), 0o600); err != nil {
				t.Fatal(err)
			}
			return SpoolOptions{Dir: filepath.Join(fs, "spool"), MaxBytes: 16 << 20, SegmentBytes: 10 << 10},
				func(func()) {
					if err := os.Remove(filler); err != nil {
						t.Fatal(err)
					}
				}
		}},
		{name: "disk full, shipping frees space on the full disk", diskFull: true, setup: func(t *testing.T) (SpoolOptions, func(func())) {
			fs := mustSmallFS(t, 256)
			return SpoolOptions{Dir: filepath.Join(fs, "spool"), MaxBytes: 16 << 20, SegmentBytes: 10 << 10}, func(run func()) { run() }
		}},
		{name: "spool_max_bytes reached, shipping frees room", setup: func(t *testing.T) (SpoolOptions, func(func())) {
			return SpoolOptions{Dir: t.TempDir(), MaxBytes: 96 << 10, SegmentBytes: 8 << 10}, func(run func()) { run() }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cfg := realKafka(t, ctx)
			opts, makeRoom := tc.setup(t)
			clock := &testClock{t: time.Unix(1_700_000_000, 0)}
			opts.Now = clock.Now
			l, err := NewLogger(cfg, opts, prometheus.NewRegistry(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close(5 * time.Second)

			acked := map[string]bool{}
			var nd, nf float64 // acknowledged decisions, feedback
			next := 0
			logOne := func() (string, error) {
				i := next
				next++
				if i%3 == 2 {
					id := fmt.Sprintf("f%05d", i)
					err := l.LogFeedback(ctx, []flywheel.Feedback{{Schema: 1, FeedbackID: id, EventID: id, Time: time.Unix(1_700_000_000, 0), Reward: 1}})
					if err == nil {
						nf++
					}
					return id, err
				}
				id := fmt.Sprintf("d%05d", i)
				d := &flywheel.Decision{Schema: 1, EventID: id, Time: time.Unix(1_700_000_000, 0), Model: "m", Kind: flywheel.KindRanker, Version: 1,
					RawContext: []byte(`{"u":{"pad":"` + strings.Repeat("x", 400) + `"}}`)}
				err := l.LogDecision(ctx, d)
				if err == nil {
					nd++
				}
				return id, err
			}
			// fill logs events until the spool refuses one, and checks how.
			fill := func() {
				t.Helper()
				for range 5000 {
					id, err := logOne()
					if err == nil {
						acked[id] = true
						continue
					}
					var ra interface{ RetryAfter() time.Duration }
					if flywheel.ErrorCode(err) != flywheel.ESPOOLFULL || !errors.As(err, &ra) || ra.RetryAfter() <= 0 {
						t.Fatalf("refused with %v, want %s with a retry delay", err, flywheel.ESPOOLFULL)
					}
					if h := l.Health(); !errors.Is(h, ErrSpoolFull) {
						t.Fatalf("health while full: %v", h)
					}
					return
				}
				t.Fatal("the spool never filled")
			}
			fill()
			// The failed write was cut back off the segment: it holds whole records only.
			if end := l.spool.End(); tc.diskFull {
				fi, err := os.Stat(l.spool.path(end.Seg))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Size() != end.Off {
					t.Fatalf("after a failed write the segment has %d bytes, whole records end at %d", fi.Size(), end.Off)
				}
			}
			nrefused := 1
			for range 3 { // still full: refused and not acknowledged, unless it fits what is left
				id, err := logOne()
				switch {
				case err == nil:
					acked[id] = true
				case flywheel.ErrorCode(err) == flywheel.ESPOOLFULL:
					nrefused++
				default:
					t.Fatalf("a later event while full: %v", err)
				}
			}
			full := len(acked)
			st := l.spool.Stats()
			if tc.diskFull != (st.WriteErrors > 0) {
				t.Fatalf("%d write errors (disk full: %v)", st.WriteErrors, tc.diskFull)
			}
			refused := testutil.ToFloat64(l.failed.WithLabelValues("decision", "full")) + testutil.ToFloat64(l.failed.WithLabelValues("feedback", "full"))
			if int(refused) != nrefused {
				t.Fatalf("%v events counted as refused for a full spool, want %d", refused, nrefused)
			}

			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			running := false
			run := func() {
				running = true
				go func() { done <- l.Run(runCtx) }()
			}
			shippedAll := func() bool {
				return testutil.ToFloat64(l.shipped.WithLabelValues("decision")) >= nd && testutil.ToFloat64(l.shipped.WithLabelValues("feedback")) >= nf
			}
			makeRoom(run)
			waitFor(t, ctx, "health after making room", func() bool {
				clock.Advance(probeEvery) // a failing disk is probed at most once a probeEvery
				// Shipping frees room as it goes: wait until it is done.
				return l.Health() == nil && (!running || shippedAll())
			})
			for range 20 {
				id, err := logOne()
				if err != nil {
					t.Fatalf("an event after room was made: %v", err)
				}
				acked[id] = true
			}
			if !running {
				run()
			}
			waitFor(t, ctx, "shipping every acknowledged event", shippedAll)
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if err := l.Close(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			seen := mustReadKeys(t, ctx, cfg, acked)
			dup := 0
			for k := range acked {
				dup += seen[k] - 1
			}
			// The failed writes were cut back: reopening finds no torn or corrupt bytes.
			s, err := OpenSpool(SpoolOptions{Dir: opts.Dir})
			if err != nil {
				t.Fatal(err)
			}
			start, _ := s.LoadCursor()
			readAll(t, s, start)
			if st := s.Stats(); st.TornBytes != 0 || st.Quarantined != 0 {
				t.Errorf("the spool after the disk-full run: %+v", st)
			}
			s.Close()
			t.Logf("%d events acknowledged until the spool was full, %d refused (%d write errors), %d after room was made; all %d in Kafka (%d twice)",
				full, int(refused), st.WriteErrors, len(acked)-full, len(acked), dup)
		})
	}
}

// A spool with corrupt records in an older segment and in the middle of
// the last one, and a torn tail, opens, keeps taking events and ships every
// valid record to Kafka; the corrupt ones are quarantined and counted.
func TestLoggerShipsPastCorruptSegments(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := realKafka(t, ctx)
	dir := t.TempDir()
	const n = 80
	at := mustFill(t, dir, n, 1500, false)
	k := lastSegMiddle(at)
	flip := func(b []byte) { b[0] ^= 0xFF }
	mustPatch(t, seg(dir, at[7].seg), at[7].off+at[7].n/2, flip)
	mustPatch(t, seg(dir, at[k].seg), at[k].off+at[k].n/2, flip)
	f, err := os.OpenFile(seg(dir, at[n-1].seg), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(appendRecord(nil, Record{Kind: KindFeedback, Key: []byte("torn"), Value: []byte(`{}`)})[:9])
	f.Close()

	reg := prometheus.NewRegistry()
	l, err := NewLogger(cfg, SpoolOptions{Dir: dir, SegmentBytes: 1500}, reg, nil)
	if err != nil {
		t.Fatalf("opening a damaged spool: %v", err)
	}
	defer l.Close(5 * time.Second)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(runCtx) }()
	want := map[string]bool{}
	for i := 0; i < n; i++ {
		if i != 7 && i != k {
			want[strconv.Itoa(i)] = true
		}
	}
	for i := range 10 {
		id := fmt.Sprintf("after%d", i)
		if err := l.LogDecision(ctx, &flywheel.Decision{Schema: 1, EventID: id, Time: time.Now(), Model: "m", Kind: flywheel.KindRanker, Version: 1}); err != nil {
			t.Fatalf("serving after opening a damaged spool: %v", err)
		}
		want[id] = true
	}
	if err := l.Health(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "shipping the valid records", func() bool {
		return testutil.ToFloat64(l.shipped.WithLabelValues("decision"))+testutil.ToFloat64(l.shipped.WithLabelValues("feedback")) >= float64(len(want))
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	seen := mustReadKeys(t, ctx, cfg, want)
	for _, lost := range []int{7, k} {
		if seen[strconv.Itoa(lost)] != 0 {
			t.Errorf("the corrupt record %d reached Kafka", lost)
		}
	}
	metrics, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, m := range metrics {
		if strings.HasPrefix(m.GetName(), "flywheel_spool_") && m.GetMetric()[0].Counter != nil {
			got[m.GetName()] = m.GetMetric()[0].Counter.GetValue()
		}
	}
	if got["flywheel_spool_quarantined_total"] != 2 || got["flywheel_spool_torn_bytes_total"] != 9 {
		t.Errorf("metrics: %v", got)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "quarantine", "*"))
	wantFiles := []string{
		fmt.Sprintf("%012d.spool-%012d.corrupt", at[7].seg, at[7].off),
		fmt.Sprintf("%012d.spool-%012d.corrupt", at[k].seg, at[k].off),
		fmt.Sprintf("%012d.spool-%012d.torn", at[n-1].seg, at[n-1].off+at[n-1].n),
	}
	for i := range files {
		files[i] = filepath.Base(files[i])
	}
	if strings.Join(files, " ") != strings.Join(wantFiles, " ") {
		t.Errorf("quarantine holds %v, want %v", files, wantFiles)
	}
	t.Logf("%d valid records of %d and 10 new events shipped past 2 corrupt records (segments %d and %d) and a torn tail; quarantine: %v; metrics %v",
		n-2, n, at[7].seg, at[k].seg, files, got)
}
