package main

// The driver (-bench): the method, the runs and the report.
//
// On a small shared machine req/s and tail latency swing from minute to
// minute, so the measures that are reported are the ones that hold: the
// server process's CPU time per request (utime+stime from /proc/PID/stat
// over the same requests whose latencies are measured), next to the bare gin
// handler's in the same round at the same offered rate; and latencies of an
// open-loop generator that measures every request from its scheduled send
// time, on a core of its own. Every figure is reported per round and as the
// median over rounds, the ratios per round (same run) and their median.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type benchOptions struct {
	bench       bool
	loadgen     string
	out         string
	lua         string
	pageLua     string
	rounds      int
	seconds     float64
	warmup      float64
	fractions   string
	conns       int
	serverCPU   int
	loadCPU     int
	pinPorts    string
	basePort    int
	afterSwap   time.Duration
	keepRawDir  string
	nice        int
	idle        float64
	niceOK      bool
	pairs       int
	pairSeconds float64
	pairWarmup  float64
	autogroup   bool // the kernel schedules by autogroup (session): nice is set on the session
	loadRT      bool
	rtOK        bool
}

func (o *benchOptions) flags() {
	flag.BoolVar(&o.bench, "bench", false, "run the whole serving benchmark (the driver) instead of one server")
	flag.StringVar(&o.loadgen, "loadgen", "", "driver: the bench/loadgen binary (default: go build it)")
	flag.StringVar(&o.out, "out", "bench/results/serve.json", "driver: report file")
	flag.StringVar(&o.lua, "body-from-lua", "bench/serve/rank.lua", "driver: wrk script whose wrk.body is the request")
	flag.StringVar(&o.pageLua, "page-body-from-lua", "bench/serve/page.lua", "driver: wrk script whose wrk.body is the multi-slot page request, measured next to the single-slot one (empty: no page runs)")
	flag.IntVar(&o.rounds, "rounds", 3, "driver: rounds (every measure once per round)")
	flag.Float64Var(&o.seconds, "seconds", 8, "driver: measured seconds per run")
	flag.Float64Var(&o.warmup, "warmup", 2, "driver: warm-up seconds before each measured run")
	flag.StringVar(&o.fractions, "fractions", "0.25,0.5,0.75", "driver: offered rates as fractions of the lower of the two servers' closed-loop peaks (round 1), a load both sustain; 0.5 is always included")
	flag.IntVar(&o.conns, "conns", 32, "driver: closed-loop connections for the peak")
	flag.IntVar(&o.serverCPU, "server-cpu", 0, "driver: the CPU of the servers, Kafka and ClickHouse")
	flag.IntVar(&o.loadCPU, "load-cpu", 1, "driver: the CPU of the load generator (and the driver)")
	flag.StringVar(&o.pinPorts, "pin-ports", "auto", "driver: name=port,... of local services moved to -server-cpu for the run (restored after); auto: kafka at -kafka's port, clickhouse at $FLYWHEEL_TEST_CLICKHOUSE's (9000); empty: none")
	flag.IntVar(&o.basePort, "port", 18180, "driver: first server port")
	flag.DurationVar(&o.afterSwap, "after-swap", 250*time.Millisecond, "driver: the window after each swap whose requests' p99 is reported apart")
	flag.IntVar(&o.nice, "nice", -10, "driver: niceness of the servers and the load generator, so that other work on a shared machine yields to them (0: unchanged; ignored where not permitted)")
	flag.BoolVar(&o.loadRT, "loadgen-fifo", true, "driver: run the load generator SCHED_FIFO (chrt -f 1) on its CPU, so that it sends on schedule whatever else runs there (ignored where not permitted)")
	flag.IntVar(&o.pairs, "pairs", 2, "driver: at half of peak, interleaved pairs of short slices per round for flywheel vs bare and swapping vs steady (0: one run each of -seconds)")
	flag.Float64Var(&o.pairSeconds, "pair-seconds", 4, "driver: measured seconds of each slice of a pair")
	flag.Float64Var(&o.pairWarmup, "pair-warmup", 1, "driver: warm-up seconds of each slice of a pair")
	flag.Float64Var(&o.idle, "idle", 3, "driver: seconds of each round with both servers idle, whose CPU use is reported (idle_cores) and netted out in *_net_of_idle")
	flag.StringVar(&o.keepRawDir, "raw-dir", "", "driver: keep the per-request latency files here")
}

// lgResult is bench/loadgen's output line.
type lgResult struct {
	Mode       string  `json:"mode"`
	TargetRPS  float64 `json:"target_rps,omitempty"`
	OfferedRPS float64 `json:"offered_rps,omitempty"`
	Conns      int     `json:"conns,omitempty"`
	Requests   int     `json:"requests"`
	Errors     int     `json:"errors"`
	Seconds    float64 `json:"seconds"`
	RPS        float64 `json:"rps"`
	P50        float64 `json:"p50_ms"`
	P90        float64 `json:"p90_ms"`
	P99        float64 `json:"p99_ms"`
	P999       float64 `json:"p999_ms"`
	Max        float64 `json:"max_ms"`
	SendLagP99 float64 `json:"send_lag_p99_ms,omitempty"`
	SendLagMax float64 `json:"send_lag_max_ms,omitempty"`
	CPU        map[string]struct {
		Seconds      float64 `json:"cpu_seconds"`
		USPerRequest float64 `json:"cpu_us_per_request"`
		Cores        float64 `json:"cores_used"`
		RunQueueWait float64 `json:"runqueue_wait_share"`
	} `json:"cpu"`
	CPUWindow    float64        `json:"cpu_window_seconds"`
	LoadgenCores float64        `json:"loadgen_cores_used"`
	LoadgenWait  float64        `json:"loadgen_runqueue_wait_share"`
	CPUBusy      []float64      `json:"cpu_busy"`
	Statuses     map[string]int `json:"error_statuses,omitempty"`
}

