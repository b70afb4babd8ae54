package deploy

import "github.com/prometheus/client_golang/prometheus"

// judgeMetrics are a Judge's.
type judgeMetrics struct {
	actions *prometheus.CounterVec // by model and action
}

// newJudgeMetrics builds the metrics of a Judge and registers them with
// reg (nil: they are not registered), or returns the error of registering
// one.
func newJudgeMetrics(reg prometheus.Registerer) (judgeMetrics, error) {
	m := judgeMetrics{
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flywheel_deploy_actions_total", Help: "Canary decisions and guardrail rollbacks, by model and action."}, []string{"model", "action"}),
	}
	if reg != nil {
		if err := reg.Register(m.actions); err != nil {
			return judgeMetrics{}, err
		}
	}
	return m, nil
}
