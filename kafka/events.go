package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/flywheel-dev/flywheel"
)

// ErrUndecodable is wrapped by the error of reading a model event whose
// record is not one (not JSON, or no model named); the reader has moved past
// it.
var ErrUndecodable = errors.New("undecodable model event")

// EventPublisher publishes model events on the model-events topic: each
// event is one record whose key is the model name and whose value is the
// event as JSON, so that any Kafka client can read it. It is safe for
// concurrent use.
type EventPublisher struct {
	w *kafkago.Writer
}

// NewEventPublisher returns a publisher on c's model-events topic (a writer
// as NewWriter makes them). It does not connect; Close releases it.
func NewEventPublisher(c Config) *EventPublisher {
	return &EventPublisher{w: NewWriter(c, c.Topics().ModelEvents)}
}

// Publish writes e, as it is (the caller sets its schema and time), and
// returns once all in-sync replicas have it, or the error of encoding or
// writing it.
func (p *EventPublisher) Publish(ctx context.Context, e flywheel.ModelEvent) error {
	v, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode model event: %w", err)
	}
	if err := p.w.WriteMessages(ctx, kafkago.Message{Key: []byte(e.Model), Value: v}); err != nil {
		return fmt.Errorf("write model event: %w", err)
	}
	return nil
}

// Close flushes and closes the publisher's writer.
func (p *EventPublisher) Close() error { return p.w.Close() }

// EventReader reads the model-events topic outside any consumer group, so
// that every reader (every serving replica) sees every event. It is not safe
// for concurrent use.
type EventReader struct {
	r *kafkago.Reader
}

// NewEventReader returns a reader of c's model-events topic that starts at
// its end (the events published from now on), or from its first event when
// fromStart is set. It returns an error if the reader cannot be positioned.
func NewEventReader(c Config, fromStart bool) (*EventReader, error) {
	offset := kafkago.LastOffset
	if fromStart {
		offset = kafkago.FirstOffset
	}
	r, err := NewTailReader(c, c.Topics().ModelEvents, offset)
	if err != nil {
		return nil, err
	}
	return &EventReader{r: r}, nil
}

// NewEventReaderAt returns a reader of c's model-events topic that starts
// at offset, such as EventsEnd returned.
func NewEventReaderAt(c Config, offset int64) (*EventReader, error) {
	r, err := NewTailReader(c, c.Topics().ModelEvents, offset)
	if err != nil {
		return nil, err
	}
	return &EventReader{r: r}, nil
}

// EventsEnd returns the offset the next model event will have: a reader
// started there (NewEventReaderAt) sees every event published after
// EventsEnd returned, which a reader started at the end (NewEventReader),
// positioned only when it first fetches, does not promise.
func EventsEnd(ctx context.Context, c Config) (int64, error) {
	client, done := c.client(5 * time.Second)
	defer done()
	topic := c.Topics().ModelEvents
	lo, err := client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: {kafkago.LastOffsetOf(0)}}})
	if err != nil {
		return 0, fmt.Errorf("end of %s: %w", topic, err)
	}
	for _, p := range lo.Topics[topic] {
		if p.Error != nil {
			return 0, fmt.Errorf("end of %s: %w", topic, p.Error)
		}
		return p.LastOffset, nil
	}
	return 0, fmt.Errorf("end of %s: no partition 0", topic)
}

// Read returns the next model event, waiting for one until ctx ends. An
// error wrapping ErrUndecodable is a record that is not a model event (the
// next Read goes on after it); any other error is Kafka's, or ctx's.
func (r *EventReader) Read(ctx context.Context) (flywheel.ModelEvent, error) {
	m, err := r.r.ReadMessage(ctx)
	if err != nil {
		return flywheel.ModelEvent{}, err
	}
	var e flywheel.ModelEvent
	if err := json.Unmarshal(m.Value, &e); err != nil {
		return flywheel.ModelEvent{}, fmt.Errorf("%w at offset %d: %v", ErrUndecodable, m.Offset, err)
	}
	if e.Model == "" {
		return flywheel.ModelEvent{}, fmt.Errorf("%w at offset %d: no model", ErrUndecodable, m.Offset)
	}
	return e, nil
}

// Close closes the reader.
func (r *EventReader) Close() error { return r.r.Close() }