// run is one measured run in the report.
type runResult struct {
	Round  int    `json:"round"`
	Phase  string `json:"phase"` // peak | rate | steady | swap | page_peak | page
	Server string `json:"server"`
	// Request is the body sent: single (-body-from-lua) or page
	// (-page-body-from-lua).
	Request string  `json:"request"`
	Rate    float64 `json:"offered_rps,omitempty"`
	lgResult
	ServerCPUUSPerRequest float64 `json:"server_cpu_us_per_request"`
	ServerCores           float64 `json:"server_cores_used"`
	// the server's CPU use with no load (this round), and CPU per request
	// without it
	IdleCores            float64 `json:"server_idle_cores"`
	ServerCPUUSNetOfIdle float64 `json:"server_cpu_us_per_request_net_of_idle"`
	KafkaCPUUSPerRequest float64 `json:"kafka_cpu_us_per_request,omitempty"`
	// busy share of the server's CPU not from the server, Kafka or
	// ClickHouse (other workloads), and of the load CPU not from loadgen
	OtherBusyServerCPU float64 `json:"other_busy_server_cpu"`
	OtherBusyLoadCPU   float64 `json:"other_busy_load_cpu"`
	// swap runs
	Swaps           int     `json:"swaps,omitempty"`
	SwapTookMSMax   float64 `json:"swap_took_ms_max,omitempty"`
	AfterSwapN      int     `json:"after_swap_requests,omitempty"`
	AfterSwapP99    float64 `json:"after_swap_p99_ms,omitempty"`
	AwayFromSwapP99 float64 `json:"away_from_swap_p99_ms,omitempty"`
}

type pinned struct {
	Name string `json:"name"`
	Port int    `json:"port"`
	PID  int    `json:"pid"`
	Was  string `json:"affinity_before"`
}

type server struct {
	mode string
	port int
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  []string // its stdout lines
	done chan struct{}
	errb bytes.Buffer
}

func (s *server) url() string { return fmt.Sprintf("http://127.0.0.1:%d/v1/rank", s.port) }

func (s *server) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.out)
}

