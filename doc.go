// Package flywheel holds Flywheel's domain: the decisions it makes, the
// feedback that comes back, the features both carry, model references and
// events, and the error codes every other package reports in.
//
// It imports the standard library only. Everything with I/O lives in the
// top-level packages named after what they do (serve, ingest, retrain,
// deploy) or after the system they wrap (kafka, clickhouse).
package flywheel
