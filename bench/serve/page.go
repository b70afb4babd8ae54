package main

// The page: a multi-slot request (page.lua, 3 slots over the single-slot
// request's 20 actions) measured in the same rounds, on the same two server
// processes, as the single-slot request. Each round measures the page's
// closed-loop peak on both servers, then, at half of round 1's flywheel page
// peak, groups of four short slices (order rotating): bare and flywheel,
// single-slot and page, all at that one offered rate, so that a group shares
// the machine's weather and CPU per request is compared at the same load.
// The bare reference for a page is the bare handler decoding the same page
// body into the same request and slot types and answering the same slots
// shape.

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// checkPage posts the page body to url and checks that it is answered with
// slots.
func checkPage(url, body string) error {
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return fmt.Errorf("page request: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"slots"`)) {
		return fmt.Errorf("page request answered %d %s", resp.StatusCode, b)
	}
	return nil
}

// reportPage adds the page's table (rep["page"]) and ratios (rep["ratios"],
// keys with "page") to the report.
func (o *benchOptions) reportPage(rep map[string]any, runs []runResult, peakFlyPage, rate float64, reqBytes, slots, actions int) {
	pick := func(phase, server, request string, rate float64) []runResult {
		return pickRuns(runs, phase, server, request, rate)
	}
	summarize := func(phase, server, request string, rate float64) row {
		w := row{Phase: phase, Rate: rate, Server: server, Request: request}
		if phase == "page" {
			w.Fraction = 0.5
		}
		return summarizeRuns(pick(phase, server, request, rate), w)
	}
	table := []row{
		summarize("page_peak", "bare", "page", 0), summarize("page_peak", "flywheel", "page", 0),
		summarize("page", "bare", "single", rate), summarize("page", "flywheel", "single", rate),
		summarize("page", "bare", "page", rate), summarize("page", "flywheel", "page", rate),
	}
	cpuOf := func(r runResult) float64 { return r.ServerCPUUSPerRequest }
	netOf := func(r runResult) float64 { return r.ServerCPUUSNetOfIdle }
	p50Of := func(r runResult) float64 { return r.P50 }
	p99Of := func(r runResult) float64 { return r.P99 }
	rpsOf := func(r runResult) float64 { return r.RPS }
	flyPage, flySingle := pick("page", "flywheel", "page", rate), pick("page", "flywheel", "single", rate)
	barePage, bareSingle := pick("page", "bare", "page", rate), pick("page", "bare", "single", rate)
	ratios := rep["ratios"].(map[string]any)
	for k, v := range map[string]ratioSet{
		"server_cpu_per_request_page_vs_single_flywheel":                sameRunRatios(cpuOf, flyPage, flySingle),
		"server_cpu_per_request_page_flywheel_vs_page_bare":             sameRunRatios(cpuOf, flyPage, barePage),
		"server_cpu_per_request_page_flywheel_vs_single_bare":           sameRunRatios(cpuOf, flyPage, bareSingle),
		"server_cpu_per_request_page_vs_single_bare":                    sameRunRatios(cpuOf, barePage, bareSingle),
		"server_cpu_per_request_net_of_idle_page_vs_single_flywheel":    sameRunRatios(netOf, flyPage, flySingle),
		"server_cpu_per_request_net_of_idle_page_flywheel_vs_page_bare": sameRunRatios(netOf, flyPage, barePage),
		"p50_page_vs_single_flywheel":                                   sameRunRatios(p50Of, flyPage, flySingle),
		"p50_page_flywheel_vs_page_bare":                                sameRunRatios(p50Of, flyPage, barePage),
		"p99_page_vs_single_flywheel":                                   sameRunRatios(p99Of, flyPage, flySingle),
		"p99_page_flywheel_vs_page_bare":                                sameRunRatios(p99Of, flyPage, barePage),
		"throughput_page_vs_single_flywheel_at_peak": sameRunRatios(rpsOf,
			pick("page_peak", "flywheel", "page", 0), pick("peak", "flywheel", "single", 0)),
		"throughput_page_flywheel_vs_page_bare_at_peak": sameRunRatios(rpsOf,
			pick("page_peak", "flywheel", "page", 0), pick("page_peak", "bare", "page", 0)),
		"server_cpu_per_request_page_flywheel_vs_page_bare_at_peak": sameRunRatios(cpuOf,
			pick("page_peak", "flywheel", "page", 0), pick("page_peak", "bare", "page", 0)),
	} {
		ratios[k] = v
	}
	rep["page"] = map[string]any{
		"request":                       o.pageLua,
		"request_bytes":                 reqBytes,
		"actions":                       actions,
		"slots":                         slots,
		"model":                         pageModel + ": interactions [user, item] and [slot, item]",
		"peak_rps_flywheel_page_round1": peakFlyPage,
		"offered_rps":                   rate,
		"fraction_of_lower_page_peak":   0.5, // of the lower of the two servers' page peaks
		"bare_reference": "the bare gin handler decoding the same page body into the same request and slot types " +
			"(encoding/json) and answering a response of the same slots shape (each slot the first action no earlier " +
			"slot took and the slot does not exclude)",
		"table": table,
	}
	rep["method"] = rep["method"].(string) + " The page: " + o.pageLua + "'s body, the same context and " +
		strconv.Itoa(actions) + " actions as the single-slot request ranked as " + strconv.Itoa(slots) +
		" slots with small features of their own (model " + pageModel + ", with a [slot, item] interaction; every slot " +
		"logged as a decision of its own); each round measures its closed-loop peak on both servers (phase page_peak), " +
		"then, at half of the lower of round 1's two page peaks, groups of four slices (phase page, order rotating): bare and " +
		"flywheel, single-slot and page, at that one offered rate; the page ratios are taken per group."
}

