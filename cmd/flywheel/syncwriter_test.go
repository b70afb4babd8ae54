package main

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"time"
)

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// inProcess runs `flywheel args...` in this process until ctx ends or the
// returned stop is called; stop waits for it to return (30 s at most) and,
// if the test failed, logs what it printed under name.
func inProcess(t *testing.T, ctx context.Context, name string, args ...string) (stop func()) {
	t.Helper()
	var logs bytes.Buffer
	sw := &syncWriter{w: &logs}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, args, func(string) string { return "" }, sw, sw) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s returned %v", name, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("%s did not stop within 30s of its context ending", name)
			}
			if t.Failed() {
				sw.mu.Lock()
				t.Logf("%s log:\n%s", name, logs.String())
				sw.mu.Unlock()
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
