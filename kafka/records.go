package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// Record is one record read back from a topic: where it is and what it
// holds.
type Record struct {
	Partition  int
	Offset     int64
	Key, Value []byte
}

// ReadTopic reads every record of every partition of topic, from the first
// offset to the end each partition had when ReadTopic reached it, and calls
// fn on each, partition by partition, in offset order. It returns the first
// error of fn, or of a read (naming the partition and the offset), and is
// for tests and tools that check what a topic holds: consumers use
// NewGroupReader.
func ReadTopic(ctx context.Context, c Config, topic string, fn func(Record) error) error {
	if len(c.Brokers) == 0 {
		return errors.New("read topic: no brokers")
	}
	d := c.dialer()
	conn, err := d.DialContext(ctx, "tcp", c.Brokers[0])
	if err != nil {
		return fmt.Errorf("read topic %s: %w", topic, err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		return fmt.Errorf("read the partitions of %s: %w", topic, err)
	}
	for _, p := range parts {
		if err := readPartition(ctx, c, d, topic, p.ID, fn); err != nil {
			return err
		}
	}
	return nil
}

// readPartition is ReadTopic on one partition.
func readPartition(ctx context.Context, c Config, d *kafkago.Dialer, topic string, partition int, fn func(Record) error) error {
	leader, err := d.DialLeader(ctx, "tcp", c.Brokers[0], topic, partition)
	if err != nil {
		return fmt.Errorf("read %s[%d]: %w", topic, partition, err)
	}
	last, err := leader.ReadLastOffset()
	leader.Close()
	if err != nil {
		return fmt.Errorf("read the last offset of %s[%d]: %w", topic, partition, err)
	}
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: c.Brokers, Dialer: d, Topic: topic, Partition: partition, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	for off := int64(0); off < last; {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return fmt.Errorf("%s[%d] at %d of %d: %w", topic, partition, off, last, err)
		}
		off = m.Offset + 1
		if err := fn(Record{Partition: m.Partition, Offset: m.Offset, Key: m.Key, Value: m.Value}); err != nil {
			return err
		}
	}
	return nil
}

// Producer writes records to one topic as NewWriter's writer does,
// retrying a failed write (which may write a record twice): for tests,
// benchmarks and tools that fill a topic. The event log ships through a
// LogWriter instead. A Producer is safe for concurrent use.
type Producer struct {
	w *kafkago.Writer
}

// NewProducer returns a Producer for topic.
func NewProducer(c Config, topic string) *Producer {
	return &Producer{w: NewWriter(c, topic)}
}

// WriteMessages writes msgs and waits for all in-sync replicas. On a
// partial failure it returns a WriteErrors (with errors.As).
func (p *Producer) WriteMessages(ctx context.Context, msgs ...Message) error {
	return writeMessages(ctx, p.w, msgs)
}

// Close flushes and closes the producer.
func (p *Producer) Close() error { return p.w.Close() }

// DeleteTopics deletes topics; a topic that does not exist is an error.
func DeleteTopics(ctx context.Context, c Config, topics ...string) error {
	client, done := c.client(10 * time.Second)
	defer done()
	resp, err := client.DeleteTopics(ctx, &kafkago.DeleteTopicsRequest{Topics: topics})
	if err != nil {
		return fmt.Errorf("delete topics: %w", err)
	}
	for topic, err := range resp.Errors {
		if err != nil {
			return fmt.Errorf("delete topic %s: %w", topic, err)
		}
	}
	return nil
}
