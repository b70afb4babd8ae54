// Package serve is Flywheel's HTTP API: /v1/rank, /v1/predict and
// /v1/feedback for product apps, model listing and admin routes, health,
// readiness and metrics. It decodes and validates every request body
// (decode.go, one strict JSON decoder; feedback.go for feedback). It holds the live model of every configured name
// behind an atomic pointer, swaps in a new version (decoded, verified and
// warmed up off the request path) when a model event or the periodic poll
// says so, and logs every answer (through the eventlog package) before it
// returns it. It compares the features of live traffic with the champion's
// training window (health.go) and explains what a version learned
// (explain.go), for the dashboard it serves at /ui.
package serve
