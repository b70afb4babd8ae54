// Package feedback validates the events product apps send (feedback on
// earlier decisions) and logs every decision and feedback event to Kafka, as
// JSON with a schema version, keyed by event id.
package feedback
