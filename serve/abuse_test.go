package serve

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-dev/flywheel"
)

// The abuse suite: hostile requests, each answered with its documented
// error, and the server's CPU per request logged (getrusage of this
// process around the request; these tests do not run in parallel, so the
// figure is the request's). Nothing here asserts a time: where a limit is
// a time (a trickled body), the test only waits far longer for the end.

// cpuTime is the CPU this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// bag returns a JSON array of n copies of s.
func bag(s string, n int) string {
	return "[" + strings.TrimSuffix(strings.Repeat(`"`+s+`",`, n), ",") + "]"
}

// crossedRank is the rank request of issue 15: a context namespace user of
// ctxFeats bags of bagSize strings, and actions whose item namespace has
// actFeats such bags, crossed by the model's [user, item] interaction.
func crossedRank(ctxFeats, bagSize, actions, actFeats int) string {
	var b strings.Builder
	b.WriteString(`{"model":"homepage","context":{"user":{`)
	for i := 0; i < ctxFeats; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"f%d":%s`, i, bag("a", bagSize))
	}
	b.WriteString(`}},"actions":[`)
	for a := 0; a < actions; a++ {
		if a > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"a%d","features":{"item":{`, a)
		for i := 0; i < actFeats; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"g%d":%s`, i, bag("b", bagSize))
		}
		b.WriteString(`}}}`)
	}
	b.WriteString(`]}`)
	return b.String()
}

// numbers returns a feature object of n numeric features.
func numbers(n int) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"%d":1`, i)
	}
	b.WriteByte('}')
	return b.String()
}

// wideActions is a rank request of actions each with nss namespaces of
// feats numbers: no interaction, many features.
func wideActions(actions, nss, feats int) string {
	var b strings.Builder
	b.WriteString(`{"model":"homepage","actions":[`)
	for a := 0; a < actions; a++ {
		if a > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"a%d","features":{`, a)
		for n := 0; n < nss; n++ {
			if n > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"n%d":%s`, n, numbers(feats))
		}
		b.WriteString(`}}`)
	}
	b.WriteString(`]}`)
	return b.String()
}

