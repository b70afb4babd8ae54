package eventlog

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a Logger's: its own counters, and its spool's figures read
// when scraped.
type metrics struct {
	spooled  *prometheus.CounterVec
	shipped  *prometheus.CounterVec
	failed   *prometheus.CounterVec // by kind and reason (full, error)
	errors   prometheus.Counter
	replayed prometheus.Counter
	pending  prometheus.Gauge
	batchSec prometheus.Histogram
}

// newMetrics builds the metrics of a Logger of sp and registers them, with
// sp's, with reg (nil: they are not registered), or returns the error of
// registering one.
func newMetrics(reg prometheus.Registerer, sp *Spool) (metrics, error) {
	stat := func(f func(SpoolStats) int64) func() float64 {
		return func() float64 { return float64(f(sp.Stats())) }
	}
	m := metrics{
		spooled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_events_spooled_total", Help: "Events appended to the local spool, by kind (decision, feedback).",
		}, []string{"kind"}),
		shipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_events_shipped_total", Help: "Events acknowledged by Kafka, by kind.",
		}, []string{"kind"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_events_refused_total", Help: "Events the spool could not take, by kind and reason (full: at serve.spool_max_bytes or the disk is full; error: another disk error); the request was answered with an error, so nothing was acknowledged and lost.",
		}, []string{"kind", "reason"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flywheel_kafka_write_errors_total", Help: "Failed attempts to ship a spool batch to Kafka (retried).",
		}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flywheel_spool_replayed_total", Help: "Events shipped late: after a failed attempt, or left in the spool by an earlier run.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flywheel_spool_pending_bytes", Help: "Bytes in the spool not yet acknowledged by Kafka.",
		}),
		batchSec: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flywheel_spool_ship_seconds", Help: "Time to ship one spool batch to Kafka.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
	spoolMetrics := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flywheel_spool_bytes", Help: "Bytes of the spool's segment files on disk (what serve.spool_max_bytes caps).",
		}, stat(func(s SpoolStats) int64 { return s.Bytes })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flywheel_spool_max_bytes", Help: "The spool's size cap (serve.spool_max_bytes).",
		}, func() float64 { return float64(sp.MaxBytes()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "flywheel_spool_appends_total", Help: "Appends the spool took (a decision, or a request's feedback events).",
		}, stat(func(s SpoolStats) int64 { return s.Appends })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "flywheel_spool_writes_total", Help: "Writes to the spool's segment files: appends that arrive together are written with one (below flywheel_spool_appends_total under load).",
		}, stat(func(s SpoolStats) int64 { return s.Writes })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "flywheel_spool_write_errors_total", Help: "Spool writes and fsyncs the disk failed (each is retried by the next event).",
		}, stat(func(s SpoolStats) int64 { return s.WriteErrors })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "flywheel_spool_quarantined_total", Help: "Corrupt stretches of spool segments copied into the quarantine directory and skipped.",
		}, stat(func(s SpoolStats) int64 { return s.Quarantined })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "flywheel_spool_quarantined_bytes_total", Help: "Bytes of the corrupt stretches quarantined.",
		}, stat(func(s SpoolStats) int64 { return s.QuarantinedBytes })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "flywheel_spool_torn_bytes_total", Help: "Bytes of a torn record (a crash mid-write) cut off the end of the spool when it was opened.",
		}, stat(func(s SpoolStats) int64 { return s.TornBytes })),
	}
	if reg != nil {
		for _, c := range append([]prometheus.Collector{m.spooled, m.shipped, m.failed, m.errors, m.replayed, m.pending, m.batchSec}, spoolMetrics...) {
			if err := reg.Register(c); err != nil {
				return metrics{}, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return m, nil
}