// printPage prints the page's table and ratios, if the report has them.
func printPage(w io.Writer, rep map[string]any) {
	page, ok := rep["page"].(map[string]any)
	if !ok {
		return
	}
	fmt.Fprintf(w, "\n%d-slot page of %d actions (%s, %d bytes, model %s): closed-loop peak, then at %.0f/s (half of the lower of the two servers' page peaks) the single-slot request and the page on both servers, in groups of slices\n",
		page["slots"], page["actions"], page["request"], page["request_bytes"], pageModel, page["offered_rps"])
	fmt.Fprintf(w, "%-10s%-10s%-8s%9s%9s%9s%9s%10s%12s%10s%12s%8s\n", "phase", "server", "request", "offered", "req/s", "p50 ms", "p99 ms", "p999 ms", "server µs/r", "-idle", "kafka µs/r", "errors")
	for _, r := range page["table"].([]row) {
		off := "closed"
		if r.Rate > 0 {
			off = fmt.Sprintf("%.0f", r.Rate)
		}
		k := "-"
		if r.KafkaCPUUSPerRequest > 0 {
			k = fmt.Sprintf("%.0f", r.KafkaCPUUSPerRequest)
		}
		fmt.Fprintf(w, "%-10s%-10s%-8s%9s%9.0f%9.2f%9.2f%10.2f%12.0f%10.0f%12s%8d\n", r.Phase, r.Server, r.Request, off, r.RPS, r.P50, r.P99, r.P999, r.ServerCPUUSPerRequest, r.ServerCPUUSNetOfIdle, k, r.Errors)
	}
	ratios := rep["ratios"].(map[string]any)
	for _, s := range []struct{ label, key string }{
		{"server CPU/request page vs single, flywheel", "server_cpu_per_request_page_vs_single_flywheel"},
		{"server CPU/request page, flywheel vs bare page", "server_cpu_per_request_page_flywheel_vs_page_bare"},
		{"server CPU/request page flywheel vs single bare", "server_cpu_per_request_page_flywheel_vs_single_bare"},
		{"server CPU/request page vs single, bare", "server_cpu_per_request_page_vs_single_bare"},
		{"  net of idle, page vs single, flywheel", "server_cpu_per_request_net_of_idle_page_vs_single_flywheel"},
		{"  net of idle, page flywheel vs bare page", "server_cpu_per_request_net_of_idle_page_flywheel_vs_page_bare"},
		{"p50 page vs single, flywheel", "p50_page_vs_single_flywheel"},
		{"p50 page, flywheel vs bare page", "p50_page_flywheel_vs_page_bare"},
		{"p99 page vs single, flywheel", "p99_page_vs_single_flywheel"},
		{"p99 page, flywheel vs bare page", "p99_page_flywheel_vs_page_bare"},
		{"throughput page vs single, flywheel, closed-loop peak", "throughput_page_vs_single_flywheel_at_peak"},
		{"throughput page, flywheel vs bare, closed-loop peak", "throughput_page_flywheel_vs_page_bare_at_peak"},
		{"server CPU/request page, flywheel vs bare, peak", "server_cpu_per_request_page_flywheel_vs_page_bare_at_peak"},
	} {
		rs := ratios[s.key].(ratioSet)
		fmt.Fprintf(w, "%-52s %6.3f  pairs %v\n", s.label, rs.Median, rs.Pairs)
	}
}
