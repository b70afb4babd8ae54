package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// ErrNotLeader is the cause (context.Cause) of the end of a context from
// Lead: this process does not, or no longer, hold the retrain leadership.
var ErrNotLeader = errors.New("not the elected retrain scheduler")

// The election's timings. A member that has led notices a rebalance at its
// next heartbeat (HeartbeatInterval), or that it cannot reach the coordinator
// when a heartbeat fails (at most electTimeout later); it goes on leading for
// electGrace while it rejoins, and stops if the next generation has not come
// by then. Another member can be given the partition only once the
// coordinator has waited electSession (the session or rebalance timeout) for
// this one, so the sum stays well below it: two processes never lead at once.
const (
	electHeartbeat = time.Second
	electTimeout   = 3 * time.Second
	electGrace     = 3 * time.Second
	electSession   = 10 * time.Second
	electBackoff   = time.Second
)

// Elector elects one retrain scheduler among all that run against a Kafka
// cluster: every scheduler joins one consumer group over a one-partition
// topic, and the member the group assigns that partition to is the leader.
//
// The assignment is sticky (stickyLeader): a member that joins, or any other
// rebalance, leaves the partition with the member that holds it, and the
// leader goes on leading through the rebalance, so a run in progress is not
// interrupted. When the leader stops or dies, the group gives the partition,
// and the leadership, to another member (at once when it leaves the group,
// after the session timeout when it dies). A process that loses the
// leadership cancels the contexts it gave out (Lead).
//
// IsLeader, Lead and Generation are safe for concurrent use.
type Elector struct {
	group *kafkago.ConsumerGroup
	topic string
	log   *slog.Logger
	grace time.Duration // how long a rebalance may take before this process stops leading

	mu    sync.Mutex
	term  *term       // nil while this process does not lead
	hold  *time.Timer // while a rebalance is under way in a term: ends the term after grace
	claim int32       // the last generation this process held the partition in, while it leads
	gen   int32       // the last generation this process joined
}

// term is one uninterrupted stretch of leadership.
type term struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// NewElector joins the election group of cfg's election topic (group id
// "flywheel-retrain-election" under the topic prefix). Run takes part. It
// returns an error if the group's configuration is invalid; it does not
// connect (Run reports nothing: it logs and retries).
func NewElector(cfg Config, log *slog.Logger) (*Elector, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Elector{topic: cfg.Topics().Election, log: log, grace: electGrace}
	g, err := kafkago.NewConsumerGroup(kafkago.ConsumerGroupConfig{
		ID: cfg.TopicPrefix + "flywheel-retrain-election", Brokers: cfg.Brokers, Dialer: cfg.dialer(), Topics: []string{e.topic},
		// Only the sticky protocol: a group never mixes it with range or
		// roundrobin members (which would move the leadership on a join).
		GroupBalancers:    []kafkago.GroupBalancer{stickyLeader{claim: e.userData}},
		HeartbeatInterval: electHeartbeat, SessionTimeout: electSession, RebalanceTimeout: electSession,
		JoinGroupBackoff: electBackoff, Timeout: electTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("join the retrain election: %w", err)
	}
	e.group = g
	return e, nil
}

// IsLeader reports whether this process currently holds the leadership.
func (e *Elector) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.term != nil
}

// Lead returns a context derived from ctx that ends, with cause ErrNotLeader,
// when this process stops leading, and whether it leads now.
func (e *Elector) Lead(ctx context.Context) (context.Context, context.CancelFunc, bool) {
	e.mu.Lock()
	t := e.term
	e.mu.Unlock()
	lctx, cancel := context.WithCancelCause(ctx)
	if t == nil {
		cancel(ErrNotLeader)
		return lctx, func() {}, false
	}
	stop := context.AfterFunc(t.ctx, func() { cancel(context.Cause(t.ctx)) })
	return lctx, func() { stop(); cancel(context.Canceled) }, t.ctx.Err() == nil
}