func (o *benchOptions) run(brokers string) error {
	if o.rounds < 1 || o.rounds > 5 || o.seconds <= 0 || o.seconds > 60 || o.warmup < 0 || o.warmup > 10 {
		return errors.New("-rounds must be 1-5, -seconds in (0, 60], -warmup in [0, 10]")
	}
	if o.serverCPU == o.loadCPU {
		return errors.New("-server-cpu and -load-cpu must differ")
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return errors.New("taskset (util-linux) is needed to pin the processes")
	}
	// The driver runs on the load CPU, as the load generator does.
	if os.Getenv("FLYWHEEL_BENCH_SERVE_PINNED") == "" {
		if runtime.NumCPU() < 2 {
			return fmt.Errorf("%d CPU: the method needs two, one for the server side and one for the load", runtime.NumCPU())
		}
		self, err := os.Executable()
		if err != nil {
			return err
		}
		ts, _ := exec.LookPath("taskset")
		return syscall.Exec(ts, append([]string{"taskset", "-c", strconv.Itoa(o.loadCPU), self}, os.Args[1:]...),
			append(os.Environ(), "FLYWHEEL_BENCH_SERVE_PINNED=1"))
	}
	if o.nice != 0 {
		ag, _ := os.ReadFile("/proc/sys/kernel/sched_autogroup_enabled")
		o.autogroup = strings.TrimSpace(string(ag)) == "1"
		o.niceOK = exec.Command("nice", "-n", strconv.Itoa(o.nice), "true").Run() == nil
		if !o.niceOK {
			fmt.Fprintf(os.Stderr, "bench serve: nice -n %d not permitted here: servers and load generator at the default priority\n", o.nice)
		}
	}
	if o.loadRT {
		o.rtOK = exec.Command("chrt", "-f", "1", "true").Run() == nil
		if !o.rtOK {
			fmt.Fprintln(os.Stderr, "bench serve: chrt -f 1 not permitted here: the load generator runs at nice", o.nice)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	work, err := os.MkdirTemp("", "flywheel-bench-serve-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if o.loadgen == "" {
		o.loadgen = filepath.Join(work, "loadgen")
		if b, err := exec.Command("go", "build", "-o", o.loadgen, "./bench/loadgen").CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./bench/loadgen: %v\n%s", err, b)
		}
	}
	body, err := os.ReadFile(o.lua)
	if err != nil {
		return err
	}
	reqBytes := len(luaString(string(body)))
	pageBytes, pageSlots, pageActions := 0, 0, 0
	if o.pageLua != "" {
		pb, err := os.ReadFile(o.pageLua)
		if err != nil {
			return err
		}
		var page struct {
			Actions []json.RawMessage `json:"actions"`
			Slots   []json.RawMessage `json:"slots"`
		}
		if err := json.Unmarshal([]byte(luaString(string(pb))), &page); err != nil || len(page.Slots) == 0 {
			return fmt.Errorf("%s: wrk.body is not a rank request with slots (%v)", o.pageLua, err)
		}
		pageBytes, pageSlots, pageActions = len(luaString(string(pb))), len(page.Slots), len(page.Actions)
	}
	fractions := []float64{}
	for _, f := range strings.Split(o.fractions, ",") {
		x, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || x <= 0 || x > 1.5 {
			return fmt.Errorf("-fractions: %q", f)
		}
		fractions = append(fractions, x)
	}
	if !slices.Contains(fractions, 0.5) {
		fractions = append(fractions, 0.5)
	}
	slices.Sort(fractions)

	// Kafka and ClickHouse on the server's CPU for the run.
	if o.pinPorts == "auto" {
		kp, cp := "9092", "9000"
		if _, p, err := net.SplitHostPort(brokers); err == nil {
			kp = p
		}
		if _, p, err := net.SplitHostPort(os.Getenv("FLYWHEEL_TEST_CLICKHOUSE")); err == nil {
			cp = p
		}
		o.pinPorts = "kafka=" + kp + ",clickhouse=" + cp
	}
	pins, err := pinServices(o.pinPorts, o.serverCPU)
	defer unpin(pins)
	if err != nil {
		return err
	}
	for _, p := range pins {
		fmt.Fprintf(os.Stderr, "bench serve: %s (pid %d, port %d) pinned to CPU %d for the run (was mask %s)\n", p.Name, p.PID, p.Port, o.serverCPU, p.Was)
	}

	var runs []runResult
	var rates []float64
	var peakFly, peakFlyPage, pageRate float64
	peakLow, pageLow := math.Inf(1), math.Inf(1) // the lower of the two servers' peaks, round 1
	serverStats := []map[string]any{}
	idleStats := []map[string]any{}
	port := o.basePort
	started := time.Now()
	for round := 1; round <= o.rounds; round++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		bare, err := o.startServer(ctx, "bare", port, brokers)
		if err != nil {
			return err
		}
		fly, err := o.startServer(ctx, "flywheel", port+1, brokers)
		if err != nil {
			bare.stop()
			return err
		}
		port += 2
		servers := []*server{bare, fly}
		if round%2 == 0 {
			servers = []*server{fly, bare}
		}
		// both servers idle
		idle := map[string]float64{}
		if o.idle > 0 {
			time.Sleep(500 * time.Millisecond)
			t0 := time.Now()
			b0, _ := procTicks(bare.cmd.Process.Pid)
			f0, _ := procTicks(fly.cmd.Process.Pid)
			time.Sleep(time.Duration(o.idle * float64(time.Second)))
			b1, _ := procTicks(bare.cmd.Process.Pid)
			f1, _ := procTicks(fly.cmd.Process.Pid)
			w := time.Since(t0).Seconds()
			idle["bare"], idle["flywheel"] = round3(float64(b1-b0)/100/w), round3(float64(f1-f0)/100/w)
			fmt.Fprintf(os.Stderr, "bench serve: round %d idle: bare %.3f cores, flywheel %.3f cores\n", round, idle["bare"], idle["flywheel"])
			idleStats = append(idleStats, map[string]any{"round": round, "bare_cores": idle["bare"], "flywheel_cores": idle["flywheel"]})
		}
		kafkaPID := 0
		chPID := 0
		for _, p := range pins {
			switch p.Name {
			case "kafka":
				kafkaPID = p.PID
			case "clickhouse":
				chPID = p.PID
			}
		}
		measureReq := func(s *server, phase, request string, rate float64, raw string, dur, warm float64) (runResult, error) {
			lua := o.lua
			if request == "page" {
				lua = o.pageLua
			}
			args := o.prefix(o.loadCPU)[1:]
			if o.rtOK {
				args = append(args[:2], "chrt", "-f", "1")
			}
			args = append(args, o.loadgen, "-url", s.url(), "-body-from-lua", lua,
				"-duration", secs(dur), "-warmup", secs(warm), "-rate", strconv.FormatFloat(rate, 'f', -1, 64),
				"-conns", strconv.Itoa(o.conns))
			pids := fmt.Sprintf("server=%d", s.cmd.Process.Pid)
			if kafkaPID > 0 {
				pids += fmt.Sprintf(",kafka=%d", kafkaPID)
			}
			if chPID > 0 {
				pids += fmt.Sprintf(",clickhouse=%d", chPID)
			}
			args = append(args, "-pids", pids)
			if raw != "" {
				args = append(args, "-raw", raw)
			}
			c := exec.CommandContext(ctx, "taskset", args...)
			var stdout, stderr bytes.Buffer
			c.Stdout, c.Stderr = &stdout, &stderr
			err := o.start(c)
			if err == nil {
				err = c.Wait()
			}
			b := stdout.Bytes()
			if err != nil {
				return runResult{}, fmt.Errorf("loadgen: %v: %s", err, stderr.String())
			}
			var r runResult
			if err := json.Unmarshal(lastLine(b), &r.lgResult); err != nil {
				return runResult{}, fmt.Errorf("loadgen output %q: %v", b, err)
			}
			r.Round, r.Phase, r.Server, r.Request, r.Rate = round, phase, s.mode, request, rate
			r.ServerCPUUSPerRequest = r.CPU["server"].USPerRequest
			r.ServerCores = r.CPU["server"].Cores
			r.IdleCores = idle[s.mode]
			if r.Requests > 0 {
				r.ServerCPUUSNetOfIdle = math.Round((r.CPU["server"].Seconds-r.IdleCores*r.CPUWindow)*1e7/float64(r.Requests)) / 10
			}
			if s.mode != "bare" {
				r.KafkaCPUUSPerRequest = r.CPU["kafka"].USPerRequest
			}
			if len(r.CPUBusy) > max(o.serverCPU, o.loadCPU) {
				r.OtherBusyServerCPU = round3(max(0, r.CPUBusy[o.serverCPU]-r.CPU["server"].Cores-r.CPU["kafka"].Cores-r.CPU["clickhouse"].Cores))
				r.OtherBusyLoadCPU = round3(max(0, r.CPUBusy[o.loadCPU]-r.LoadgenCores))
			}
			label := s.mode
			if phase == "swap" {
				label = "flywheel+swaps"
			}
			if request != "single" {
				label += " " + request
			}
			fmt.Fprintf(os.Stderr, "bench serve: round %d %-9s %-15s offered %6.0f/s: %6.0f/s p50 %6.2f p99 %7.2f p999 %7.2f ms, server %5.0f µs/req (%.2f cores), errors %d %v, send lag p99 %.1f ms, other load on server CPU %.0f%%, load CPU %.0f%%\n",
				round, phase, label, rate, r.RPS, r.P50, r.P99, r.P999, r.ServerCPUUSPerRequest, r.ServerCores, r.Errors, r.Statuses, r.SendLagP99, 100*r.OtherBusyServerCPU, 100*r.OtherBusyLoadCPU)
			return r, nil
		}
		measure := func(s *server, phase string, rate float64, raw string, dur, warm float64) (runResult, error) {
			return measureReq(s, phase, "single", rate, raw, dur, warm)
		}
		fail := func(err error) error {
			bare.stop()
			fly.stop()
			return err
		}
		// peak: closed loop
		for _, s := range servers {
			r, err := measure(s, "peak", 0, "", o.seconds, o.warmup)
			if err != nil {
				return fail(err)
			}
			runs = append(runs, r)
			if s.mode == "flywheel" && round == 1 {
				peakFly = r.RPS
			}
			if round == 1 {
				peakLow = math.Min(peakLow, r.RPS)
			}
		}
		// the page's peak, closed loop, on both servers
		if o.pageLua != "" {
			for _, s := range servers {
				r, err := measureReq(s, "page_peak", "page", 0, "", o.seconds, o.warmup)
				if err != nil {
					return fail(err)
				}
				runs = append(runs, r)
				if s.mode == "flywheel" && round == 1 {
					peakFlyPage = r.RPS
				}
				if round == 1 {
					pageLow = math.Min(pageLow, r.RPS)
					pageRate = math.Max(50, math.Round(0.5*pageLow/10)*10)
				}
			}
		}
		if round == 1 {
			for _, f := range fractions {
				rates = append(rates, math.Max(50, math.Round(f*peakLow/10)*10))
			}
		}
		half := rates[slices.Index(fractions, 0.5)]
		for _, rate := range rates {
			if rate == half && o.pairs > 0 {
				continue
			}
			for _, s := range servers {
				r, err := measure(s, "rate", rate, "", o.seconds, o.warmup)
				if err != nil {
					return fail(err)
				}
				runs = append(runs, r)
			}
		}
		// At half of peak, the two comparisons whose tails are reported as
		// ratios (flywheel vs bare; swapping vs steady, on the same process)
		// run as interleaved pairs of short slices, the order alternating,
		// so that each pair shares the machine's weather.
		pairs, dur, warm := o.pairs, o.pairSeconds, o.pairWarmup
		if pairs == 0 {
			pairs, dur, warm = 1, o.seconds, o.warmup
		}
		for k := range pairs {
			if o.pairs > 0 {
				order := servers
				if k%2 == 1 {
					order = []*server{servers[1], servers[0]}
				}
				for _, s := range order {
					r, err := measure(s, "rate", half, "", dur, warm)
					if err != nil {
						return fail(err)
					}
					runs = append(runs, r)
				}
			}
			for _, swap := range []bool{(round+k)%2 == 0, (round+k)%2 != 0} {
				if swap {
					fly.cmd.Process.Signal(syscall.SIGUSR1)
					time.Sleep(50 * time.Millisecond)
					raw := filepath.Join(work, fmt.Sprintf("swap-%d-%d.txt", round, k))
					r, err := measure(fly, "swap", half, raw, dur, warm)
					fly.cmd.Process.Signal(syscall.SIGUSR2)
					if err != nil {
						return fail(err)
					}
					o.swapWindows(&r, raw, fly.lines())
					if o.keepRawDir != "" {
						os.MkdirAll(o.keepRawDir, 0o755)
						if b, err := os.ReadFile(raw); err == nil {
							os.WriteFile(filepath.Join(o.keepRawDir, filepath.Base(raw)), b, 0o644)
						}
					}
					runs = append(runs, r)
					time.Sleep(300 * time.Millisecond)
				} else {
					r, err := measure(fly, "steady", half, "", dur, warm)
					if err != nil {
						return fail(err)
					}
					runs = append(runs, r)
				}
			}
		}
		// The page next to the single-slot request: at half of the flywheel
		// server's page peak (round 1), all four of bare and flywheel, single
		// and page, at that one offered rate in groups of short slices (the
		// order rotating), so that each group shares the machine's weather.
		if o.pageLua != "" {
			type run struct {
				s       *server
				request string
			}
			four := []run{{bare, "single"}, {fly, "single"}, {bare, "page"}, {fly, "page"}}
			for k := range pairs {
				shift := ((round-1)*pairs + k) % len(four)
				for j := range four {
					x := four[(j+shift)%len(four)]
					r, err := measureReq(x.s, "page", x.request, pageRate, "", dur, warm)
					if err != nil {
						return fail(err)
					}
					runs = append(runs, r)
				}
			}
		}
		for _, s := range []*server{bare, fly} {
			st, err := s.stop()
			if err != nil {
				return err
			}
			if st != nil {
				st["round"] = round
				serverStats = append(serverStats, st)
			}
		}
	}
	rep := o.report(runs, peakFly, peakLow, rates, fractions, pins, serverStats, idleStats, reqBytes, time.Since(started))
	if o.pageLua != "" {
		o.reportPage(rep, runs, peakFlyPage, pageRate, pageBytes, pageSlots, pageActions)
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(o.out, append(b, '\n'), 0o644); err != nil {
		return err
	}
	printTable(os.Stdout, rep)
	printPage(os.Stdout, rep)
	fmt.Fprintf(os.Stderr, "bench serve: wrote %s (%.0f s)\n", o.out, time.Since(started).Seconds())
	return nil
}

// prefix is the command prefix that pins to cpu (and renices).
func (o *benchOptions) prefix(cpu int) []string {
	p := []string{"taskset", "-c", strconv.Itoa(cpu)}
	if o.nice != 0 && o.niceOK && !o.autogroup {
		p = append(p, "nice", "-n", strconv.Itoa(o.nice))
	}
	return p
}

// start starts c in a session of its own (so, with autogroup scheduling, a
// group of its own) and sets its priority.
func (o *benchOptions) start(c *exec.Cmd) error {
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.Start(); err != nil {
		return err
	}
	if o.nice != 0 && o.niceOK && o.autogroup {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/autogroup", c.Process.Pid), []byte(strconv.Itoa(o.nice)), 0); err != nil {
			fmt.Fprintf(os.Stderr, "bench serve: autogroup nice of pid %d: %v\n", c.Process.Pid, err)
		}
	}
	return nil
}

