package serve

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/deploy"
)

// window counts one live version's requests, 5xx answers and latencies on
// this replica since the last guardrail check. Recording is lock-free.
type window struct {
	count, errors atomic.Int64
	buckets       [latencyBuckets]atomic.Int64
}

// Latency buckets grow by √2 from 50µs: bucket i holds latencies up to
// 50µs·2^(i/2); the last one holds everything above.
const latencyBuckets = 48

func bucketUpper(i int) time.Duration {
	return time.Duration(50e3 * math.Pow(2, float64(i)/2))
}

func (w *window) record(failed bool, d time.Duration) {
	w.count.Add(1)
	if failed {
		w.errors.Add(1)
	}
	i := 0
	if d > 50*time.Microsecond {
		i = int(math.Ceil(2 * math.Log2(float64(d)/50e3)))
	}
	w.buckets[min(i, latencyBuckets-1)].Add(1)
}

// p99 returns an upper bound of the 99th percentile latency in the window.
func (w *window) p99() time.Duration {
	n := w.count.Load()
	need := n - n/100
	var seen int64
	for i := range w.buckets {
		seen += w.buckets[i].Load()
		if seen >= need {
			return bucketUpper(i)
		}
	}
	return bucketUpper(latencyBuckets - 1)
}

// breach returns why w breaks g, or "" when it does not (or holds too few
// requests to tell).
func breach(g flywheel.Guardrails, w *window) string {
	n := w.count.Load()
	if n == 0 || n < int64(g.MinRequests) {
		return ""
	}
	if rate := float64(w.errors.Load()) / float64(n); g.MaxErrorRate > 0 && rate > g.MaxErrorRate {
		return fmt.Sprintf("guardrail max_error_rate %.4f: %d of %d requests failed (%.4f) on one replica", g.MaxErrorRate, w.errors.Load(), n, rate)
	}
	if p := w.p99(); g.MaxP99Ms > 0 && float64(p)/1e6 > g.MaxP99Ms {
		return fmt.Sprintf("guardrail max_p99_ms %.1f: p99 latency %.1f ms over %d requests on one replica", g.MaxP99Ms, float64(p)/1e6, n)
	}
	return ""
}

// checkGuardrails closes the current window of every canary, and of every
// champion still within its watch period (canary.duration after it replaced
// another version here), and demotes a version whose window breaks its
// guardrails.
func (s *Server) checkGuardrails(ctx context.Context) {
	for name, h := range s.models {
		for _, l := range []*live{h.canary.Load(), h.ptr.Load()} {
			if l == nil {
				continue
			}
			w := l.win.Swap(&window{})
			if l != h.canary.Load() && (!l.replaced || s.now().Sub(l.loadedAt) > h.cfg.Promote.Canary.Duration) {
				continue // a settled champion: its latency says more about load than about the version
			}
			why := breach(h.cfg.Guardrails, w)
			if why == "" {
				continue
			}
			s.metrics.guardrails.WithLabelValues(name).Inc()
			if s.admin.Demote == nil {
				s.log.Error("a live version breaks its guardrails but this server cannot demote it", "model", name, "version", l.version, "reason", why)
				continue
			}
			s.log.Warn("demoting a version that breaks its guardrails", "model", name, "version", l.version, "reason", why)
			if err := s.admin.Demote(ctx, name, l.version, deploy.ActorGuardrail, why); err != nil {
				s.log.Warn("demote failed", "model", name, "version", l.version, "err", err)
			}
			if _, err := s.Swap(ctx, name); err != nil {
				s.log.Warn("swap after demotion failed", "model", name, "err", err)
			}
		}
	}
}
