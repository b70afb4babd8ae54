package flywheel

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// AppendJSON writes what json.Marshal writes, once both are read back,
// for records with every field set or left out and strings of every kind.
func TestAppendJSONMatchesMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	strs := []string{"", "a", `q"uote\back`, "tab\tnl\ncr\r\x01\x1f", "café ☕", "\u2028\u2029", "bad\xffutf8", "<&>", "😀"}
	str := func() string { return strs[rng.IntN(len(strs))] }
	floats := []float64{0, 1, 0.05, 1.0 / 3, 1e-7, 2.5e-300, 1e21, -3.25, 123456789.125, math.SmallestNonzeroFloat64}
	for trial := range 2000 {
		r := DecisionRecord{Schema: rng.IntN(3), EventID: str(), Time: time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).UTC(), Model: str(), Kind: str(),
			Version: rng.IntN(100), Variant: str(), ChosenIndex: rng.IntN(5), Chosen: str(), Explored: rng.IntN(2) == 0,
			Reward:   RewardRule{WindowSeconds: rng.Int64N(1000), Default: floats[rng.IntN(len(floats))], Aggregate: str(), LateWindowSeconds: rng.Int64N(2) * 60},
			Deferred: rng.IntN(2) == 0, ServerID: rng.IntN(2) == 0}
		if rng.IntN(2) == 0 {
			r.Context = json.RawMessage(`{"user":{"a":1,"t":["x"]}}`)
		}
		if rng.IntN(3) > 0 {
			r.Score = floats[rng.IntN(len(floats))]
		}
		for range rng.IntN(4) {
			a := RawAction{ID: str()}
			if rng.IntN(2) == 0 {
				a.Features = json.RawMessage(`{"item":{"p":1.5}}`)
			}
			r.Actions = append(r.Actions, a)
			r.Probabilities = append(r.Probabilities, floats[rng.IntN(len(floats))])
			r.Ranking = append(r.Ranking, str())
		}
		got, err := r.AppendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("trial %d: %s is not JSON: %v", trial, got, err)
		}
		json.Unmarshal(want, &w)
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("trial %d:\n%s\n%s", trial, got, want)
		}
		// The probabilities formatted beforehand are written as they are,
		// and give the same bytes.
		var ends []int
		r.RawProbabilities, ends = AppendJSONFloats([]byte("x"), r.Probabilities, nil)
		r.RawProbabilities = r.RawProbabilities[1:]
		if len(ends) != len(r.Probabilities) {
			t.Fatalf("trial %d: %d ends for %d numbers", trial, len(ends), len(r.Probabilities))
		}
		if pre, _ := r.AppendJSON(nil); len(r.Probabilities) > 0 && string(pre) != string(got) {
			t.Fatalf("trial %d: with RawProbabilities\n%s\nwithout\n%s", trial, pre, got)
		}
	}
	bad := DecisionRecord{Probabilities: []float64{math.NaN()}}
	if _, err := bad.AppendJSON(nil); err == nil {
		t.Fatal("a NaN probability was written")
	}
}
