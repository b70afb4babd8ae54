// Command loadgen is the serving benchmark's load generator (bench/serve
// drives it; make bench). It POSTs one request body to a loopback URL, either
//
//   - open loop (-rate R): request k is scheduled at start + k/R and sent then
//     whatever happened to the earlier ones, and its latency is measured from
//     that scheduled time, not from when it was actually sent, so that a
//     stall of the server (or of this process) counts against every request
//     it held up: coordinated omission corrected. How late the requests left
//     their schedule is reported (send_lag_*), so that a generator that could
//     not keep up shows; or
//   - closed loop (-conns N, -rate 0): N workers each send the next request
//     when the last one is answered; the completions per second are the
//     server's peak.
//
// It runs -warmup first, then measures -duration. Around the measured window
// it reads the CPU time (utime+stime, /proc/PID/stat) of the processes named
// by -pids (name=pid,...) and the busy time of every CPU (/proc/stat), so
// that CPU time per request is of the same requests as the latencies. It
// prints one JSON line; -raw writes one line per measured request:
// scheduled send time (Unix ns), latency (ns), HTTP status (0: error).
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:18080/v1/rank", "target (loopback only)")
	bodyFile := flag.String("body-from-lua", "bench/serve/rank.lua", "wrk script whose wrk.body is the request body")
	rate := flag.Float64("rate", 500, "open loop: requests per second; 0: closed loop with -conns workers")
	conns := flag.Int("conns", 16, "closed loop: concurrent workers")
	dur := flag.Duration("duration", 10*time.Second, "measured time")
	warmup := flag.Duration("warmup", 2*time.Second, "load before the measured time, not counted")
	settle := flag.Duration("settle", 300*time.Millisecond, "open loop: wait after the last answer before the final CPU reading (the server's asynchronous work for the measured requests)")
	pids := flag.String("pids", "", "name=pid,... whose CPU time to read around the measured window")
	raw := flag.String("raw", "", "write one line per measured request here")
	timeout := flag.Duration("timeout", 5*time.Second, "per request")
	flag.Parse()
	// fewer collections on the load generator's one core; the heap is small
	debug.SetGCPercent(400)
	if !strings.HasPrefix(*url, "http://127.") && !strings.HasPrefix(*url, "http://localhost") {
		fail(fmt.Errorf("loopback targets only"))
	}
	if *dur <= 0 || *dur > 5*time.Minute || *warmup < 0 || *warmup > time.Minute {
		fail(fmt.Errorf("-duration must be in (0, 5m] and -warmup in [0, 1m]"))
	}
	if *rate < 0 || *rate > 100000 || (*rate == 0 && (*conns < 1 || *conns > 1024)) {
		fail(fmt.Errorf("-rate must be in [0, 100000]; with -rate 0, -conns in [1, 1024]"))
	}
	body, err := luaBody(*bodyFile)
	if err != nil {
		fail(err)
	}
	watched, err := parsePids(*pids)
	if err != nil {
		fail(err)
	}
	client := &http.Client{Timeout: *timeout, Transport: &http.Transport{
		MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 1024, DisableCompression: true, IdleConnTimeout: time.Minute}}
	g := &gen{client: client, url: *url, body: body, watched: watched}
	var res result
	if *rate > 0 {
		res = g.open(*rate, *warmup, *dur, *settle)
	} else {
		res = g.closed(*conns, *warmup, *dur)
	}
	if *raw != "" {
		if err := writeRaw(*raw, g.samples); err != nil {
			fail(err)
		}
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "loadgen:", err)
	os.Exit(1)
}

// luaBody is the string after `wrk.body = '` up to the next quote.
func luaBody(path string) ([]byte, error) {
	lua, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := string(lua)
	i := strings.Index(s, "wrk.body = '")
	if i < 0 {
		return nil, fmt.Errorf("%s has no wrk.body = '...'", path)
	}
	s = s[i+len("wrk.body = '"):]
	j := strings.IndexByte(s, '\'')
	if j < 0 {
		return nil, fmt.Errorf("%s: wrk.body is not closed", path)
	}
	return []byte(s[:j]), nil
}

type watch struct {
	name string
	pid  int
}

func parsePids(s string) ([]watch, error) {
	var w []watch
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		name, v, ok := strings.Cut(kv, "=")
		pid, err := strconv.Atoi(v)
		if !ok || err != nil || pid <= 0 {
			return nil, fmt.Errorf("-pids: %q is not name=pid", kv)
		}
		w = append(w, watch{name, pid})
	}
	return w, nil
}

