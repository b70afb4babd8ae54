package retrain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/flywheel-dev/flywheel/kafka"
)

// Leader tells a scheduler whether it is the one that runs the schedules.
type Leader interface {
	IsLeader() bool
}

// Elector elects one retrain scheduler among all that run against a Kafka
// cluster: every scheduler joins one consumer group over a one-partition
// topic, and the member the group assigns that partition to is the leader.
// When the leader stops or dies, the group gives the partition, and the
// leadership, to another member after its session timeout. IsLeader is safe
// for concurrent use.
type Elector struct {
	group  *kafkago.ConsumerGroup
	topic  string
	leader atomic.Bool
	log    *slog.Logger
}

var _ Leader = (*Elector)(nil)

// NewElector joins the election group of cfg's election topic (group id
// "flywheel-retrain-election" under the topic prefix). Run takes part.
func NewElector(cfg kafka.Config, log *slog.Logger) (*Elector, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := cfg.Topics().Election
	g, err := kafkago.NewConsumerGroup(kafkago.ConsumerGroupConfig{
		ID: cfg.TopicPrefix + "flywheel-retrain-election", Brokers: cfg.Brokers, Topics: []string{t},
		HeartbeatInterval: time.Second, SessionTimeout: 10 * time.Second, RebalanceTimeout: 10 * time.Second,
		JoinGroupBackoff: time.Second, Timeout: 5 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("join the retrain election: %w", err)
	}
	return &Elector{group: g, topic: t, log: log}, nil
}

// IsLeader reports whether this process currently holds the leadership.
func (e *Elector) IsLeader() bool { return e.leader.Load() }

// Run takes part in the election until ctx ends, then leaves the group.
func (e *Elector) Run(ctx context.Context) error {
	defer e.group.Close()
	defer e.leader.Store(false)
	for {
		gen, err := e.group.Next(ctx)
		if err != nil {
			e.leader.Store(false)
			if ctx.Err() != nil || errors.Is(err, kafkago.ErrGroupClosed) {
				return nil
			}
			e.log.Warn("retrain election: cannot join the group; retrying", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		won := len(gen.Assignments[e.topic]) > 0
		if won != e.leader.Load() {
			e.log.Info("retrain election", "leader", won, "generation", gen.ID, "member", gen.MemberID)
		}
		gen.Start(func(gctx context.Context) {
			e.leader.Store(won)
			<-gctx.Done() // the generation ended: a rebalance is under way
			e.leader.Store(false)
		})
	}
}
