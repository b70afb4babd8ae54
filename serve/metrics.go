package serve

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	latency     *prometheus.HistogramVec
	swaps       *prometheus.CounterVec
	swapSeconds *prometheus.HistogramVec
	refused     *prometheus.GaugeVec
	version     *prometheus.GaugeVec
	decisions   *prometheus.CounterVec
	panics      prometheus.Counter
	guardrails  *prometheus.CounterVec
	// refusedRequests counts requests refused before a handler ran, by
	// reason (refused* in limits.go); inFlight the requests being handled.
	refusedRequests *prometheus.CounterVec
	inFlight        prometheus.Gauge
	// errors counts the error answers by code (flywheel.E*).
	errors *prometheus.CounterVec
	// lateFeedback counts feedback after its decision's reward window, by
	// model and whether it was within the late window (countLate).
	lateFeedback *prometheus.CounterVec
}

// newMetrics builds and registers the server's metrics, and health, the
// collector of every model's feature health.
func newMetrics(reg prometheus.Registerer, health prometheus.Collector) (*metrics, error) {
	m := &metrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flywheel_http_request_duration_seconds",
			Help:    "HTTP request latency by route, model and status.",
			Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route", "model", "status"}),
		swaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_model_swaps_total", Help: "Model swap attempts by model and outcome (swapped, refused, error).",
		}, []string{"model", "outcome"}),
		refused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flywheel_model_refused_version",
			Help: "The version an alias points at that this replica refused to load (corrupt, or not the configured shape) while an older one serves; 0 when none.",
		}, []string{"model", "alias"}),
		swapSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "flywheel_model_swap_duration_seconds", Help: "Time to fetch, decode, verify and warm up a new version.",
		}, []string{"model"}),
		version: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flywheel_model_version", Help: "Live version per model.",
		}, []string{"model"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_decisions_total", Help: "Decisions answered, by model and whether they explored.",
		}, []string{"model", "explored"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flywheel_http_panics_total", Help: "Handler panics recovered.",
		}),
		guardrails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_guardrail_breaches_total", Help: "Error-rate or latency guardrail breaches seen on this replica, by model.",
		}, []string{"model"}),
		refusedRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_http_refused_total",
			Help: "Requests refused by the server's protections, by reason (in_flight, rate_limited, host, origin, content_type, feature_budget).",
		}, []string{"reason"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flywheel_http_in_flight_requests", Help: "Requests being handled (counted against limits.max_in_flight).",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_http_errors_total", Help: "Error answers by error code (invalid_argument, internal, ...).",
		}, []string{"code"}),
		lateFeedback: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_feedback_late_total",
			Help: "Feedback received after its decision's reward window, for decisions this replica served and remembers, by model and whether it came within reward.late_window (rescored=true: it re-scores the decision's example).",
		}, []string{"model", "rescored"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.latency, m.swaps, m.refused, m.swapSeconds, m.version, m.decisions, m.panics, m.guardrails, m.refusedRequests, m.inFlight, m.errors, m.lateFeedback, health} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register serve metrics: %w", err)
			}
		}
	}
	return m, nil
}
