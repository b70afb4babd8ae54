package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// electionConfig is the real broker's configuration under a prefix of the
// test's own.
func electionConfig(t *testing.T) Config {
	t.Helper()
	return Config{Brokers: testBrokers(t), TopicPrefix: fmt.Sprintf("elect%d.", time.Now().UnixNano())}
}

// mustElection makes the election topic of kcfg and returns a function that
// starts a member of its election, stopped at the end of the test.
func mustElection(t *testing.T, ctx context.Context, kcfg Config) func() (el *Elector, stop func()) {
	t.Helper()
	if err := EnsureTopics(ctx, kcfg); err != nil {
		t.Fatal(err)
	}
	return func() (*Elector, func()) {
		t.Helper()
		el, err := NewElector(kcfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		ectx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); el.Run(ectx) }()
		stop := sync.OnceFunc(func() { cancel(); <-done })
		t.Cleanup(stop)
		return el, stop
	}
}

// waitFor waits up to d for cond, or fails the test.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A member that joins, a second then a third, leaves the leadership where it
// is: the leader's term (Lead) goes on through each rebalance. When the
// leader leaves, one of the others leads.
func TestLeaderKeepsLeadershipWhenMembersJoin(t *testing.T) {
	kcfg := electionConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	member := mustElection(t, ctx, kcfg)
	leader, stopLeader := member()
	waitFor(t, 30*time.Second, "the first member to lead", leader.IsLeader)
	term, done, ok := leader.Lead(ctx)
	defer done()
	if !ok {
		t.Fatalf("the leader stopped leading: %v", context.Cause(term))
	}
	var others []*Elector
	for _, nth := range []string{"second", "third"} {
		m, _ := member()
		others = append(others, m)
		waitFor(t, 30*time.Second, "the "+nth+" member in the leader's generation", func() bool {
			g := m.Generation()
			return g > 0 && leader.Generation() == g
		})
		if err := term.Err(); err != nil {
			t.Fatalf("the leader lost its leadership when the %s member joined: %v", nth, context.Cause(term))
		}
		for i, o := range others {
			if o.IsLeader() {
				t.Fatalf("member %d leads besides the leader after the %s member joined", i+2, nth)
			}
		}
	}
	stopLeader()
	if !errors.Is(context.Cause(term), ErrNotLeader) {
		t.Fatalf("the stopped leader's term: %v, want %v", context.Cause(term), ErrNotLeader)
	}
	waitFor(t, 30*time.Second, "one of the others to take over", func() bool { return others[0].IsLeader() || others[1].IsLeader() })
	if others[0].IsLeader() && others[1].IsLeader() {
		t.Fatal("both remaining members lead")
	}
}

