package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel/internal/testenv"
	"github.com/flywheel-dev/flywheel/kafka"
)

// startServe runs the flywheel binary's serve command and waits until it is
// ready.
func startServe(t *testing.T, ctx context.Context, bin, cfg, url string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--config", cfg)
	logf, err := os.CreateTemp(t.TempDir(), "serve-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("%s:\n%s", logf.Name(), b)
		}
	})
	waitReady(t, ctx, url)
	return cmd
}

func spoolEmpty(url string) bool {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return strings.Contains(buf.String(), "flywheel_spool_pending_bytes 0\n")
}

// kill -9 of a serve process under load loses no acknowledged feedback: the
// restarted process ships what the killed one had spooled.
func TestServeKill9LosesNoAcknowledgedFeedback(t *testing.T) {
	kafkaAddr, ch := services(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "flywheel")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	prefix := fmt.Sprintf("kill%d.", time.Now().UnixNano())
	addr := testenv.FreeAddr(t)
	url := "http://" + addr
	cfg := faultConfig(t, kafkaAddr, ch, prefix, filepath.Join(t.TempDir(), "spool"), addr)

	first := startServe(t, ctx, bin, cfg, url)
	stop := make(chan struct{})
	load := runLoad(url, 4, 2*time.Millisecond, stop)
	time.Sleep(3 * time.Second)
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	close(stop)
	time.Sleep(300 * time.Millisecond)
	load.mu.Lock()
	acked := append([]string(nil), load.feedback...)
	decisions := len(load.decisions)
	load.mu.Unlock()

	second := startServe(t, ctx, bin, cfg, url)
	defer func() {
		second.Process.Signal(syscall.SIGTERM)
		second.Wait()
	}()
	waitFor(t, ctx, "the restarted serve to ship the spool", func() bool { return spoolEmpty(url) })
	got := readTopic(t, ctx, kafkaAddr, kafka.Config{TopicPrefix: prefix}.Topics().Feedback, "feedback_id")
	missing, dup := delivery(acked, got)
	t.Logf("kill -9 after %d decisions and %d acknowledged feedback: %d feedback in Kafka, %d acknowledged missing, %d more than once, %d requests failed around the kill",
		decisions, len(acked), len(got), missing, dup, load.failures.Load())
	if len(acked) == 0 {
		t.Fatal("no feedback was acknowledged before the kill")
	}
	if missing != 0 {
		t.Fatalf("%d acknowledged feedback events never reached Kafka", missing)
	}
	_ = os.Remove(bin)
}