// abuseServer is a server with keys and the default limits, a ranker
// crossing user × item and a classifier crossing user × user.
func abuseServer(t testing.TB, cfg Config, admin Admin) (*Server, *fakeEvents) {
	t.Helper()
	rank := flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}}}.WithDefaults()
	clf := flywheel.ModelConfig{Kind: flywheel.KindClassifier, Interactions: [][]string{{"user", "user"}}}.WithDefaults()
	arts := map[string][]byte{"homepage": mustArtifact(t, rank), "ctr": mustArtifact(t, clf)}
	reg := &fakeRegistry{champion: func(_ context.Context, name string) (int, []byte, error) { return 1, arts[name], nil }}
	cfg.Addr = "127.0.0.1:0"
	cfg.Models = map[string]flywheel.ModelConfig{"homepage": rank, "ctr": clf}
	if !cfg.Open {
		cfg.AppKeys, cfg.AdminKeys = []Key{{Secret: appKey}}, []Key{{Label: "ops", Secret: adminKey}}
	}
	ev := &fakeEvents{}
	s, err := New(cfg, Options{Registry: reg, Events: ev, Admin: admin, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	s.SwapAll(context.Background())
	return s, ev
}

type hostile struct {
	name, method, path, key string
	header                  map[string]string
	body                    string
	status                  int
	code, msg               string // the error's code and part of its message; "" for a success
}

// send serves h in process and returns the answer, its error and the CPU
// and wall time it took.
func send(s *Server, h hostile) (*httptest.ResponseRecorder, ErrorDetail, time.Duration, time.Duration) {
	req := httptest.NewRequest(h.method, h.path, strings.NewReader(h.body))
	req.Host = "127.0.0.1:8080"
	if h.method != "GET" {
		req.Header.Set("Content-Type", "application/json")
	}
	if h.key != "" {
		req.Header.Set("Authorization", "Bearer "+h.key)
	}
	for k, v := range h.header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	c0, w0 := cpuTime(), time.Now()
	s.Handler().ServeHTTP(w, req)
	cpu, wall := cpuTime()-c0, time.Since(w0)
	var body struct {
		Error ErrorDetail `json:"error"`
	}
	_ = json.Unmarshal(w.Body.Bytes(), &body)
	return w, body.Error, cpu, wall
}

func checkHostile(t *testing.T, s *Server, h hostile) {
	t.Helper()
	w, e, cpu, wall := send(s, h)
	t.Logf("%-40s %8d bytes → %d %-22s CPU %9v wall %9v", h.name, len(h.body), w.Code, e.Code, cpu.Round(time.Microsecond), wall.Round(time.Microsecond))
	if w.Code != h.status || e.Code != h.code || !strings.Contains(e.Message, h.msg) {
		t.Errorf("%s: got %d %+v, want %d %s containing %q", h.name, w.Code, e, h.status, h.code, h.msg)
	}
}

func TestAbuseHostileRequests(t *testing.T) {
	s, ev := abuseServer(t, Config{}, Admin{})
	s.SetInsights(Insights{SetReferences: func(context.Context, string, map[string]float64, string) error { return nil }})
	budget := "limits.max_features_per_request (100000)"
	rank := func(name, body string, status int, code, msg string) hostile {
		return hostile{name: name, method: "POST", path: "/v1/rank", key: appKey, body: body, status: status, code: code, msg: msg}
	}
	deep := strings.Repeat("[", 200000) + strings.Repeat("]", 200000)
	for _, h := range []hostile{
		// crossed features: 256 × 256 context features × 256 actions × 256
		// action features, 4.3e9 crossings (11 s of CPU, 200, before)
		rank("crossed 537 KB (issue 15)", crossedRank(256, 256, 256, 1), 400, "invalid_argument", budget),
		rank("crossed, fewer actions", crossedRank(256, 256, 2, 1), 400, "invalid_argument", budget),
		rank("crossed, just under the budget", crossedRank(100, 1, 190, 4), 200, "", ""),
		rank("crossed, just over the budget", crossedRank(100, 1, 200, 4), 400, "invalid_argument", budget),
		{name: "predict, self-crossed bags", method: "POST", path: "/v1/predict", key: appKey,
			body: `{"model":"ctr","features":{"user":{"t":` + bag("x", 256) + `,"u":` + bag("y", 256) + `}}}`, status: 400, code: "invalid_argument", msg: budget},
		// wide
		rank("wide: 200 actions × 512 features", wideActions(200, 8, 64), 400, "invalid_argument", budget),
		rank("wide: 33 namespaces", `{"model":"homepage","context":{`+strings.TrimSuffix(strings.Repeat(`"n":{"a":1},`, 1), ",")+
			func() string {
				var b strings.Builder
				for i := 0; i < 33; i++ {
					fmt.Fprintf(&b, `,"n%d":{"a":1}`, i)
				}
				return b.String()
			}()+`},"actions":[{"id":"a"}]}`, 400, "invalid_argument", "namespaces; the limit is 32"),
		rank("wide: 257 features in a namespace", `{"model":"homepage","context":{"user":`+numbers(257)+`},"actions":[{"id":"a"}]}`, 400, "invalid_argument", "the limit is 256"),
		rank("wide: 257 actions", `{"model":"homepage","actions":[`+strings.TrimSuffix(strings.Repeat(`{"id":"x"},`, 257), ",")+`]}`, 400, "invalid_argument", "the limit is 256"),
		// deep
		rank("deep: 200,000 nested arrays as a feature", `{"model":"homepage","context":{"user":{"x":`+deep+`}},"actions":[{"id":"a"}]}`, 400, "invalid_argument", ""),
		rank("deep: 200,000 nested arrays as the body", deep, 400, "invalid_argument", ""),
		rank("deep: nested objects in an unknown field", `{"model":"homepage","x":`+strings.Repeat(`{"a":`, 100000)+"1"+strings.Repeat("}", 100000)+`}`, 400, "invalid_argument", ""),
		// long
		rank("long: a 1025-byte value", `{"model":"homepage","context":{"user":{"s":"`+strings.Repeat("x", 1025)+`"}},"actions":[{"id":"a"}]}`, 400, "invalid_argument", "longer than 1024 bytes"),
		rank("long: a 2 MiB body", `{"model":"homepage","event_id":"`+strings.Repeat("x", 2<<20)+`"}`, 413, "too_large", "larger than 1048576 bytes"),
		rank("long: a 257-string bag", `{"model":"homepage","context":{"user":{"t":`+bag("x", 257)+`}},"actions":[{"id":"a"}]}`, 400, "invalid_argument", "the limit is 256"),
		// repeated
		rank("repeated: one key 50,000 times", `{`+strings.Repeat(`"model":"homepage",`, 50000)+`"actions":[{"id":"a"}]}`, 200, "", ""),
		rank("repeated: one action id twice", `{"model":"homepage","actions":[{"id":"a"},{"id":"a"}]}`, 400, "invalid_argument", "repeats actions[0].id"),
		{name: "repeated: 1001 feedback items", method: "POST", path: "/v1/feedback", key: appKey,
			body: "[" + strings.TrimSuffix(strings.Repeat(`{"event_id":"e","reward":1},`, 1001), ",") + "]", status: 400, code: "invalid_argument", msg: "1000"},
		// unicode
		rank("unicode: names and values outside ASCII", `{"model":"homepage","context":{"usér":{"名前":"値","emoji":"🙂\u200f\u0301"}},"actions":[{"id":"ä"},{"id":"a\u0000"}]}`, 200, "", ""),
		rank("unicode: invalid UTF-8 (made U+FFFD)", "{\"model\":\"homepage\",\"context\":{\"user\":{\"s\":\"\xff\xfe\"}},\"actions\":[{\"id\":\"a\"}]}", 200, "", ""),
		rank("unicode: a lone surrogate escape", `{"model":"homepage","context":{"user":{"s":"\ud800"}},"actions":[{"id":"a"}]}`, 200, "", ""),
		rank("unicode: model name of another script", `{"model":"нomepage","actions":[{"id":"a"}]}`, 400, "invalid_argument", "a-z"),
		// roles
		{name: "app key PUT references", method: "PUT", path: "/v1/models/homepage/references", key: appKey,
			body: `{"references":{"random":0.1}}`, status: 403, code: "permission_denied", msg: "admin"},
		{name: "admin key PUT references", method: "PUT", path: "/v1/models/homepage/references", key: adminKey,
			body: `{"references":{"random":0.1}}`, status: 200},
		{name: "history beyond its bound", method: "GET", path: "/v1/models/homepage?history=100000", key: appKey, status: 400, code: "invalid_argument", msg: "history must be a whole number from 1 to 500"},
	} {
		checkHostile(t, s, h)
	}
	for _, d := range ev.decisions {
		if d.Model == "homepage" && len(d.Actions) > 190 {
			t.Errorf("a refused request was logged: %d actions", len(d.Actions))
		}
	}
}

// Per-key token buckets: a burst beyond limits.burst is answered 429
// rate_limited with Retry-After, each key (and each address guessing keys)
// has its own bucket, and the bucket refills at limits.rate_per_key.
func TestAbuseRateLimit(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Unix(1700000000, 0).UnixNano())
	s, _ := abuseServer(t, Config{Limits: flywheel.Limits{RatePerKey: 10, Burst: 5}}, Admin{})
	s.now = func() time.Time { return time.Unix(0, clock.Load()) }
	rank := hostile{name: "burst", method: "POST", path: "/v1/rank", key: appKey, body: `{"model":"homepage","actions":[{"id":"a"}]}`}
	codes := map[int]int{}
	var retry string
	var cpu time.Duration
	for i := 0; i < 50; i++ {
		w, e, c, _ := send(s, rank)
		codes[w.Code]++
		if w.Code == 429 {
			cpu += c
			retry = w.Header().Get("Retry-After")
			if e.Code != "rate_limited" || !strings.Contains(e.Message, "limits.rate_per_key") {
				t.Fatalf("429 with %+v", e)
			}
		}
	}
	t.Logf("50 requests at once, rate 10/s, burst 5: %v; Retry-After %q; CPU per refused request %v", codes, retry, (cpu / time.Duration(max(1, codes[429]))).Round(time.Microsecond))
	if codes[200] != 5 || codes[429] != 45 || retry != "1" {
		t.Fatalf("answers %v, Retry-After %q; want 5 × 200, 45 × 429, Retry-After 1", codes, retry)
	}
	admin := rank
	admin.key = adminKey
	if w, _, _, _ := send(s, admin); w.Code != 200 {
		t.Fatalf("the admin key shares the app key's bucket: %d", w.Code)
	}
	wrong := rank
	wrong.key = "wrong-key-0123456789"
	got := map[int]int{}
	for i := 0; i < 10; i++ {
		w, _, _, _ := send(s, wrong)
		got[w.Code]++
	}
	if got[401] != 5 || got[429] != 5 {
		t.Fatalf("guessing keys: %v, want 5 × 401 then 429", got)
	}
	clock.Add(int64(time.Second))
	codes = map[int]int{}
	for i := 0; i < 20; i++ {
		w, _, _, _ := send(s, rank)
		codes[w.Code]++
	}
	if codes[200] != 5 { // refilled at 10/s, capped at the burst
		t.Fatalf("a second later: %v, want 5 answered", codes)
	}
}

