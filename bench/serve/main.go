// Command serve is the serving benchmark (make bench; BENCH_ONLY=serve).
//
// With -bench it is the driver: it pins itself and the load generator
// (bench/loadgen, -loadgen) to one core and the servers, Kafka and ClickHouse
// to the other, and runs, in each of -rounds rounds and in the same run for
// both servers, a closed-loop peak, open-loop fixed offered rates, and the
// flywheel server at half of its peak with and without a model swapped in
// every second; it writes bench/results/serve.json (bench.go).
//
// Without -bench it is one server:
//
//	-mode flywheel   the real /v1/rank handler: validation, scoring with a
//	                 trained-shape ranker, every decision spooled and shipped
//	                 to the Kafka broker named by -kafka (topics of its own,
//	                 deleted on exit)
//	-mode swap       the same, with a new model version swapped in every second
//	                 from the start; in flywheel mode SIGUSR1 starts swapping
//	                 and SIGUSR2 stops it
//	-mode bare       a bare gin handler that decodes the same request into the
//	                 same types (encoding/json) and encodes a response of the
//	                 same shape: the reference
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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/eventlog"
	"github.com/flywheel-dev/flywheel/kafka"
	"github.com/flywheel-dev/flywheel/model"
	"github.com/flywheel-dev/flywheel/serve"
)

type registry struct {
	version   atomic.Int64
	artifacts [2][]byte
}

func (r *registry) Champion(_ context.Context, _ string) (int, []byte, error) {
	v := int(r.version.Load())
	return v, r.artifacts[v%2], nil
}

func (r *registry) Canary(context.Context, string) (int, []byte, error) { return 0, nil, nil }

func (r *registry) Alias(_ context.Context, _, alias string) (int, error) {
	if alias == "canary" {
		return 0, nil
	}
	return int(r.version.Load()), nil
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
	mc := flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}}}.WithDefaults()
	reg := &registry{}
	reg.version.Store(1)
	for i := range reg.artifacts {
		m, err := model.FromConfig(mc)
		if err != nil {
			return err
		}
		// give the weights some values so that scoring is not all zeros
		tr := model.NewTrainer(m, model.TrainConfig{})
		_ = tr.LearnRanker(&flywheel.Example{Context: flywheel.Features{"user": {"segment": fmt.Sprint(i)}},
			Actions: []flywheel.Action{{ID: "a", Features: flywheel.Features{"item": {"id": "i1"}}}}, Probabilities: []float64{1}, Reward: 1})
		if reg.artifacts[i], err = tr.Model().MarshalBinary(); err != nil {
			return err
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
	srv, err := serve.New(serve.Config{Addr: addr, Models: map[string]flywheel.ModelConfig{"homepage": mc}, Open: true, PollInterval: time.Hour},
		reg, logger, serve.Admin{}, promReg, nil, nil)
	if err != nil {
		return err
	}
	shipDone := make(chan error, 1)
	go func() { shipDone <- logger.Run(ctx) }()
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
				if _, err := srv.Swap(ctx, "homepage"); err != nil {
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
	err = srv.Run(ctx, ln)
	<-shipDone
	cerr := logger.Close(30 * time.Second)
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
		client := &kafkago.Client{Addr: kafkago.TCP(brokers), Timeout: 10 * time.Second}
		if _, derr := client.DeleteTopics(dctx, &kafkago.DeleteTopicsRequest{Topics: []string{
			t.Decisions, t.Feedback, t.ModelEvents, t.DLQ, t.Election, t.Installation, t.SpoolWatermarks}}); derr != nil {
			fmt.Fprintln(os.Stderr, "delete topics:", derr)
		}
		dcancel()
	}
	out.Lock()
	enc.Encode(map[string]any{"mode": mode, "spooled": spooled, "shipped": shipped, "swaps": swaps.Load()})
	out.Unlock()
	if err != nil {
		return err
	}
	return cerr
}

// The reference: the same request and response types, decoded and encoded by
// gin, nothing else.
type rankRequest struct {
	Model   string            `json:"model"`
	EventID string            `json:"event_id"`
	Context flywheel.Features `json:"context"`
	Actions []flywheel.Action `json:"actions"`
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

func bare(c *gin.Context) {
	var req rankRequest
	if err := c.ShouldBindJSON(&req); err != nil || len(req.Actions) == 0 {
		c.JSON(http.StatusBadRequest, gin.H{"error": "bad request"})
		return
	}
	resp := rankResponse{EventID: req.EventID, Model: req.Model, ModelVersion: 1, Variant: "champion", Chosen: req.Actions[0].ID}
	for _, a := range req.Actions {
		resp.Ranking = append(resp.Ranking, flywheel.Ranked{ID: a.ID, Probability: 1 / float64(len(req.Actions))})
	}
	c.JSON(http.StatusOK, resp)
}
