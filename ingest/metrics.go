package ingest

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are an Ingester's.
type metrics struct {
	rows    *prometheus.CounterVec
	batches *prometheus.HistogramVec
	dead    prometheus.Counter
	reused  *prometheus.CounterVec // decisions dead-lettered for a reused event id, by model
	lag     *prometheus.GaugeVec
	sizes   prometheus.Histogram
	// watermark and decisionsWatermark are the feedback and decisions
	// watermarks this process last saw.
	watermark, decisionsWatermark prometheus.Gauge
}

// newMetrics builds the metrics and registers them with reg (nil: they are
// not registered), or returns the error of registering one.
func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_ingest_rows_total", Help: "Rows inserted into ClickHouse by table.",
		}, []string{"table"}),
		batches: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "flywheel_ingest_insert_seconds", Help: "Insert latency per batch by table.",
		}, []string{"table"}),
		dead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flywheel_ingest_dead_letters_total", Help: "Records sent to the dead-letter topic.",
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flywheel_ingest_lag", Help: "Records behind the end of each partition as of the last batch, by topic and partition.",
		}, []string{"topic", "partition"}),
		sizes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flywheel_ingest_batch_records", Help: "Records per batch.", Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		reused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_ingest_reused_event_ids_total", Help: "Decisions sent to the dead-letter topic because their model and event id already named another decision, by model.",
		}, []string{"model"}),
		watermark: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flywheel_ingest_feedback_watermark_seconds", Help: "Unix time through which all feedback appended to Kafka is in ClickHouse (decisions close only behind it).",
		}),
		decisionsWatermark: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flywheel_ingest_decisions_watermark_seconds", Help: "Unix time through which all decisions appended to Kafka are in ClickHouse (decisions close only behind it).",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.rows, m.batches, m.dead, m.reused, m.lag, m.sizes, m.watermark, m.decisionsWatermark} {
			if err := reg.Register(c); err != nil {
				return metrics{}, fmt.Errorf("register ingest metrics: %w", err)
			}
		}
	}
	return m, nil
}