// The buckets of many clients stay bounded: idle ones are dropped, and
// when every one is busy, half of them.
func TestBucketsStayBounded(t *testing.T) {
	b := newBuckets(1, 1)
	now := time.Unix(1700000000, 0)
	for i := 0; i < 100*maxBuckets; i++ {
		b.take(fmt.Sprint("ip:", i), now)
		if len(b.m) > maxBuckets {
			t.Fatalf("%d buckets after %d clients", len(b.m), i+1)
		}
	}
	if _, ok := b.take("ip:0", now.Add(time.Hour)); !ok {
		t.Fatal("an idle client got no token")
	}
}

// Open mode (`flywheel dev` without keys): a page on another origin, or one
// reached by DNS rebinding, cannot drive the API.
func TestAbuseOpenModeRefusesBrowsers(t *testing.T) {
	var promoted atomic.Int64
	s, _ := abuseServer(t, Config{Open: true}, Admin{Promote: func(context.Context, string, int, string, string) error {
		promoted.Add(1)
		return nil
	}})
	promote := func(name string, header map[string]string, status int, code, msg string) hostile {
		return hostile{name: name, method: "POST", path: "/v1/models/homepage/promote", header: header, body: `{"version": 1}`, status: status, code: code, msg: msg}
	}
	for _, h := range []hostile{
		promote("cross-origin text/plain POST", map[string]string{"Content-Type": "text/plain", "Origin": "http://evil.example"}, 403, "permission_denied", "cross-origin"),
		promote("text/plain POST, no Origin", map[string]string{"Content-Type": "text/plain"}, 415, "unsupported_media_type", "Content-Type: application/json"),
		promote("form POST, no Origin", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type", "Content-Type: application/json"),
		promote("POST without Content-Type", map[string]string{"Content-Type": ""}, 415, "unsupported_media_type", "Content-Type: application/json"),
		promote("cross-origin JSON POST", map[string]string{"Origin": "http://evil.example"}, 403, "permission_denied", "cross-origin"),
		promote("Origin null", map[string]string{"Origin": "null"}, 403, "permission_denied", "cross-origin"),
		promote("DNS rebinding (Host evil.example)", map[string]string{"Host": "evil.example:8080", "Origin": "http://evil.example:8080"}, 403, "permission_denied", "Host"),
		{name: "DNS rebinding GET", method: "GET", path: "/v1/models", header: map[string]string{"Host": "rebind.evil.example"}, status: 403, code: "permission_denied", msg: "Host"},
		promote("same-origin JSON POST", map[string]string{"Origin": "http://127.0.0.1:8080", "Content-Type": "application/json; charset=utf-8"}, 200, "", ""),
		promote("localhost JSON POST", map[string]string{"Host": "localhost:8080"}, 200, "", ""),
	} {
		checkHostile(t, s, h)
	}
	if n := promoted.Load(); n != 2 {
		t.Fatalf("%d promotions went through, want the 2 same-origin ones", n)
	}
}

// The dashboard snaps any window to a fixed one, and however many ask at
// once, one computation per model and window runs.
func TestAbuseDashboardWindows(t *testing.T) {
	s, _ := abuseServer(t, Config{}, Admin{})
	var calls atomic.Int64
	release := make(chan struct{})
	windows := sync.Map{}
	s.SetInsights(Insights{Dashboard: func(_ context.Context, name string, window time.Duration) (any, error) {
		calls.Add(1)
		windows.Store(window, true)
		<-release
		return map[string]any{"window": window.String()}, nil
	}})
	var wg sync.WaitGroup
	codes := make(chan int, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, _, _, _ := send(s, hostile{method: "GET", path: fmt.Sprintf("/v1/models/homepage/dashboard?window=%dm", 61+i), key: appKey})
			codes <- w.Code
		}()
	}
	time.Sleep(200 * time.Millisecond)
	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("a dashboard answered %d", c)
		}
	}
	var seen []string
	windows.Range(func(k, _ any) bool { seen = append(seen, windowName(k.(time.Duration))); return true })
	t.Logf("200 dashboards with windows 61m…260m at once: %d computations, windows %v", calls.Load(), seen)
	if calls.Load() > 2 || len(seen) > 2 {
		t.Fatalf("%d computations for windows %v; want one each of 6h and 24h", calls.Load(), seen)
	}
	if w, _, _, _ := send(s, hostile{method: "GET", path: "/v1/models/homepage/dashboard?window=17m", key: appKey}); !strings.Contains(w.Body.String(), `"window":"1h"`) {
		t.Fatalf("17m: %s", w.Body)
	}
}