// Run takes part in the election until ctx ends, then stops leading and
// leaves the group. It returns nil.
func (e *Elector) Run(ctx context.Context) error {
	defer e.group.Close()
	defer e.resign("the election stopped")
	for {
		gen, err := e.group.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafkago.ErrGroupClosed) {
				return nil
			}
			if errors.Is(err, kafkago.RebalanceInProgress) {
				// Part of a rebalance: kafka-go rejoins at once, and the
				// grace of the generation that ended still runs.
				e.log.Debug("retrain election: rebalance in progress", "err", err)
				continue
			}
			// kafka-go left the group and rejoins after its backoff, as a new
			// member: this one no longer holds the partition.
			e.resign("the election failed: " + err.Error())
			e.log.Warn("retrain election: cannot join the group; retrying", "err", err)
			continue
		}
		won := len(gen.Assignments[e.topic]) > 0
		if changed := e.joined(gen.ID, won); changed {
			e.log.Info("retrain election", "leader", won, "generation", gen.ID, "member", gen.MemberID)
		}
		id := gen.ID
		gen.Start(func(gctx context.Context) {
			<-gctx.Done() // the generation ended: a rebalance is under way
			e.rebalancing(id)
		})
	}
}

// joined records a new generation of the group, which this process won or
// not, and reports whether its leadership changed.
func (e *Elector) joined(gen int32, won bool) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.gen = gen
	if e.hold != nil {
		e.hold.Stop()
		e.hold = nil
	}
	if !won {
		return e.resignLocked("another member holds the partition")
	}
	e.claim = gen
	if e.term != nil {
		return false // the same term goes on
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	e.term = &term{ctx: ctx, cancel: cancel}
	return true
}

// rebalancing starts the grace of a term whose generation gen ended: unless
// the next generation comes (joined) before it ends, the term ends.
func (e *Elector) rebalancing(gen int32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.term == nil || e.hold != nil || e.gen != gen {
		return // not leading, already rebalancing, or a later generation came
	}
	var hold *time.Timer
	hold = time.AfterFunc(e.grace, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.hold != hold {
			return // a generation came, or the term ended, in the meantime
		}
		e.hold = nil
		e.resignLocked(fmt.Sprintf("no new generation within %s of a rebalance", e.grace))
		e.log.Warn("retrain election: stopped leading: the rebalance took too long", "grace", e.grace)
	})
	e.hold = hold
}

// resign ends this process's term, if any.
func (e *Elector) resign(why string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.resignLocked(why) {
		e.log.Info("retrain election: stopped leading", "why", why)
	}
}

func (e *Elector) resignLocked(why string) bool {
	if e.hold != nil {
		e.hold.Stop()
		e.hold = nil
	}
	e.claim = 0
	if e.term == nil {
		return false
	}
	e.term.cancel(fmt.Errorf("%w: %s", ErrNotLeader, why))
	e.term = nil
	return true
}

// Generation returns the last generation of the election group this process
// joined (0: none yet). It is safe for concurrent use.
func (e *Elector) Generation() int32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.gen
}

// userData is what this member tells the group when it joins: the last
// generation it held the partition in while it still leads, else nothing.
func (e *Elector) userData() []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.term == nil || e.claim <= 0 {
		return nil
	}
	return binary.BigEndian.AppendUint32(nil, uint32(e.claim))
}

// stickyLeader is the election's group balancer: every partition of a topic
// goes to one member, the one that held them last (each member's user data
// is the last generation it held them in, while it still leads; the latest
// wins); if none did, to the member with the smallest id. The range and
// roundrobin balancers give the partition to the smallest member id, so a
// member that joins took the leadership half the time.
type stickyLeader struct {
	claim func() []byte
}

var _ kafkago.GroupBalancer = stickyLeader{}

func (stickyLeader) ProtocolName() string { return "flywheel-sticky-leader" }

func (b stickyLeader) UserData() ([]byte, error) { return b.claim(), nil }

func (stickyLeader) AssignGroups(members []kafkago.GroupMember, partitions []kafkago.Partition) kafkago.GroupMemberAssignments {
	out := kafkago.GroupMemberAssignments{}
	byTopic := map[string][]int{}
	for _, p := range partitions {
		byTopic[p.Topic] = append(byTopic[p.Topic], p.ID)
	}
	for _, m := range members {
		out[m.ID] = map[string][]int{}
	}
	for topic, ids := range byTopic {
		slices.Sort(ids)
		owner, ownerClaim := "", int64(-1)
		for _, m := range members {
			if !slices.Contains(m.Topics, topic) {
				continue
			}
			c := int64(0) // no claim
			if len(m.UserData) == 4 {
				c = int64(binary.BigEndian.Uint32(m.UserData))
			}
			if c > ownerClaim || (c == ownerClaim && m.ID < owner) {
				owner, ownerClaim = m.ID, c
			}
		}
		if owner != "" {
			out[owner][topic] = ids
		}
	}
	return out
}
