// Command serve is the serving benchmark (make bench; BENCH_ONLY=serve).
//
// With -bench it is the driver: it pins itself and the load generator
// (bench/loadgen, -loadgen) to one core and the servers, Kafka and ClickHouse
// to the other, and runs, in each of -rounds rounds and in the same run for
// both servers, a closed-loop peak, open-loop fixed offered rates, and the
// flywheel server at half of its peak with and without a model swapped in
// every second, and a 3-slot page of the same 20 actions (page.lua) next to
// the single-slot request (rank.lua) on both servers; it writes
// bench/results/serve.json (bench.go).
//
// Without -bench it is one server:
//
//	-mode flywheel   the real /v1/rank handler: validation, scoring with a
//	                 trained-shape ranker, every decision spooled and shipped
//	                 to the Kafka broker named by -kafka (topics of its own,
//	                 deleted on exit); two models, homepage (interaction
//	                 [user, item]) and page ([user, item], [slot, item])
//	-mode swap       the same, with a new model version swapped in every second
//	                 from the start; in flywheel mode SIGUSR1 starts swapping
//	                 and SIGUSR2 stops it
//	-mode bare       a bare gin handler that decodes the same request into the
//	                 same types (encoding/json) and encodes a response of the
//	                 same shape, a page's too: the reference
//
// A server prints a JSON line per swap ({"swap_unix_ns", "took_us"}) and, on
// SIGTERM, one with what it logged and swapped.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/eventlog"
	"github.com/flywheel-dev/flywheel/kafka"
	"github.com/flywheel-dev/flywheel/model"
	"github.com/flywheel-dev/flywheel/serve"
)

// registry serves two models: swapModel, whose version the swap ticker
// moves on, and pageModel (the 3-slot page's), always at version 1.
type registry struct {
	version   atomic.Int64 // swapModel's
	artifacts map[string]*[2][]byte
}

const (
	swapModel = "homepage"
	pageModel = "page"
)

func (r *registry) versionOf(name string) int {
	if name == swapModel {
		return int(r.version.Load())
	}
	return 1
}

func (r *registry) Champion(_ context.Context, name string) (int, []byte, error) {
	a, ok := r.artifacts[name]
	if !ok {
		return 0, nil, fmt.Errorf("no model %s", name)
	}
	v := r.versionOf(name)
	return v, a[v%2], nil
}

func (r *registry) Canary(context.Context, string) (int, []byte, error) { return 0, nil, nil }

func (r *registry) Alias(_ context.Context, name, alias string) (int, error) {
	if alias == "canary" {
		return 0, nil
	}
	return r.versionOf(name), nil
}

