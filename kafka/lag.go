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
	client := &kafkago.Client{Addr: kafkago.TCP(c.Brokers...), Timeout: 5 * time.Second}
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
	lag := map[string]int64{}
	for topic, ps := range lo.Topics {
		committed := map[int]int64{}
		for _, p := range of.Topics[topic] {
			committed[p.Partition] = p.CommittedOffset
		}
		lag[topic] = 0
		for _, p := range ps {
			if p.Error != nil {
				return nil, fmt.Errorf("lag of %s: %s[%d]: %w", group, topic, p.Partition, p.Error)
			}
			from := committed[p.Partition]
			if from < p.FirstOffset { // never committed (-1), or behind retention
				from = p.FirstOffset
			}
			if p.LastOffset > from {
				lag[topic] += p.LastOffset - from
			}
		}
	}
	return lag, nil
}
