// Command loadgen sends POST requests at a constant rate (open loop: a slow
// answer does not delay the next request, so queueing shows in the
// latencies) for a fixed time, on loopback, and prints one JSON line with
// the achieved rate, latency percentiles and errors. The serving benchmark
// uses it for "p99 at half of peak load", which wrk cannot pace.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:18080/v1/rank", "target (loopback only)")
	bodyFile := flag.String("body-from-lua", "bench/serve/rank.lua", "wrk script whose wrk.body is the request body")
	rate := flag.Float64("rate", 500, "requests per second")
	dur := flag.Duration("duration", 10*time.Second, "how long")
	flag.Parse()
	if !strings.HasPrefix(*url, "http://127.") && !strings.HasPrefix(*url, "http://localhost") {
		fmt.Fprintln(os.Stderr, "loadgen: loopback targets only")
		os.Exit(2)
	}
	lua, err := os.ReadFile(*bodyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	s := string(lua)
	i := strings.Index(s, "wrk.body = '") + len("wrk.body = '")
	body := []byte(s[i : i+strings.Index(s[i:], "'")])

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512}}
	var mu sync.Mutex
	var lat []time.Duration
	errs := 0
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / *rate)
	start := time.Now()
	n := int(dur.Seconds() * *rate)
	for k := 0; k < n; k++ {
		due := start.Add(time.Duration(k) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func(due time.Time) {
			defer wg.Done()
			resp, err := client.Post(*url, "application/json", bytes.NewReader(body))
			ok := err == nil && resp.StatusCode/100 == 2
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			// latency from when the request was due, not when it was sent
			l := time.Since(due)
			mu.Lock()
			lat = append(lat, l)
			if !ok {
				errs++
			}
			mu.Unlock()
		}(due)
	}
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"target_rps": *rate, "requests": len(lat), "rps": float64(len(lat)) / elapsed.Seconds(),
		"p50_ms": pct(0.50), "p99_ms": pct(0.99), "p999_ms": pct(0.999), "errors": errs,
	})
}
