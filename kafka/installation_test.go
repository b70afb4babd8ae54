package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Two installations on one cluster with one topic prefix: the second is
// refused; with a prefix of its own it starts; a second process of the
// first installation (or one that drew another id at the same time) is not.
func TestClaimKeepsInstallationsApart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := Config{Brokers: testBrokers(t), TopicPrefix: fmt.Sprintf("t%d.", time.Now().UnixNano()), Partitions: 1}
	if err := EnsureTopics(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	none := func(context.Context, string) (bool, error) { return false, nil }
	if err := Claim(ctx, cfg, "aaaa", "flywheel", none); err != nil {
		t.Fatalf("first claim: %v", err)
	}
	if err := Claim(ctx, cfg, "aaaa", "flywheel", none); err != nil {
		t.Fatalf("the same installation again: %v", err)
	}
	err := Claim(ctx, cfg, "bbbb", "flywheel", none)
	if !errors.Is(err, ErrForeignTopics) || !strings.Contains(err.Error(), "aaaa") || !strings.Contains(err.Error(), "kafka.topic_prefix") {
		t.Fatalf("another installation: %v, want ErrForeignTopics naming the owner and kafka.topic_prefix", err)
	}
	sibling := func(_ context.Context, owner string) (bool, error) { return owner == "aaaa", nil }
	if err := Claim(ctx, cfg, "cccc", "flywheel", sibling); err != nil {
		t.Fatalf("an id of the same installation: %v", err)
	}
	other := cfg
	other.TopicPrefix += "b."
	if err := EnsureTopics(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := Claim(ctx, other, "bbbb", "flywheel", none); err != nil {
		t.Fatalf("the other installation under its own prefix: %v", err)
	}
}
