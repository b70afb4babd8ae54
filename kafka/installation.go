package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// ErrForeignTopics is returned by Claim when the topics under the configured
// prefix belong to another installation.
var ErrForeignTopics = errors.New("the Kafka topics belong to another Flywheel installation")

// claimRecord is the value of an installation topic's first record: the
// installation that owns the topics under its prefix.
type claimRecord struct {
	Schema       int    `json:"schema"`
	Installation string `json:"installation"`
	Database     string `json:"clickhouse_database"`
	ClaimedMs    int64  `json:"claimed_ms"`
}

// Claim makes sure the topics under c's prefix belong to installation id
// (the ClickHouse database's, which names database): the first record of
// the installation topic names their owner, and the first process of an
// installation to start writes it. Two installations on one Kafka cluster
// with the same topic prefix would otherwise share decisions, feedback and
// consumer groups, and each ingest would store some of the other's
// decisions. ours reports whether an owner that is not id is this
// installation all the same (two processes of a new installation may draw
// two ids at once). Claim returns ErrForeignTopics, wrapped with what
// tells the two apart, when another installation owns the topics; the
// topics must exist (EnsureTopics).
func Claim(ctx context.Context, c Config, id, database string, ours func(ctx context.Context, owner string) (bool, error)) error {
	topic := c.Topics().Installation
	client, done := c.client(10 * time.Second)
	defer done()
	owner, err := firstClaim(ctx, client, topic)
	if err != nil {
		return err
	}
	if owner == nil {
		w := NewWriter(c, topic)
		value, _ := json.Marshal(claimRecord{Schema: 1, Installation: id, Database: database, ClaimedMs: time.Now().UnixMilli()})
		err := w.WriteMessages(ctx, kafkago.Message{Key: []byte("installation"), Value: value})
		w.Close()
		if err != nil {
			return fmt.Errorf("claim topic %s: %w", topic, err)
		}
		// Another installation may have claimed it first: the first
		// record decides.
		if owner, err = firstClaim(ctx, client, topic); err != nil {
			return err
		}
		if owner == nil {
			return fmt.Errorf("claim topic %s: the claim written is not there", topic)
		}
	}
	if owner.Installation == id {
		return nil
	}
	if ok, err := ours(ctx, owner.Installation); err != nil {
		return err
	} else if ok {
		return nil
	}
	return fmt.Errorf("%w: the topics under kafka.topic_prefix %q were claimed by installation %s (ClickHouse database %q) at %s, and this one is %s (database %q); give each installation its own kafka.topic_prefix (and ingest.group)",
		ErrForeignTopics, c.TopicPrefix, owner.Installation, owner.Database, time.UnixMilli(owner.ClaimedMs).UTC().Format(time.RFC3339), id, database)
}

// firstClaim returns the first record of the installation topic, or nil
// when it has none. A topic just made may not have its leader everywhere
// yet: retriable errors are retried for up to 15 s.
func firstClaim(ctx context.Context, client *kafkago.Client, topic string) (*claimRecord, error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		cr, err := readFirstClaim(ctx, client, topic)
		var kerr kafkago.Error
		if err == nil || !errors.As(err, &kerr) || !kerr.Temporary() || time.Now().After(deadline) {
			return cr, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func readFirstClaim(ctx context.Context, client *kafkago.Client, topic string) (*claimRecord, error) {
	offs, err := client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{
		topic: {kafkago.FirstOffsetOf(0), kafkago.LastOffsetOf(0)}}})
	if err != nil {
		return nil, fmt.Errorf("read the offsets of %s: %w", topic, err)
	}
	parts := offs.Topics[topic]
	if len(parts) != 1 {
		return nil, fmt.Errorf("read the offsets of %s: %d partitions answered", topic, len(parts))
	}
	if parts[0].Error != nil {
		return nil, fmt.Errorf("read the offsets of %s: %w", topic, parts[0].Error)
	}
	first, last := parts[0].FirstOffset, parts[0].LastOffset
	if last <= first {
		return nil, nil
	}
	resp, err := client.Fetch(ctx, &kafkago.FetchRequest{Topic: topic, Partition: 0, Offset: first, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: time.Second})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", topic, err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("read %s: %w", topic, resp.Error)
	}
	for {
		rec, err := resp.Records.ReadRecord()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read %s: no record at offset %d of %d", topic, first, last)
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", topic, err)
		}
		if rec.Offset < first {
			continue
		}
		var cr claimRecord
		b, err := io.ReadAll(rec.Value)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", topic, err)
		}
		if err := json.Unmarshal(b, &cr); err != nil || cr.Installation == "" {
			return nil, fmt.Errorf("the first record of %s (offset %d) names no installation", topic, rec.Offset)
		}
		return &cr, nil
	}
}