func secs(s float64) string { return strconv.FormatFloat(s, 'f', -1, 64) + "s" }

func luaString(s string) string {
	i := strings.Index(s, "wrk.body = '")
	if i < 0 {
		return ""
	}
	s = s[i+len("wrk.body = '"):]
	if j := strings.IndexByte(s, '\''); j >= 0 {
		return s[:j]
	}
	return ""
}

func lastLine(b []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return lines[len(lines)-1]
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// startServer starts `serve -mode mode` on the server CPU and waits until it
// answers the benchmark's request.
func (o *benchOptions) startServer(ctx context.Context, mode string, port int, brokers string) (*server, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	s := &server{mode: mode, port: port, done: make(chan struct{})}
	args := append(o.prefix(o.serverCPU), self, "-mode", mode, "-addr", fmt.Sprintf("127.0.0.1:%d", port), "-kafka", brokers)
	s.cmd = exec.Command(args[0], args[1:]...)
	s.cmd.Stderr = &s.errb
	s.cmd.Env = os.Environ()
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := o.start(s.cmd); err != nil {
		return nil, err
	}
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.mu.Lock()
			s.out = append(s.out, sc.Text())
			s.mu.Unlock()
		}
	}()
	body := luaString(mustRead(o.lua))
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Post(s.url(), "application/json", strings.NewReader(body))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				if mode != "bare" && !bytes.Contains(b, []byte(`"ranking"`)) {
					s.stop()
					return nil, fmt.Errorf("%s server answered %s", mode, b)
				}
				if o.pageLua != "" {
					if err := checkPage(s.url(), luaString(mustRead(o.pageLua))); err != nil {
						s.stop()
						return nil, fmt.Errorf("%s server: %v", mode, err)
					}
				}
				return s, nil
			}
		}
		select {
		case <-s.done:
			s.cmd.Wait()
			return nil, fmt.Errorf("%s server exited: %s", mode, s.errb.String())
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("%s server not answering after 60 s: %s", mode, s.errb.String())
		}
	}
}

