package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"time"

	"os"
	"strings"
	"testing"

	"github.com/bytedance/sonic"
	gojson "github.com/goccy/go-json"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-dev/flywheel"
)

func benchBody(b *testing.B) []byte { return luaBody(b, "../bench/serve/rank.lua") }

// luaBody is the wrk.body of a wrk script.
func luaBody(b *testing.B, file string) []byte {
	lua, err := os.ReadFile(file)
	if err != nil {
		b.Fatal(err)
	}
	s := string(lua)
	i := strings.Index(s, "wrk.body = '") + len("wrk.body = '")
	return []byte(s[i : i+strings.Index(s[i:], "'")])
}

func BenchmarkDecodeRank(b *testing.B) { benchDecodeRank(b, benchBody(b)) }

// BenchmarkDecodePage decodes bench/serve/page.lua's request: the same
// context and 20 actions as BenchmarkDecodeRank's, ranked as 3 slots.
func BenchmarkDecodePage(b *testing.B) { benchDecodeRank(b, luaBody(b, "../bench/serve/page.lua")) }

// benchDecodeRank decodes the rank request body b.N times.
func benchDecodeRank(b *testing.B, body []byte) {
	limits := flywheel.Limits{}.WithDefaults()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		req, err := decodeRank(body, limits)
		if err != nil {
			b.Fatal(err)
		}
		req.release() // as handleRank does once it has answered
	}
}

func BenchmarkUnmarshalPlain(b *testing.B) {
	body := benchBody(b)
	b.SetBytes(int64(len(body)))
	for i := 0; i < b.N; i++ {
		var req rankRequest
		if err := json.Unmarshal(body, &req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshalGoccy(b *testing.B) {
	body := benchBody(b)
	b.SetBytes(int64(len(body)))
	for i := 0; i < b.N; i++ {
		var req rankRequest
		if err := gojson.Unmarshal(body, &req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshalSonic(b *testing.B) {
	body := benchBody(b)
	b.SetBytes(int64(len(body)))
	for i := 0; i < b.N; i++ {
		var req rankRequest
		if err := sonic.Unmarshal(body, &req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandleRank is the whole /v1/rank handler in process, from the
// request to the response bytes, with the decision handed to an in-memory
// logger (the spool and Kafka are bench/serve's): where the server's CPU
// per request goes, by `go test -bench HandleRank -cpuprofile`.
func BenchmarkHandleRank(b *testing.B) { benchHandle(b, benchBody(b)) }

// BenchmarkHandleRankPage is BenchmarkHandleRank for bench/serve's page of
// three slots.
func BenchmarkHandleRankPage(b *testing.B) { benchHandle(b, luaBody(b, "../bench/serve/page.lua")) }

func benchHandle(b *testing.B, body []byte) {
	rank := flywheel.ModelConfig{Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}, {"slot", "item"}}}.WithDefaults()
	reg := &fakeRegistry{champion: func(context.Context, string) (int, []byte, error) { return 1, mustArtifact(b, rank), nil }}
	ev := &discardEvents{}
	s, err := New(Config{Addr: "127.0.0.1:0", Models: map[string]flywheel.ModelConfig{"homepage": rank, "page": rank}, Open: true},
		Options{Registry: reg, Events: ev, Admin: Admin{}, Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	s.SwapAll(context.Background())
	h := s.Handler()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("POST", "/v1/rank", bytes.NewReader(body))
		req.Host = "127.0.0.1:8080"
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatalf("%d %s", w.Code, w.Body)
		}
	}
	if ev.n.Load() == 0 {
		b.Fatal("nothing logged")
	}
}

// discardEvents counts what it is given and keeps nothing.
type discardEvents struct{ n atomic.Int64 }

func (d *discardEvents) LogDecision(context.Context, *flywheel.Decision) error {
	d.n.Add(1)
	return nil
}
func (d *discardEvents) LogFeedback(context.Context, []flywheel.Feedback) error {
	d.n.Add(1)
	return nil
}

// BenchmarkGCWithRecentIDsFull is a full collection with the recent ids at
// their default bound (100,000 server-chosen ids): what the collector
// marks of them. 0.68 ms here; 7.9 ms when they were a map of strings to
// entries.
func BenchmarkGCWithRecentIDsFull(b *testing.B) {
	r := newRecentIDs(100_000)
	now := time.Now()
	for i := range 100_000 {
		r.remember("homepage", fmt.Sprintf("%032x", i), now)
	}
	runtime.GC()
	for b.Loop() {
		runtime.GC()
	}
	runtime.KeepAlive(r)
}
