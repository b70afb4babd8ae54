package serve

import (
	"encoding/json"

	"github.com/bytedance/sonic"
	gojson "github.com/goccy/go-json"
	"os"
	"strings"
	"testing"

	"github.com/flywheel-dev/flywheel"
)

func benchBody(b *testing.B) []byte {
	lua, err := os.ReadFile("../bench/serve/rank.lua")
	if err != nil {
		b.Fatal(err)
	}
	s := string(lua)
	i := strings.Index(s, "wrk.body = '") + len("wrk.body = '")
	return []byte(s[i : i+strings.Index(s[i:], "'")])
}

func BenchmarkDecodeRank(b *testing.B) {
	body := benchBody(b)
	limits := flywheel.Limits{}.WithDefaults()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := decodeRank(body, limits); err != nil {
			b.Fatal(err)
		}
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