// procTicks is utime+stime of pid (all its threads), in clock ticks (100/s).
func procTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st, nil
}

func mustRead(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// stop sends SIGTERM, waits (at most 40 s) and returns the server's last
// JSON line (spooled, shipped, swaps) if it printed one.
func (s *server) stop() (map[string]any, error) {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(40 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	err := s.cmd.Wait()
	if err != nil {
		return nil, fmt.Errorf("%s server: %v: %s", s.mode, err, s.errb.String())
	}
	lines := s.lines()
	for i := len(lines) - 1; i >= 0; i-- {
		var m map[string]any
		if json.Unmarshal([]byte(lines[i]), &m) == nil && m["mode"] != nil {
			return m, nil
		}
	}
	return nil, nil
}

var pidRE = regexp.MustCompile(`pid=(\d+)`)
var maskRE = regexp.MustCompile(`affinity mask: ([0-9a-fA-F]+)`)

// pinServices moves every thread of each local service listening on the
// named ports to cpu, and returns what to restore.
func pinServices(spec string, cpu int) ([]pinned, error) {
	var out []pinned
	for _, kv := range strings.Split(spec, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		name, ps, ok := strings.Cut(kv, "=")
		port, err := strconv.Atoi(ps)
		if !ok || err != nil {
			return out, fmt.Errorf("-pin-ports: %q is not name=port", kv)
		}
		b, err := exec.Command("ss", "-H", "-ltnp", fmt.Sprintf("sport = :%d", port)).Output()
		m := pidRE.FindSubmatch(b)
		if err != nil || m == nil {
			fmt.Fprintf(os.Stderr, "bench serve: no process of ours listens on %d (%s): not pinned\n", port, name)
			continue
		}
		pid, _ := strconv.Atoi(string(m[1]))
		mb, err := exec.Command("taskset", "-p", strconv.Itoa(pid)).Output()
		mm := maskRE.FindSubmatch(mb)
		if err != nil || mm == nil {
			return out, fmt.Errorf("taskset -p %d: %v %s", pid, err, mb)
		}
		p := pinned{Name: name, Port: port, PID: pid, Was: string(mm[1])}
		if b, err := exec.Command("taskset", "-a", "-p", "-c", strconv.Itoa(cpu), strconv.Itoa(pid)).CombinedOutput(); err != nil {
			return out, fmt.Errorf("taskset -a -p -c %d %d: %v %s", cpu, pid, err, b)
		}
		out = append(out, p)
	}
	return out, nil
}

func unpin(pins []pinned) {
	for _, p := range pins {
		if b, err := exec.Command("taskset", "-a", "-p", p.Was, strconv.Itoa(p.PID)).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bench serve: could not restore %s (pid %d) to mask %s: %v %s\n", p.Name, p.PID, p.Was, err, b)
		} else {
			fmt.Fprintf(os.Stderr, "bench serve: %s (pid %d) back to mask %s\n", p.Name, p.PID, p.Was)
		}
	}
}

// swapWindows splits a swap run's requests into those scheduled within
// afterSwap of a swap's start and the rest.
func (o *benchOptions) swapWindows(r *runResult, raw string, serverLines []string) {
	var swaps []int64
	var tookMax int64
	for _, l := range serverLines {
		var m struct {
			At   int64 `json:"swap_unix_ns"`
			Took int64 `json:"took_us"`
		}
		if json.Unmarshal([]byte(l), &m) == nil && m.At > 0 {
			swaps = append(swaps, m.At)
			tookMax = max(tookMax, m.Took)
		}
	}
	f, err := os.Open(raw)
	if err != nil {
		return
	}
	defer f.Close()
	var near, away []float64
	var first, last int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 3 {
			continue
		}
		due, _ := strconv.ParseInt(fs[0], 10, 64)
		lat, _ := strconv.ParseInt(fs[1], 10, 64)
		if first == 0 {
			first = due
		}
		last = due
		i, _ := slices.BinarySearch(swaps, due+1)
		if i > 0 && due-swaps[i-1] < o.afterSwap.Nanoseconds() {
			near = append(near, float64(lat)/1e6)
		} else {
			away = append(away, float64(lat)/1e6)
		}
	}
	n := 0
	for _, s := range swaps {
		if s >= first && s <= last {
			n++
		}
	}
	r.Swaps, r.SwapTookMSMax = n, float64(tookMax)/1000
	r.AfterSwapN = len(near)
	r.AfterSwapP99, r.AwayFromSwapP99 = quantile(near, 0.99), quantile(away, 0.99)
}