// sample is one measured request.
type sample struct {
	due     time.Time // scheduled send time (open loop) or send time (closed)
	latency time.Duration
	lag     time.Duration // how late it was sent (open loop)
	status  int           // 0: transport error
}

type gen struct {
	client  *http.Client
	url     string
	body    []byte
	watched []watch
	samples []sample
}

// do sends one request and returns its HTTP status, 0 on error.
func (g *gen) do() int {
	resp, err := g.client.Post(g.url, "application/json", bytes.NewReader(g.body))
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func (g *gen) open(rate float64, warmup, dur, settle time.Duration) result {
	interval := time.Duration(float64(time.Second) / rate)
	nWarm := int(warmup.Seconds() * rate)
	n := int(dur.Seconds() * rate)
	g.samples = make([]sample, n)
	var wg sync.WaitGroup
	var before cpuReading
	start := time.Now()
	for k := 0; k < nWarm+n; k++ {
		due := start.Add(time.Duration(k) * interval)
		if k == nWarm {
			before = g.readCPU()
		}
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func(k int, due time.Time) {
			defer wg.Done()
			lag := time.Since(due)
			status := g.do()
			if k >= nWarm {
				g.samples[k-nWarm] = sample{due: due, latency: time.Since(due), lag: lag, status: status}
			}
		}(k, due)
	}
	wg.Wait()
	last := time.Now()
	time.Sleep(settle)
	after := g.readCPU()
	window := last.Sub(start.Add(time.Duration(nWarm) * interval))
	r := summarize(g.samples, window, before, after, g.watched)
	r.Mode, r.TargetRPS = "open", rate
	r.OfferedRPS = float64(n) / dur.Seconds()
	return r
}

func (g *gen) closed(conns int, warmup, dur time.Duration) result {
	var measuring, stop atomic.Bool
	var wg sync.WaitGroup
	per := make([][]sample, conns)
	for i := range conns {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for !stop.Load() {
				t := time.Now()
				status := g.do()
				if measuring.Load() && !stop.Load() {
					per[i] = append(per[i], sample{due: t, latency: time.Since(t), status: status})
				}
			}
		}(i)
	}
	time.Sleep(warmup)
	before := g.readCPU()
	t0 := time.Now()
	measuring.Store(true)
	time.Sleep(dur)
	stop.Store(true)
	after := g.readCPU()
	window := time.Since(t0)
	wg.Wait()
	for _, p := range per {
		g.samples = append(g.samples, p...)
	}
	r := summarize(g.samples, window, before, after, g.watched)
	r.Mode, r.Conns = "closed", conns
	return r
}

// cpuReading is the CPU time of the watched processes, of this one, and the
// busy and total time of every CPU, in clock ticks.
type cpuReading struct {
	at    time.Time
	procs map[string]int64
	waits map[string]int64 // run-queue wait, ns, all threads
	self  int64
	selfW int64
	busy  []int64
	total []int64
}

func (g *gen) readCPU() cpuReading {
	r := cpuReading{at: time.Now(), procs: map[string]int64{}, waits: map[string]int64{}}
	for _, w := range g.watched {
		if t, err := procTicks(w.pid); err == nil {
			r.procs[w.name] = t
			r.waits[w.name] = runQueueWait(w.pid)
		}
	}
	r.self, _ = procTicks(os.Getpid())
	r.selfW = runQueueWait(os.Getpid())
	r.busy, r.total = cpuTicks()
	return r
}

// procTicks is utime+stime of pid (all its threads), in clock ticks.
func procTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// the command is in parentheses and may hold spaces; fields after it
	// start at state (field 3): utime is field 14, stime 15
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad times", pid)
	}
	return u + st, nil
}

// runQueueWait is the time the threads of pid (those alive now) have spent
// runnable but waiting for a CPU, in ns (/proc/PID/task/TID/schedstat).
func runQueueWait(pid int) int64 {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			x, _ := strconv.ParseInt(f[1], 10, 64)
			sum += x
		}
	}
	return sum
}

// cpuTicks is each CPU's busy (not idle, not iowait) and total time.
func cpuTicks() (busy, total []int64) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return nil, nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 || !strings.HasPrefix(fs[0], "cpu") || fs[0] == "cpu" {
			continue
		}
		var b, t int64
		for i, v := range fs[1:] {
			if i >= 8 { // guest times are already in user
				break
			}
			x, _ := strconv.ParseInt(v, 10, 64)
			t += x
			if i != 3 && i != 4 {
				b += x
			}
		}
		busy, total = append(busy, b), append(total, t)
	}
	return busy, total
}

