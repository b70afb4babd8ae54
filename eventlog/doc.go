// Package eventlog is the decision and feedback log of a serving process:
// every decision and feedback event is first appended to a local
// write-ahead spool on disk, then shipped to Kafka in order, as JSON with a
// schema version, keyed by event id. It counts every path by which an event
// could be lost (refused by a full spool, quarantined, torn). Request
// parsing lives in serve; Kafka is reached through the Writer interface,
// which the kafka package implements.
package eventlog
