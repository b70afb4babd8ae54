package ingest

import (
	dto "github.com/prometheus/client_model/go"
)

// Rows returns how many rows of the table ("decisions" or "feedback") this
// ingester has inserted so far. It is safe for concurrent use.
func Rows(in *Ingester, table string) float64 {
	var m dto.Metric
	if err := in.rows.WithLabelValues(table).Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
