package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// GroupLag returns, per topic, how many records the consumer group has not
// committed yet: the sum over partitions of the log end offset minus the
// committed offset (the whole partition when the group never committed).
// Any process can ask; the dashboard does, to show ingest lag.
func GroupLag(ctx context.Context, c Config, group string, topics ...string) (map[string]int64, error) {
	offs, err := GroupOffsets(ctx, c, group, topics...)
	if err != nil {
		return nil, err
	}
	lag := map[string]int64{}
	for topic, ps := range offs {
		lag[topic] = 0
		for _, p := range ps {
			lag[topic] += p.End - p.Committed
		}
	}
	return lag, nil
}

// PartitionOffsets are where a consumer group is in one partition.
type PartitionOffsets struct {
	// End is the log end offset: the offset the next record appended gets.
	End int64
	// Committed is the group's committed offset (the next it will read),
	// at least the partition's first offset (a group that never committed,
	// or is behind retention, starts there) and at most End.
	Committed int64
}

// GroupOffsets returns, per topic and partition, the log end offset and the
// consumer group's committed offset, or the error of asking the cluster.
// Every record appended before the call has an offset below End.
func GroupOffsets(ctx context.Context, c Config, group string, topics ...string) (map[string]map[int]PartitionOffsets, error) {
	client, done := c.client(5 * time.Second)
	defer done()
	meta, err := client.Metadata(ctx, &kafkago.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("lag of %s: metadata: %w", group, err)
	}
	ends := map[string][]kafkago.OffsetRequest{}
	parts := map[string][]int{}
	for _, t := range meta.Topics {
		if t.Error != nil {
			return nil, fmt.Errorf("lag of %s: topic %s: %w", group, t.Name, t.Error)
		}
		for _, p := range t.Partitions {
			ends[t.Name] = append(ends[t.Name], kafkago.FirstOffsetOf(p.ID), kafkago.LastOffsetOf(p.ID))
			parts[t.Name] = append(parts[t.Name], p.ID)
		}
	}
	lo, err := client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: ends})
	if err != nil {
		return nil, fmt.Errorf("lag of %s: list offsets: %w", group, err)
	}
	of, err := client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: parts})
	if err != nil {
		return nil, fmt.Errorf("lag of %s: committed offsets: %w", group, err)
	}
	if of.Error != nil && !errors.Is(of.Error, kafkago.GroupIdNotFound) { // a group that never committed
		return nil, fmt.Errorf("lag of %s: committed offsets: %w", group, of.Error)
	}
	out := map[string]map[int]PartitionOffsets{}
	for topic, ps := range lo.Topics {
		committed := map[int]int64{}
		for _, p := range of.Topics[topic] {
			committed[p.Partition] = p.CommittedOffset
		}
		out[topic] = map[int]PartitionOffsets{}
		for _, p := range ps {
			if p.Error != nil {
				return nil, fmt.Errorf("lag of %s: %s[%d]: %w", group, topic, p.Partition, p.Error)
			}
			from := committed[p.Partition]
			if from < p.FirstOffset { // never committed (-1), or behind retention
				from = p.FirstOffset
			}
			out[topic][p.Partition] = PartitionOffsets{End: max(p.LastOffset, from), Committed: from}
		}
	}
	return out, nil
}
