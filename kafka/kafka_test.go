package kafka

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/flywheel-dev/flywheel/internal/testenv"
)

// testBrokers returns the real broker named by FLYWHEEL_TEST_KAFKA. make test
// starts one and sets it; without it the test fails, it is never skipped.
func testBrokers(t *testing.T) []string {
	t.Helper()
	return testenv.Kafka(t)
}

func roundTrip(t *testing.T, brokers []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := Config{Brokers: brokers, TopicPrefix: fmt.Sprintf("t%d.", time.Now().UnixNano()), Partitions: 3}
	if err := EnsureTopics(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := EnsureTopics(ctx, cfg); err != nil {
		t.Fatalf("second EnsureTopics: %v", err)
	}
	w := NewWriter(cfg, cfg.Topics().Decisions)
	defer w.Close()
	const n = 50
	msgs := make([]kafkago.Message, n)
	for i := range msgs {
		msgs[i] = kafkago.Message{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("v%d", i))}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	group := cfg.TopicPrefix + "g"
	lag := func() int64 {
		t.Helper()
		l, err := GroupLag(ctx, cfg, group, cfg.Topics().Decisions)
		if err != nil {
			t.Fatal(err)
		}
		return l[cfg.Topics().Decisions]
	}
	if l := lag(); l != n {
		t.Fatalf("lag of a group that never read: %d, want %d", l, n)
	}
	r := NewGroupReader(cfg, group, cfg.Topics().Decisions)
	defer r.Close()
	seen := map[string]bool{}
	for len(seen) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("after %d messages: %v", len(seen), err)
		}
		if string(m.Value) != "v"+strings.TrimPrefix(string(m.Key), "k") {
			t.Fatalf("key %s has value %s", m.Key, m.Value)
		}
		seen[string(m.Key)] = true
		if err := r.CommitMessages(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if l := lag(); l != 0 {
		t.Fatalf("lag after committing everything: %d, want 0", l)
	}
}

func TestRealBrokerRoundTrip(t *testing.T) {
	roundTrip(t, testBrokers(t))
}

func TestEmbeddedBrokerRoundTrip(t *testing.T) {
	e, err := StartEmbedded(0)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	roundTrip(t, e.Brokers())
}

// The real broker, with its default message.max.bytes, takes a record of
// MaxRecordBytes, and a burst of large records (~10 KB decisions, 1000 at a
// time) that a 16 MiB produce batch once made it refuse.
func TestRealBrokerTakesLargeRecords(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := Config{Brokers: testBrokers(t), TopicPrefix: fmt.Sprintf("t%d.", time.Now().UnixNano()), Partitions: 1}
	if err := EnsureTopics(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	w := NewWriter(cfg, cfg.Topics().Decisions)
	defer w.Close()
	key := []byte("k")
	if err := w.WriteMessages(ctx, kafkago.Message{Key: key, Value: make([]byte, MaxRecordBytes-len(key))}); err != nil {
		t.Fatalf("a record of MaxRecordBytes (%d): %v", MaxRecordBytes, err)
	}
	burst := make([]kafkago.Message, 1000)
	for i := range burst {
		burst[i] = kafkago.Message{Key: []byte(fmt.Sprint(i)), Value: make([]byte, 10_000)}
	}
	if err := w.WriteMessages(ctx, burst...); err != nil {
		t.Fatalf("1000 records of 10 KB: %v", err)
	}
}

// What a Producer writes, ReadTopic reads back, every record once with its
// partition and offset; DeleteTopics then deletes the topic without error.
func TestProducerReadTopicDeleteTopics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := Config{Brokers: testBrokers(t), TopicPrefix: fmt.Sprintf("t%d.", time.Now().UnixNano()), Partitions: 3}
	if err := EnsureTopics(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	topic := cfg.Topics().Feedback
	p := NewProducer(cfg, topic)
	const n = 50
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i] = Message{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("v%d", i))}
	}
	if err := p.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	partitions := map[int]bool{}
	next := map[int]int64{}
	err := ReadTopic(ctx, cfg, topic, func(r Record) error {
		if string(r.Value) != "v"+strings.TrimPrefix(string(r.Key), "k") {
			return fmt.Errorf("key %s has value %s", r.Key, r.Value)
		}
		if r.Offset < next[r.Partition] {
			return fmt.Errorf("partition %d: offset %d after %d", r.Partition, r.Offset, next[r.Partition]-1)
		}
		next[r.Partition] = r.Offset + 1
		seen[string(r.Key)]++
		partitions[r.Partition] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != n || len(partitions) < 2 {
		t.Fatalf("read %d distinct records of %d from %d partitions", len(seen), n, len(partitions))
	}
	for k, c := range seen {
		if c != 1 {
			t.Errorf("%s read %d times", k, c)
		}
	}
	if err := DeleteTopics(ctx, cfg, topic); err != nil {
		t.Fatal(err)
	}
}