func quantile(x []float64, p float64) float64 {
	if len(x) == 0 {
		return 0
	}
	s := slices.Clone(x)
	slices.Sort(s)
	i := min(len(s)-1, max(0, int(p*float64(len(s))+0.5)-1))
	return math.Round(s[i]*1000) / 1000
}

func median(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	s := slices.Clone(x)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return math.Round(a/b*1000) / 1000
}

// row is a line of the summary table: medians over rounds.
type row struct {
	Phase                 string    `json:"phase"`
	Rate                  float64   `json:"offered_rps,omitempty"`
	Fraction              float64   `json:"fraction_of_peak,omitempty"`
	Server                string    `json:"server"`
	Request               string    `json:"request"`
	RPS                   float64   `json:"rps"`
	P50                   float64   `json:"p50_ms"`
	P99                   float64   `json:"p99_ms"`
	P999                  float64   `json:"p999_ms"`
	ServerCPUUSPerRequest float64   `json:"server_cpu_us_per_request"`
	ServerCPUUSNetOfIdle  float64   `json:"server_cpu_us_per_request_net_of_idle"`
	KafkaCPUUSPerRequest  float64   `json:"kafka_cpu_us_per_request,omitempty"`
	Errors                int       `json:"errors"`
	ServerCPURounds       []float64 `json:"server_cpu_us_per_request_runs"`
	P99Rounds             []float64 `json:"p99_ms_runs"`
	AfterSwapP99          float64   `json:"after_swap_p99_ms,omitempty"`
}

type ratioSet struct {
	Median float64   `json:"median"`
	Pairs  []float64 `json:"same_run_pairs"` // one per round, or per slice pair at half of peak
}

// pickRuns returns the runs of phase, server and request at rate, in the
// order they ran.
func pickRuns(runs []runResult, phase, server, request string, rate float64) []runResult {
	var out []runResult
	for _, r := range runs {
		if r.Phase == phase && r.Server == server && r.Rate == rate && r.Request == request {
			out = append(out, r)
		}
	}
	return out
}

// summarizeRuns fills w with the medians of rs.
func summarizeRuns(rs []runResult, w row) row {
	var rps, p50, p99, p999, cpu, net, kcpu, asw []float64
	for _, r := range rs {
		rps, p50, p99, p999 = append(rps, r.RPS), append(p50, r.P50), append(p99, r.P99), append(p999, r.P999)
		cpu, kcpu, asw = append(cpu, r.ServerCPUUSPerRequest), append(kcpu, r.KafkaCPUUSPerRequest), append(asw, r.AfterSwapP99)
		net = append(net, r.ServerCPUUSNetOfIdle)
		w.Errors += r.Errors
	}
	w.ServerCPUUSNetOfIdle = median(net)
	w.RPS, w.P50, w.P99, w.P999 = median(rps), median(p50), median(p99), median(p999)
	w.ServerCPUUSPerRequest, w.KafkaCPUUSPerRequest, w.AfterSwapP99 = median(cpu), median(kcpu), median(asw)
	w.ServerCPURounds, w.P99Rounds = cpu, p99
	return w
}

// sameRunRatios is f(a[i])/f(b[i]) for each same-run pair i, and their
// median.
func sameRunRatios(f func(runResult) float64, a, b []runResult) ratioSet {
	var rs []float64
	for i := range min(len(a), len(b)) {
		rs = append(rs, ratio(f(a[i]), f(b[i])))
	}
	return ratioSet{Median: math.Round(median(rs)*1000) / 1000, Pairs: rs}
}

