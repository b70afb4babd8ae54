package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel/kafka"
)

// Two installations (two ClickHouse databases) on one Kafka cluster with the
// same topic prefix: the second refuses to start, naming the setting that
// separates them; with a prefix of its own it starts.
func TestSecondInstallationOnSharedTopicsRefused(t *testing.T) {
	kafkaAddr, chAddr := services(t)
	suffix := time.Now().UnixNano()
	config := func(db, prefix string) string {
		path := filepath.Join(t.TempDir(), db+".yaml")
		cfg := fmt.Sprintf("kafka: {brokers: [%q], topic_prefix: %q, partitions: 1}\nclickhouse: {dsn: \"clickhouse://%s/%s\"}\nlog: {level: warn}\n",
			kafkaAddr, prefix, chAddr, db)
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	start := func(cfg string, d time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		err := run(ctx, []string{"ingest", "--config", cfg}, func(string) string { return "" }, io.Discard, io.Discard)
		db := strings.TrimSuffix(filepath.Base(cfg), ".yaml")
		testDB(t, context.Background(), chAddr, db) // dropped when the test ends
		return err
	}
	shared := fmt.Sprintf("inst%d.", suffix)
	a := config(fmt.Sprintf("inst_a_%d", suffix), shared)
	if err := start(a, 5*time.Second); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("installation a: %v", err)
	}
	if err := start(a, 5*time.Second); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("installation a again: %v", err)
	}
	began := time.Now()
	err := start(config(fmt.Sprintf("inst_b_%d", suffix), shared), time.Minute)
	if !errors.Is(err, kafka.ErrForeignTopics) {
		t.Fatalf("installation b on a's topics: %v, want %v", err, kafka.ErrForeignTopics)
	}
	t.Logf("refused in %.1fs: %v", time.Since(began).Seconds(), err)
	if err := start(config(fmt.Sprintf("inst_c_%d", suffix), shared+"c."), 5*time.Second); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("installation c under its own prefix: %v", err)
	}
}