func main() {
	mode := flag.String("mode", "flywheel", "flywheel | swap | bare")
	addr := flag.String("addr", "127.0.0.1:18080", "listen address")
	brokers := flag.String("kafka", "127.0.0.1:9092", "Kafka broker")
	keepTopics := flag.Bool("keep-topics", false, "do not delete the server's Kafka topics on exit")
	spool := flag.String("spool", "", "spool directory (default: a temporary one)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile here")
	var bo benchOptions
	bo.flags()
	flag.Parse()
	if bo.bench {
		if err := bo.run(*brokers); err != nil {
			fmt.Fprintln(os.Stderr, "bench serve:", err)
			os.Exit(1)
		}
		return
	}
	// As `flywheel serve` does (cmd/flywheel), for every mode alike.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if *cpuprofile != "" {
		if f, err := os.Create(*cpuprofile); err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	gin.SetMode(gin.ReleaseMode)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *mode, *addr, *brokers, *spool, !*keepTopics); err != nil {
		fmt.Fprintln(os.Stderr, "bench serve:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(ctx context.Context, mode, addr, brokers, spool string, deleteTopics bool) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if mode == "bare" {
		e := gin.New()
		e.POST("/v1/rank", bare)
		srv := &http.Server{Handler: e}
		go func() { <-ctx.Done(); srv.Close() }()
		if err := srv.Serve(ln); err != http.ErrServerClosed {
			return err
		}
		return nil
	}
	// homepage ranks the single-slot request (rank.lua); page, with the
	// [slot, item] interaction docs/operations.md advises for pages, the
	// 3-slot page (page.lua).
	models := map[string]flywheel.ModelConfig{
		swapModel: flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}}}.WithDefaults(),
		pageModel: flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}, {"slot", "item"}}}.WithDefaults(),
	}
	reg := &registry{artifacts: map[string]*[2][]byte{}}
	reg.version.Store(1)
	for name, mc := range models {
		reg.artifacts[name] = new([2][]byte)
		for i := range reg.artifacts[name] {
			m, err := model.FromConfig(mc)
			if err != nil {
				return err
			}
			// give the weights some values so that scoring is not all zeros
			tr := model.NewTrainer(m, model.TrainConfig{})
			_ = tr.LearnRanker(&flywheel.Example{Context: flywheel.Features{"user": {"segment": fmt.Sprint(i)}, "slot": {"id": "hero"}},
				Actions: []flywheel.Action{{ID: "a", Features: flywheel.Features{"item": {"id": "i1"}}}}, Probabilities: []float64{1}, Reward: 1})
			if reg.artifacts[name][i], err = tr.Model().MarshalBinary(); err != nil {
				return err
			}
		}
	}
	if spool == "" {
		if spool, err = os.MkdirTemp("", "flywheel-bench-spool-"); err != nil {
			return err
		}
		defer os.RemoveAll(spool)
	}
	kcfg := kafka.Config{Brokers: []string{brokers}, TopicPrefix: fmt.Sprintf("benchserve%d.", time.Now().UnixNano())}
	ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ectx, kcfg); err != nil {
		return err
	}
	promReg := prometheus.NewRegistry()
	logger, err := eventlog.NewLogger(kcfg, eventlog.SpoolOptions{Dir: spool}, promReg, nil)
	if err != nil {
		return err
	}
	// ShutdownTimeout: the spool gets 30 s to ship at exit, so that what
	// was spooled is shipped before the counts are printed.
	srv, err := serve.New(serve.Config{Addr: addr, Models: models, Open: true, PollInterval: time.Hour, ShutdownTimeout: 30 * time.Second},
		serve.Options{Registry: reg, Events: logger, Admin: serve.Admin{}, Registerer: promReg})
	if err != nil {
		logger.Close(time.Second)
		return err
	}
	var swaps atomic.Int64
	var out sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	swapping := make(chan bool, 4)
	if mode == "swap" {
		swapping <- true
	}
	toggle := make(chan os.Signal, 4)
	signal.Notify(toggle, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		var tick <-chan time.Time
		var t *time.Ticker
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-toggle:
				swapping <- sig == syscall.SIGUSR1
			case on := <-swapping:
				if t != nil {
					t.Stop()
					t, tick = nil, nil
				}
				if on {
					t = time.NewTicker(time.Second)
					tick = t.C
				}
			case <-tick:
				reg.version.Add(1)
				start := time.Now()
				if _, err := srv.Swap(ctx, swapModel); err != nil {
					fmt.Fprintln(os.Stderr, "swap:", err)
				}
				took := time.Since(start)
				swaps.Add(1)
				out.Lock()
				enc.Encode(map[string]any{"swap_unix_ns": start.UnixNano(), "took_us": took.Microseconds()})
				out.Unlock()
			}
		}
	}()
	// As in `flywheel serve`: Run ships the spool and, on SIGTERM, drains
	// the requests in flight, ships what is left and closes the logger.
	err = srv.Run(ctx, ln)
	families, _ := promReg.Gather()
	spooled, shipped := 0.0, 0.0
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetName() {
			case "flywheel_events_spooled_total":
				spooled += m.GetCounter().GetValue()
			case "flywheel_events_shipped_total":
				shipped += m.GetCounter().GetValue()
			}
		}
	}
	if deleteTopics {
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		t := kcfg.Topics()
		if derr := kafka.DeleteTopics(dctx, kcfg, t.Decisions, t.Feedback, t.ModelEvents, t.DLQ, t.Election, t.Installation, t.SpoolWatermarks); derr != nil {
			fmt.Fprintln(os.Stderr, derr)
		}
		dcancel()
	}
	out.Lock()
	enc.Encode(map[string]any{"mode": mode, "spooled": spooled, "shipped": shipped, "swaps": swaps.Load()})
	out.Unlock()
	return err
}