func (o *benchOptions) report(runs []runResult, peakFly, peakLow float64, rates, fractions []float64, pins []pinned, stats, idleStats []map[string]any, reqBytes int, took time.Duration) map[string]any {
	pick := func(phase, server string, rate float64) []runResult {
		return pickRuns(runs, phase, server, "single", rate)
	}
	summarize := func(phase, server string, rate, frac float64) row {
		w := row{Phase: phase, Rate: rate, Fraction: frac, Server: server, Request: "single"}
		if phase == "swap" {
			w.Server = "flywheel+swaps"
		}
		return summarizeRuns(pick(phase, server, rate), w)
	}
	// per-round ratios of a measure between two (phase, server) at a rate
	perRound := func(f func(runResult) float64, pa, sa, pb, sb string, rate float64) ratioSet {
		return sameRunRatios(f, pick(pa, sa, rate), pick(pb, sb, rate))
	}
	cpuOf := func(r runResult) float64 { return r.ServerCPUUSPerRequest }
	netOf := func(r runResult) float64 { return r.ServerCPUUSNetOfIdle }
	netByRate := map[string]ratioSet{}
	p99Of := func(r runResult) float64 { return r.P99 }
	rpsOf := func(r runResult) float64 { return r.RPS }

	var table []row
	table = append(table, summarize("peak", "bare", 0, 0), summarize("peak", "flywheel", 0, 0))
	cpuByRate := map[string]ratioSet{}
	p99ByRate := map[string]ratioSet{}
	for i, rate := range rates {
		table = append(table, summarize("rate", "bare", rate, fractions[i]), summarize("rate", "flywheel", rate, fractions[i]))
		k := strconv.FormatFloat(rate, 'f', -1, 64)
		cpuByRate[k] = perRound(cpuOf, "rate", "flywheel", "rate", "bare", rate)
		netByRate[k] = perRound(netOf, "rate", "flywheel", "rate", "bare", rate)
		p99ByRate[k] = perRound(p99Of, "rate", "flywheel", "rate", "bare", rate)
	}
	half := rates[slices.Index(fractions, 0.5)]
	table = append(table, summarize("steady", "flywheel", half, 0.5), summarize("swap", "flywheel", half, 0.5))

	halfKey := strconv.FormatFloat(half, 'f', -1, 64)
	cpuHalf, p99Half := cpuByRate[halfKey], p99ByRate[halfKey]
	swapVsSteady := perRound(p99Of, "swap", "flywheel", "steady", "flywheel", half)
	// Within each swapping run: the p99 of the requests scheduled within
	// -after-swap of a swap over that of the run's other requests, which
	// share the run's machine weather (the steady runs are other minutes).
	var nearAway []float64
	for _, r := range pick("swap", "flywheel", half) {
		if r.AfterSwapP99 > 0 && r.AwayFromSwapP99 > 0 {
			nearAway = append(nearAway, ratio(r.AfterSwapP99, r.AwayFromSwapP99))
		}
	}
	afterVsAway := ratioSet{Median: math.Round(median(nearAway)*1000) / 1000, Pairs: nearAway}
	ratios := map[string]any{
		"server_cpu_per_request_flywheel_vs_bare_at_half_peak":        cpuHalf,
		"server_cpu_per_request_flywheel_vs_bare_by_rate":             cpuByRate,
		"server_cpu_per_request_net_of_idle_flywheel_vs_bare_by_rate": netByRate,
		"server_cpu_per_request_flywheel_vs_bare_at_peak":             perRound(cpuOf, "peak", "flywheel", "peak", "bare", 0),
		"p99_flywheel_vs_bare_at_half_peak":                           p99Half,
		"p99_flywheel_vs_bare_by_rate":                                p99ByRate,
		"p99_swaps_vs_steady_at_half_peak":                            swapVsSteady,
		"p99_after_swap_vs_between_swaps_same_run_at_half_peak":       afterVsAway,
		"throughput_flywheel_vs_bare_at_peak":                         perRound(rpsOf, "peak", "flywheel", "peak", "bare", 0),
	}
	machine := ""
	if b, err := exec.Command("uname", "-srm").Output(); err == nil {
		machine = strings.TrimSpace(string(b))
	}
	return map[string]any{
		"benchmark": "serve",
		"when":      time.Now().UTC().Format(time.RFC3339),
		"machine":   machine,
		"cpus":      runtime.NumCPU(),
		"go":        runtime.Version(),
		"seconds":   math.Round(took.Seconds()),
		"method": "Servers (bench/serve -mode bare|flywheel, GOMAXPROCS 1 from their affinity) pinned with taskset to CPU " +
			strconv.Itoa(o.serverCPU) + " together with the Kafka broker and ClickHouse (moved there for the run, restored after); " +
			"the load generator (bench/loadgen) and this driver pinned to CPU " + strconv.Itoa(o.loadCPU) + "; loopback. " +
			"The request: bench/serve/rank.lua's body, 20 actions, about 30 features; flywheel = the real /v1/rank handler, " +
			"every decision spooled and shipped to Kafka; bare = a gin handler binding the same JSON into the same request " +
			"types with encoding/json and answering a ranking of the same shape. Each round starts both servers and measures, " +
			"alternating which goes first: the closed-loop peak (" + strconv.Itoa(o.conns) + " connections), then open-loop runs at " +
			"fixed offered rates (fractions of the lower of round 1's two closed-loop peaks, so that both servers sustain every rate and their tails compare at one load) where every request is sent at its scheduled time " +
			"whatever the earlier ones did and its latency is measured from that scheduled time (coordinated omission corrected), " +
			"and at half of that peak, in interleaved pairs of short slices (order alternating), bare vs flywheel and the " +
			"flywheel server steady vs while a new model version is swapped in every second (same process, SIGUSR1/SIGUSR2); within each swapping run, the p99 of the requests scheduled within the after-swap window of a swap is also set against that of the run's other requests (p99_after_swap_vs_between_swaps_same_run_at_half_peak), which share its minutes. The load generator runs SCHED_FIFO priority 1 where permitted (it is the clock " +
			"of every latency: it must send on schedule), the servers at nice " + strconv.Itoa(o.nice) +
			" (each in a session of its own, the nice set on its autogroup where the kernel schedules by autogroup), so that " +
			"other work on a shared machine yields to the benchmark; Kafka and ClickHouse, which other work may use too, keep " +
			"their priority. Every run: " + secs(o.warmup) + " warm-up, " + secs(o.seconds) + " measured; every slice of a pair " +
			secs(o.pairWarmup) + " and " + secs(o.pairSeconds) + ". " +
			"Server CPU per request = the server process's utime+stime (/proc/PID/stat, all threads) over the measured window " +
			"(plus a 300 ms settle for asynchronous shipping) divided by the requests of the window; the Kafka broker's CPU per " +
			"request is given apart. Ratios are taken per same-run pair (a round, or a slice pair at half of peak) and their " +
			"median reported next to every pair's; other workloads on the machine show in other_busy_* and runqueue_wait_share.",
		"setup": map[string]any{
			"server_cpu": o.serverCPU, "load_cpu": o.loadCPU, "pinned_services": pins, "rounds": o.rounds,
			"warmup_seconds": o.warmup, "measured_seconds": o.seconds, "closed_loop_connections": o.conns,
			"half_peak_pairs_per_round": o.pairs, "pair_slice_seconds": o.pairSeconds, "pair_slice_warmup_seconds": o.pairWarmup,
			"priority":      map[string]any{"nice": o.nice, "applied": o.nice != 0 && o.niceOK, "by_autogroup": o.autogroup, "loadgen_sched_fifo": o.rtOK},
			"request_bytes": reqBytes, "actions": 20, "after_swap_window_ms": o.afterSwap.Milliseconds(),
		},
		"peak_rps_flywheel_round1": peakFly,
		"rates_from_peak_rps":      peakLow,
		"offered_rates":            rates,
		"table":                    table,
		"ratios":                   ratios,
		"goals": map[string]any{
			"server_cpu_per_request_at_most_0.8x_bare":  cpuHalf.Median <= 0.8,
			"p99_at_half_peak_within_1.5x_bare":         p99Half.Median <= 1.5,
			"p99_during_swaps_within_1.2x_steady":       swapVsSteady.Median <= 1.2,
			"p99_after_swaps_within_1.2x_between_swaps": afterVsAway.Median <= 1.2,
		},
		"servers": stats,
		"idle":    idleStats,
		"runs":    runs,
	}
}