// liveServer runs s on 127.0.0.1:0 until the test ends and returns its
// address.
func liveServer(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return ln.Addr().String()
}

// trickle sends a rank request's headers announcing n bytes of body, then
// a byte every gap until the server answers or closes; it returns what the
// server answered (its status line) and how long it held on.
func trickle(t *testing.T, addr string, n int, gap time.Duration, deadline time.Duration) (string, time.Duration) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	fmt.Fprintf(conn, "POST /v1/rank HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", addr, appKey, n)
	answered := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(conn).ReadString('\n')
		answered <- strings.TrimSpace(line)
	}()
	tick := time.NewTicker(gap)
	defer tick.Stop()
	for {
		select {
		case line := <-answered:
			return line, time.Since(start)
		case <-tick.C:
			_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = conn.Write([]byte(" "))
		}
		if time.Since(start) > deadline {
			t.Fatalf("the server still held a trickled body after %v", deadline)
		}
	}
}

// A body trickled a byte at a time holds the server no longer than
// http.read_timeout; headers, no longer than http.read_header_timeout;
// beyond limits.max_in_flight a request is answered 503 with Retry-After.
func TestAbuseSlowClients(t *testing.T) {
	s, _ := abuseServer(t, Config{HTTP: HTTPConfig{ReadTimeout: time.Second, ReadHeaderTimeout: 500 * time.Millisecond},
		Limits: flywheel.Limits{MaxInFlight: 1}}, Admin{})
	addr := liveServer(t, s)
	c0 := cpuTime()
	line, held := trickle(t, addr, 1000, 50*time.Millisecond, 30*time.Second)
	t.Logf("body trickled at 20 bytes/s: %q after %v (http.read_timeout 1s), CPU %v", line, held.Round(time.Millisecond), (cpuTime() - c0).Round(time.Microsecond))
	if !strings.Contains(line, "400") {
		t.Fatalf("trickled body answered %q", line)
	}

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	fmt.Fprintf(conn, "POST /v1/rank HTTP/1.1\r\nHost: 127.0.0.1\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = io.ReadAll(conn) // the server closes the connection
	conn.Close()
	t.Logf("headers never finished: connection closed after %v (http.read_header_timeout 500ms), %v", time.Since(start).Round(time.Millisecond), err)
	if err != nil {
		t.Fatalf("the server kept a connection whose headers never ended: %v", err)
	}

	// one trickled request in flight; the next is refused
	held2 := make(chan struct{})
	go func() {
		defer close(held2)
		trickle(t, addr, 1000, 50*time.Millisecond, 30*time.Second)
	}()
	time.Sleep(200 * time.Millisecond)
	resp, err := http.Post("http://"+addr+"/v1/rank", "application/json", strings.NewReader(`{"model":"homepage","actions":[{"id":"a"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("beyond limits.max_in_flight (1): %d, Retry-After %q: %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || !strings.Contains(string(b), "limits.max_in_flight") {
		t.Fatalf("beyond the in-flight limit: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	if r, err := http.Get("http://" + addr + "/healthz"); err != nil || r.StatusCode != 200 {
		t.Fatalf("/healthz beyond the in-flight limit: %v %v", r, err)
	}
	<-held2

	big := strings.Repeat("x", 100<<10)
	req, _ := http.NewRequest("GET", "http://"+addr+"/v1/models", nil)
	req.Header.Set("X-Big", big)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	t.Logf("a 100 KiB header: %d", resp.StatusCode)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("a 100 KiB header answered %d", resp.StatusCode)
	}
}

// BenchmarkHostile reports the CPU each kind of hostile request costs the
// server, refused: go test -bench Hostile ./serve/
func BenchmarkHostile(b *testing.B) {
	s, _ := abuseServer(b, Config{}, Admin{})
	for _, h := range []hostile{
		{name: "crossed-537KB", body: crossedRank(256, 256, 256, 1)},
		{name: "crossed-at-budget", body: crossedRank(100, 1, 190, 4)},
		{name: "wide-200x512", body: wideActions(200, 8, 64)},
		{name: "deep-200k", body: strings.Repeat("[", 200000) + strings.Repeat("]", 200000)},
	} {
		h.method, h.path, h.key = "POST", "/v1/rank", appKey
		b.Run(h.name, func(b *testing.B) {
			b.SetBytes(int64(len(h.body)))
			for i := 0; i < b.N; i++ {
				send(s, h)
			}
		})
	}
}
