package kafka

import (
	"context"
	"errors"

	kafkago "github.com/segmentio/kafka-go"
)

// Message is one record to write: its key (records of one key keep their
// order) and its value.
type Message struct {
	Key, Value []byte
}

// WriteErrors is the error of a write some of whose messages were not
// written: one entry per message sent, nil for those Kafka took.
type WriteErrors []error

func (e WriteErrors) Error() string { return kafkago.WriteErrors(e).Error() }

// LogWriter writes messages to one topic as NewWriter's writer does, but
// attempts each write once: its caller retries, resending only what a
// WriteErrors reports as not written (a writer's own retry would resend a
// whole batch and could write some records twice). It is what the event
// log ships through and is safe for concurrent use.
type LogWriter struct {
	w *kafkago.Writer
}

// NewLogWriter returns a LogWriter for topic.
func NewLogWriter(c Config, topic string) *LogWriter {
	w := NewWriter(c, topic)
	w.MaxAttempts = 1
	return &LogWriter{w: w}
}

// WriteMessages writes msgs and waits for all in-sync replicas. On a
// partial failure it returns a WriteErrors (with errors.As); any other error
// leaves the outcome of every message unknown.
func (l *LogWriter) WriteMessages(ctx context.Context, msgs ...Message) error {
	return writeMessages(ctx, l.w, msgs)
}

// writeMessages writes msgs through w, reporting a partial failure as a
// WriteErrors.
func writeMessages(ctx context.Context, w *kafkago.Writer, msgs []Message) error {
	km := make([]kafkago.Message, len(msgs))
	for i, m := range msgs {
		km[i] = kafkago.Message{Key: m.Key, Value: m.Value}
	}
	err := w.WriteMessages(ctx, km...)
	var we kafkago.WriteErrors
	if errors.As(err, &we) {
		return WriteErrors(we)
	}
	return err
}

// Close flushes and closes the writer.
func (l *LogWriter) Close() error { return l.w.Close() }
