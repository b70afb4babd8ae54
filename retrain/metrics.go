package retrain

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a Retrainer's.
type metrics struct {
	runs     *prometheus.CounterVec   // by model and outcome
	seconds  *prometheus.HistogramVec // run duration by model
	rowsRead *prometheus.CounterVec   // examples read by model
}

// newMetrics builds the metrics and registers them with reg (nil: they are
// not registered), or returns the error of registering one.
func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_retrain_runs_total", Help: "Retrain runs by model and outcome.",
		}, []string{"model", "outcome"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "flywheel_retrain_duration_seconds", Help: "Retrain run duration by model.", Buckets: prometheus.ExponentialBuckets(0.1, 2, 12),
		}, []string{"model"}),
		rowsRead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_retrain_rows_read_total", Help: "Examples read from ClickHouse by model.",
		}, []string{"model"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.runs, m.seconds, m.rowsRead} {
			if err := reg.Register(c); err != nil {
				return metrics{}, fmt.Errorf("register retrain metrics: %w", err)
			}
		}
	}
	return m, nil
}