// The election's state without a broker: a term goes on through rebalances
// that end in a generation this process wins, and ends (cancelling what
// Lead gave out) when it loses one, when a rebalance outlasts the grace, or
// when the election stops.
func TestElectorTerms(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := &Elector{topic: "t", log: slog.New(slog.DiscardHandler), grace: time.Hour}
	mustLead := func(what string) context.Context {
		t.Helper()
		c, done, ok := e.Lead(ctx)
		t.Cleanup(done)
		if !ok || c.Err() != nil || !e.IsLeader() {
			t.Fatalf("%s: not leading (%v)", what, context.Cause(c))
		}
		return c
	}
	mustHaveEnded := func(what string, c context.Context) {
		t.Helper()
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the term goes on", what)
		}
		if !errors.Is(context.Cause(c), ErrNotLeader) {
			t.Fatalf("%s: cause %v, want %v", what, context.Cause(c), ErrNotLeader)
		}
		if e.IsLeader() || e.userData() != nil {
			t.Fatalf("%s: still leading, or claiming (%x)", what, e.userData())
		}
	}
	claim := func(gen uint32) []byte { return binary.BigEndian.AppendUint32(nil, gen) }

	if c, _, ok := e.Lead(ctx); ok || !errors.Is(context.Cause(c), ErrNotLeader) || e.userData() != nil {
		t.Fatalf("before any generation: leads %v, cause %v, claim %x", ok, context.Cause(c), e.userData())
	}
	e.joined(1, true)
	first := mustLead("generation 1 won")
	e.rebalancing(1)
	mustLead("rebalancing after generation 1")
	if got := e.userData(); !reflect.DeepEqual(got, claim(1)) {
		t.Fatalf("claim while rebalancing: %x, want %x", got, claim(1))
	}
	e.joined(2, true)
	e.rebalancing(1) // a stale end of generation 1: ignored
	mustLead("generation 2 won")
	if first.Err() != nil || !reflect.DeepEqual(e.userData(), claim(2)) {
		t.Fatalf("generation 2 won: a new term (%v), or claim %x", context.Cause(first), e.userData())
	}
	e.rebalancing(2)
	e.joined(3, false)
	mustHaveEnded("generation 3 lost", first)

	e.grace = time.Millisecond
	e.joined(4, true)
	second := mustLead("generation 4 won")
	e.rebalancing(4)
	mustHaveEnded("a rebalance longer than the grace", second)
	e.joined(5, true)
	mustLead("generation 5 won after the grace")

	e.grace = time.Hour
	third := mustLead("generation 5")
	e.rebalancing(5)
	e.resign("the election stopped")
	mustHaveEnded("the election stopped", third)
}

// The balancer gives every partition to the member that held it last (the
// latest claim), else to the smallest member id.
func TestStickyLeaderAssignGroups(t *testing.T) {
	t.Parallel()
	claim := func(gen uint32) []byte { return binary.BigEndian.AppendUint32(nil, gen) }
	one := []kafkago.Partition{{Topic: "e", ID: 0}}
	member := func(id string, userData []byte) kafkago.GroupMember {
		return kafkago.GroupMember{ID: id, Topics: []string{"e"}, UserData: userData}
	}
	for _, tc := range []struct {
		name       string
		members    []kafkago.GroupMember
		partitions []kafkago.Partition
		want       kafkago.GroupMemberAssignments
	}{
		{"a newcomer with a smaller id joins the leader", []kafkago.GroupMember{member("b", claim(4)), member("a", nil)}, one,
			kafkago.GroupMemberAssignments{"a": {}, "b": {"e": {0}}}},
		{"two newcomers join the leader", []kafkago.GroupMember{member("a", nil), member("c", claim(9)), member("b", nil)}, one,
			kafkago.GroupMemberAssignments{"a": {}, "b": {}, "c": {"e": {0}}}},
		{"no claim: the smallest id", []kafkago.GroupMember{member("c", nil), member("a", nil), member("b", nil)}, one,
			kafkago.GroupMemberAssignments{"a": {"e": {0}}, "b": {}, "c": {}}},
		{"a stale claim loses to the latest", []kafkago.GroupMember{member("a", claim(3)), member("b", claim(7))}, one,
			kafkago.GroupMemberAssignments{"a": {}, "b": {"e": {0}}}},
		{"equal claims: the smallest id", []kafkago.GroupMember{member("b", claim(7)), member("a", claim(7))}, one,
			kafkago.GroupMemberAssignments{"a": {"e": {0}}, "b": {}}},
		{"malformed user data is no claim", []kafkago.GroupMember{member("a", []byte{1}), member("b", claim(1))}, one,
			kafkago.GroupMemberAssignments{"a": {}, "b": {"e": {0}}}},
		{"every partition to the leader", []kafkago.GroupMember{member("a", nil), member("b", claim(2))},
			[]kafkago.Partition{{Topic: "e", ID: 1}, {Topic: "e", ID: 0}},
			kafkago.GroupMemberAssignments{"a": {}, "b": {"e": {0, 1}}}},
		{"the topic does not exist yet", []kafkago.GroupMember{member("a", claim(2))}, nil,
			kafkago.GroupMemberAssignments{"a": {}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := stickyLeader{}.AssignGroups(tc.members, tc.partitions)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}
