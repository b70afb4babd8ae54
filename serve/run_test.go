package serve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-dev/flywheel"
)

// shippingEvents is an event logger that ships in the background, as
// eventlog.Logger does: it records the steps of Run's shutdown order. A
// decision being logged waits for release when it is not nil.
type shippingEvents struct {
	fakeEvents
	logging, release chan struct{}
	runErr           error // what Run returns, at once when set

	mu           sync.Mutex
	steps        []string
	closeTimeout time.Duration
}

var _ Shipper = (*shippingEvents)(nil)

func (e *shippingEvents) step(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.steps = append(e.steps, s)
}

func (e *shippingEvents) Steps() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.steps)
}

func (e *shippingEvents) LogDecision(ctx context.Context, d *flywheel.Decision) error {
	if e.release != nil {
		close(e.logging)
		<-e.release
	}
	e.step("logged")
	return e.fakeEvents.LogDecision(ctx, d)
}

func (e *shippingEvents) Run(ctx context.Context) error {
	e.step("shipping")
	if e.runErr != nil {
		return e.runErr
	}
	<-ctx.Done()
	e.step("shipping stopped")
	return nil
}

func (e *shippingEvents) Close(timeout time.Duration) error {
	e.mu.Lock()
	e.closeTimeout = timeout
	e.mu.Unlock()
	e.step("closed")
	return nil
}

func mustShippingServer(t *testing.T, ev *shippingEvents) (*Server, net.Listener) {
	t.Helper()
	rank := flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}}}.WithDefaults()
	art := mustArtifact(t, rank)
	reg := &fakeRegistry{champion: func(context.Context, string) (int, []byte, error) { return 1, art, nil }}
	s, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": rank}, AppKeys: []Key{{Secret: appKey}},
		ShutdownTimeout: 7 * time.Second}, Options{Registry: reg, Events: ev, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return s, ln
}

// Run owns the shutdown order: the request in flight when ctx ends is
// answered while shipping goes on, then shipping stops, then the logger is
// closed (given ShutdownTimeout to ship what is left).
func TestRunDrainsThenShipsThenCloses(t *testing.T) {
	t.Parallel()
	ev := &shippingEvents{logging: make(chan struct{}), release: make(chan struct{})}
	s, ln := mustShippingServer(t, ev)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()
	answered := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/v1/rank", strings.NewReader(goodRank))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+appKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	select {
	case <-ev.logging:
	case <-time.After(10 * time.Second):
		t.Fatal("the rank request was not logged")
	}
	cancel()
	time.Sleep(100 * time.Millisecond) // Run is draining: the request is still in flight
	if got := ev.Steps(); !slices.Equal(got, []string{"shipping"}) {
		t.Fatalf("while a request is in flight after ctx ended: steps %v, want only [shipping]", got)
	}
	close(ev.release)
	if code := <-answered; code != http.StatusOK {
		t.Fatalf("the request in flight at shutdown: status %d, want 200", code)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, want := ev.Steps(), []string{"shipping", "logged", "shipping stopped", "closed"}; !slices.Equal(got, want) {
		t.Fatalf("steps %v, want %v", got, want)
	}
	if ev.closeTimeout != 7*time.Second {
		t.Fatalf("Close got %v, want ShutdownTimeout (7s)", ev.closeTimeout)
	}
}

// A logger that cannot ship (its spool cannot be read) shuts the server
// down, and Run still closes it and says why it stopped.
func TestRunStopsWhenShippingFails(t *testing.T) {
	t.Parallel()
	ev := &shippingEvents{runErr: errors.New("list spool: permission denied")}
	s, ln := mustShippingServer(t, ev)
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background(), ln) }()
	select {
	case err := <-done:
		if !errors.Is(err, ev.runErr) {
			t.Fatalf("Run returned %v, want the shipping error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run goes on after shipping failed")
	}
	if got, want := ev.Steps(), []string{"shipping", "closed"}; !slices.Equal(got, want) {
		t.Fatalf("steps %v, want %v", got, want)
	}
}