const clockTicks = 100 // USER_HZ on Linux

type procCPU struct {
	Seconds      float64 `json:"cpu_seconds"`
	USPerRequest float64 `json:"cpu_us_per_request"`
	CoresAverage float64 `json:"cores_used"`
	// the share of the window its threads spent runnable but waiting for
	// a CPU (summed over threads): interference
	RunQueueWait float64 `json:"runqueue_wait_share"`
}

type result struct {
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
	// open loop: how late requests left their schedule
	SendLagP99 float64 `json:"send_lag_p99_ms,omitempty"`
	SendLagMax float64 `json:"send_lag_max_ms,omitempty"`
	// CPU time over the measured window, of the -pids processes
	CPU map[string]procCPU `json:"cpu"`
	// this process's share of a core, and each CPU's busy share, over the window
	CPUWindow    float64   `json:"cpu_window_seconds"`
	LoadgenCores float64   `json:"loadgen_cores_used"`
	LoadgenWait  float64   `json:"loadgen_runqueue_wait_share"`
	CPUBusy      []float64 `json:"cpu_busy"`
	// non-2xx answers by status ("0": no answer)
	Statuses map[string]int `json:"error_statuses,omitempty"`
}

func summarize(s []sample, window time.Duration, before, after cpuReading, watched []watch) result {
	lat := make([]time.Duration, 0, len(s))
	lag := make([]time.Duration, 0, len(s))
	r := result{Requests: len(s), Seconds: round(window.Seconds(), 3), CPU: map[string]procCPU{}}
	for _, x := range s {
		lat = append(lat, x.latency)
		lag = append(lag, x.lag)
		if x.status/100 != 2 {
			r.Errors++
			if r.Statuses == nil {
				r.Statuses = map[string]int{}
			}
			r.Statuses[strconv.Itoa(x.status)]++
		}
	}
	slices.Sort(lat)
	slices.Sort(lag)
	r.RPS = round(float64(len(s))/window.Seconds(), 1)
	r.P50, r.P90, r.P99, r.P999 = pct(lat, 0.50), pct(lat, 0.90), pct(lat, 0.99), pct(lat, 0.999)
	r.Max = pct(lat, 1)
	r.SendLagP99, r.SendLagMax = pct(lag, 0.99), pct(lag, 1)
	wall := after.at.Sub(before.at).Seconds()
	r.CPUWindow = round(wall, 3)
	for _, w := range watched {
		b, ok1 := before.procs[w.name]
		a, ok2 := after.procs[w.name]
		if !ok1 || !ok2 {
			continue
		}
		sec := float64(a-b) / clockTicks
		c := procCPU{Seconds: round(sec, 2), CoresAverage: round(sec/wall, 3),
			RunQueueWait: round(float64(after.waits[w.name]-before.waits[w.name])/1e9/wall, 3)}
		if len(s) > 0 {
			c.USPerRequest = round(sec*1e6/float64(len(s)), 1)
		}
		r.CPU[w.name] = c
	}
	r.LoadgenCores = round(float64(after.self-before.self)/clockTicks/wall, 3)
	r.LoadgenWait = round(float64(after.selfW-before.selfW)/1e9/wall, 3)
	for i := range min(len(before.busy), len(after.busy)) {
		if dt := after.total[i] - before.total[i]; dt > 0 {
			r.CPUBusy = append(r.CPUBusy, round(float64(after.busy[i]-before.busy[i])/float64(dt), 3))
		}
	}
	return r
}

// pct is the p quantile of sorted latencies (nearest rank), in ms.
func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(len(sorted)-1, max(0, int(p*float64(len(sorted))+0.5)-1))
	return round(float64(sorted[i].Nanoseconds())/1e6, 3)
}

func round(x float64, places int) float64 {
	p := 1.0
	for range places {
		p *= 10
	}
	if x < 0 {
		return -float64(int64(-x*p+0.5)) / p
	}
	return float64(int64(x*p+0.5)) / p
}

func writeRaw(path string, s []sample) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, x := range s {
		fmt.Fprintf(w, "%d %d %d\n", x.due.UnixNano(), x.latency.Nanoseconds(), x.status)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