// The reference: the same request and response types, decoded and encoded by
// gin, nothing else. A page (slots) is decoded into the same slot type and
// answered in the same shape, each slot the first action no earlier slot
// took and the slot does not exclude.
type rankRequest struct {
	Model           string            `json:"model"`
	EventID         string            `json:"event_id"`
	Context         flywheel.Features `json:"context"`
	Actions         []flywheel.Action `json:"actions"`
	ExcludedActions []string          `json:"excluded_actions,omitempty"`
	Slots           []slotRequest     `json:"slots,omitempty"`
	DeferActivation bool              `json:"defer_activation,omitempty"`
}

type slotRequest struct {
	ID              string         `json:"id"`
	Features        map[string]any `json:"features,omitempty"`
	ExcludedActions []string       `json:"excluded_actions,omitempty"`
	BaselineAction  string         `json:"baseline_action,omitempty"`
}

type rankResponse struct {
	EventID      string            `json:"event_id"`
	Model        string            `json:"model"`
	ModelVersion int               `json:"model_version"`
	Variant      string            `json:"variant"`
	Ranking      []flywheel.Ranked `json:"ranking"`
	Chosen       string            `json:"chosen"`
	Explored     bool              `json:"explored"`
}

type slotAnswer struct {
	ID          string  `json:"id"`
	EventID     string  `json:"event_id"`
	Chosen      string  `json:"chosen"`
	Probability float64 `json:"probability"`
	Explored    bool    `json:"explored"`
}

type slotsResponse struct {
	EventID      string       `json:"event_id"`
	Model        string       `json:"model"`
	ModelVersion int          `json:"model_version"`
	Variant      string       `json:"variant"`
	Slots        []slotAnswer `json:"slots"`
}

func bare(c *gin.Context) {
	var req rankRequest
	if err := c.ShouldBindJSON(&req); err != nil || len(req.Actions) == 0 {
		c.JSON(http.StatusBadRequest, gin.H{"error": "bad request"})
		return
	}
	if len(req.Slots) > 0 {
		bareSlots(c, &req)
		return
	}
	resp := rankResponse{EventID: req.EventID, Model: req.Model, ModelVersion: 1, Variant: "champion", Chosen: req.Actions[0].ID}
	for _, a := range req.Actions {
		resp.Ranking = append(resp.Ranking, flywheel.Ranked{ID: a.ID, Probability: 1 / float64(len(req.Actions))})
	}
	c.JSON(http.StatusOK, resp)
}

func bareSlots(c *gin.Context, req *rankRequest) {
	resp := slotsResponse{EventID: req.EventID, Model: req.Model, ModelVersion: 1, Variant: "champion", Slots: make([]slotAnswer, len(req.Slots))}
	taken := make(map[string]bool, len(req.Slots))
	for i, sl := range req.Slots {
		resp.Slots[i] = slotAnswer{ID: sl.ID, EventID: req.EventID + "#" + sl.ID}
		for _, a := range req.Actions {
			if !taken[a.ID] && !slices.Contains(sl.ExcludedActions, a.ID) {
				taken[a.ID] = true
				resp.Slots[i].Chosen, resp.Slots[i].Probability = a.ID, 1/float64(len(req.Actions)-i)
				break
			}
		}
	}
	c.JSON(http.StatusOK, resp)
}