func printTable(w io.Writer, rep map[string]any) {
	table := rep["table"].([]row)
	fmt.Fprintf(w, "medians of %v rounds; server pinned to one CPU with Kafka and ClickHouse, load generator on the other\n", rep["setup"].(map[string]any)["rounds"])
	fmt.Fprintf(w, "%-7s%-16s%9s%9s%9s%9s%10s%12s%10s%12s%8s\n", "phase", "server", "offered", "req/s", "p50 ms", "p99 ms", "p999 ms", "server µs/r", "-idle", "kafka µs/r", "errors")
	for _, r := range table {
		off := "closed"
		if r.Rate > 0 {
			off = fmt.Sprintf("%.0f", r.Rate)
		}
		k := "-"
		if r.KafkaCPUUSPerRequest > 0 {
			k = fmt.Sprintf("%.0f", r.KafkaCPUUSPerRequest)
		}
		fmt.Fprintf(w, "%-7s%-16s%9s%9.0f%9.2f%9.2f%10.2f%12.0f%10.0f%12s%8d\n", r.Phase, r.Server, off, r.RPS, r.P50, r.P99, r.P999, r.ServerCPUUSPerRequest, r.ServerCPUUSNetOfIdle, k, r.Errors)
	}
	ratios := rep["ratios"].(map[string]any)
	show := func(label, key string) {
		rs := ratios[key].(ratioSet)
		fmt.Fprintf(w, "%-52s %6.3f  pairs %v\n", label, rs.Median, rs.Pairs)
	}
	show("server CPU/request flywheel vs bare, half of peak", "server_cpu_per_request_flywheel_vs_bare_at_half_peak")
	byRate := ratios["server_cpu_per_request_flywheel_vs_bare_by_rate"].(map[string]ratioSet)
	for _, r := range table {
		if r.Phase == "rate" && r.Server == "bare" {
			k := strconv.FormatFloat(r.Rate, 'f', -1, 64)
			fmt.Fprintf(w, "%-52s %6.3f  pairs %v\n", "  at "+k+"/s", byRate[k].Median, byRate[k].Pairs)
		}
	}
	netByRate := ratios["server_cpu_per_request_net_of_idle_flywheel_vs_bare_by_rate"].(map[string]ratioSet)
	for _, r := range table {
		if r.Phase == "rate" && r.Server == "bare" {
			k := strconv.FormatFloat(r.Rate, 'f', -1, 64)
			fmt.Fprintf(w, "%-52s %6.3f  pairs %v\n", "  net of idle, at "+k+"/s", netByRate[k].Median, netByRate[k].Pairs)
		}
	}
	show("server CPU/request flywheel vs bare, closed-loop peak", "server_cpu_per_request_flywheel_vs_bare_at_peak")
	show("throughput flywheel vs bare, closed-loop peak", "throughput_flywheel_vs_bare_at_peak")
	show("p99 flywheel vs bare, half of peak", "p99_flywheel_vs_bare_at_half_peak")
	show("p99 during swaps vs steady, half of peak", "p99_swaps_vs_steady_at_half_peak")
	show("p99 within the after-swap window vs between swaps, same run, half of peak", "p99_after_swap_vs_between_swaps_same_run_at_half_peak")
	for _, r := range table {
		if r.Phase == "swap" {
			fmt.Fprintf(w, "p99 of requests scheduled within %v ms of a swap: %.2f ms\n", rep["setup"].(map[string]any)["after_swap_window_ms"], r.AfterSwapP99)
		}
	}
}
