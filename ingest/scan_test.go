package ingest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel"
)

// sameRow says how two decoded rows differ, if they do. The stored JSON is
// compared by what it decodes to: the fast path keeps the logged bytes, the
// general one writes them again.
func sameRow(a, b *row) error {
	da, db := a.d, b.d
	da.Context, db.Context, da.Actions, db.Actions, da.Ranking, db.Ranking = nil, nil, nil, nil, nil, nil
	if !da.Time.Equal(db.Time) {
		return fmt.Errorf("ts %v vs %v", da.Time, db.Time)
	}
	da.Time, db.Time = time.Time{}, time.Time{}
	if !reflect.DeepEqual(da, db) {
		return fmt.Errorf("record %+v vs %+v", da, db)
	}
	if !reflect.DeepEqual([][]string{a.ctxNames, a.ctxValues, a.actionIDs, a.chNames, a.chValues},
		[][]string{b.ctxNames, b.ctxValues, b.actionIDs, b.chNames, b.chValues}) {
		return fmt.Errorf("flat strings %q %q %q %q %q vs %q %q %q %q %q", a.ctxNames, a.ctxValues, a.actionIDs, a.chNames, a.chValues,
			b.ctxNames, b.ctxValues, b.actionIDs, b.chNames, b.chValues)
	}
	if !reflect.DeepEqual([][]float64{a.ctxNumbers, a.chNumbers}, [][]float64{b.ctxNumbers, b.chNumbers}) || a.chosenProbability != b.chosenProbability {
		return fmt.Errorf("flat numbers %v %v %v vs %v %v %v", a.ctxNumbers, a.chNumbers, a.chosenProbability, b.ctxNumbers, b.chNumbers, b.chosenProbability)
	}
	var ca, cb any
	if json.Unmarshal([]byte(a.ctxJSON), &ca) != nil || json.Unmarshal([]byte(b.ctxJSON), &cb) != nil || !reflect.DeepEqual(ca, cb) {
		return fmt.Errorf("context JSON %s vs %s", a.ctxJSON, b.ctxJSON)
	}
	type action struct {
		ID       string `json:"id"`
		Features any    `json:"features"`
	}
	var aa, ab, wa, wb []action
	if json.Unmarshal([]byte(actionsOf(a)), &aa) != nil || json.Unmarshal([]byte(actionsOf(b)), &ab) != nil || !reflect.DeepEqual(aa, ab) {
		return fmt.Errorf("actions JSON %s vs %s", actionsOf(a), actionsOf(b))
	}
	if json.Unmarshal([]byte(a.actJSON), &wa) != nil || json.Unmarshal([]byte(b.actJSON), &wb) != nil || !reflect.DeepEqual(wa, wb) || !reflect.DeepEqual(wa, aa) {
		return fmt.Errorf("whole actions JSON %s vs %s", a.actJSON, b.actJSON)
	}
	for _, r := range []*row{a, b} {
		if err := checkKeys(r); err != nil {
			return err
		}
	}
	return nil
}

// actionsOf is r's actions as one JSON list.
func actionsOf(r *row) string { return "[" + strings.Join(r.actionJSON, ",") + "]" }

// checkKeys checks that r has a key for each action, the hash of its JSON.
func checkKeys(r *row) error {
	if len(r.actionKeys) != len(r.actionJSON) || len(r.actionJSON) != len(r.actionIDs) {
		return fmt.Errorf("%d action keys, %d action JSONs, %d ids", len(r.actionKeys), len(r.actionJSON), len(r.actionIDs))
	}
	for i, js := range r.actionJSON {
		if want := hex.EncodeToString(actionKey(nil, []byte(js))); r.actionKeys[i] != want || len(want) != 32 {
			return fmt.Errorf("action %d: key %q, want %q", i, r.actionKeys[i], want)
		}
	}
	return nil
}

// checkScan fails t if the fast path accepts msg and the general decoder
// refuses it or reads it differently.
func checkScan(t *testing.T, msg []byte) (fast bool) {
	t.Helper()
	r, ok := scanDecision(msg)
	if !ok {
		return false
	}
	g, err := decodeGeneral(msg)
	if err != nil {
		t.Fatalf("fast path accepted what the general decoder refuses (%v): %s", err, msg)
	}
	if err := sameRow(r, g); err != nil {
		t.Fatalf("fast path and general decoder differ: %v\nrecord: %s", err, msg)
	}
	return true
}

var oddStrings = []string{"", "plain", "caf\u00e9", "tab\there", "quote\"d", `back\slash`, "\u2028", "日本", "<b>&amp;</b>", "emoji \U0001F600"}

func randomFeatures(rng *rand.Rand) flywheel.Features {
	f := flywheel.Features{}
	for ns := range rng.IntN(3) {
		m := map[string]any{}
		for k := range rng.IntN(6) {
			name := fmt.Sprintf("f%d", k)
			if rng.IntN(8) == 0 {
				name = oddStrings[rng.IntN(len(oddStrings))]
			}
			switch rng.IntN(5) {
			case 0:
				m[name] = oddStrings[rng.IntN(len(oddStrings))]
			case 1:
				m[name] = (rng.Float64() - 0.5) * []float64{1, 1e-300, 1e300, 3}[rng.IntN(4)]
			case 2:
				m[name] = rng.IntN(2) == 0
			case 3:
				var bag []any
				for range rng.IntN(3) {
					bag = append(bag, oddStrings[rng.IntN(len(oddStrings))])
				}
				if bag == nil {
					bag = []any{}
				}
				m[name] = bag
			case 4:
				m[name] = float64(rng.IntN(1000))
			}
		}
		f[[]string{"user", "page", "ctx\u00e9"}[ns]] = m
	}
	return f
}

// Decisions of every shape serving writes (context, actions and feature
// values of every kind, classifiers, escapes and non-ASCII text) are read
// by the fast path, exactly as the general decoder reads them.
func TestScanDecisionMatchesGeneral(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	fast := 0
	for i := range 2000 {
		d := flywheel.Decision{Schema: 1, EventID: fmt.Sprintf("ev-%d-%s", i, oddStrings[rng.IntN(len(oddStrings))]),
			Time: time.Unix(1700000000+int64(i), int64(rng.IntN(1e9))).UTC(), Model: "m", Kind: flywheel.KindRanker,
			Version: 1 + rng.IntN(5), Variant: []string{"champion", "canary", ""}[rng.IntN(3)], Context: randomFeatures(rng),
			Explored: rng.IntN(2) == 0, Score: rng.Float64(), ServerID: rng.IntN(2) == 0, Deferred: rng.IntN(4) == 0,
			Reward: flywheel.RewardRule{WindowSeconds: int64(rng.IntN(3600)), Default: rng.Float64(), Aggregate: "sum", LateWindowSeconds: int64(rng.IntN(2) * rng.IntN(7200))}}
		if rng.IntN(5) == 0 {
			d.Kind, d.Model = flywheel.KindClassifier, "c"
		} else {
			n := 1 + rng.IntN(6)
			for a := range n {
				d.Actions = append(d.Actions, flywheel.Action{ID: fmt.Sprintf("a%d%s", a, oddStrings[rng.IntN(len(oddStrings))]), Features: randomFeatures(rng)})
				d.Probabilities = append(d.Probabilities, 1/float64(n))
				d.Ranking = append(d.Ranking, d.Actions[a].ID)
			}
			d.ChosenIndex = rng.IntN(n)
			d.Chosen = d.Actions[d.ChosenIndex].ID
		}
		msg, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if rng.IntN(4) == 0 { // white space where JSON allows it
			var buf bytes.Buffer
			if err := json.Indent(&buf, msg, " ", "\t"); err != nil {
				t.Fatal(err)
			}
			msg = buf.Bytes()
		}
		if checkScan(t, msg) {
			fast++
		}
	}
	if fast < 1990 {
		t.Fatalf("the fast path read only %d of 2000 records", fast)
	}
	t.Logf("fast path read %d of 2000 records", fast)
}

// Records the fast path leaves to the general decoder.
func TestScanDecisionDeclines(t *testing.T) {
	t.Parallel()
	good := `{"schema":1,"event_id":"e","ts":"2026-01-01T00:00:00Z","model":"m","kind":"ranker","model_version":1,` +
		`"context":{"u":{"a":1}},"actions":[{"id":"a"},{"id":"b","features":{"item":{"x":1}}}],"probabilities":[0.5,0.5],"chosen_index":1,` +
		`"reward":{"window_s":60,"aggregate":"sum"}}`
	if !checkScan(t, []byte(good)) {
		t.Fatal("the fast path declined a plain record")
	}
	if !checkScan(t, []byte(strings.Replace(good, `"model":"m"`, `"mod\u0065l":"m"`, 1))) {
		t.Fatal("the fast path declined a record with an escaped key")
	}
	for name, tc := range map[string]struct{ from, to string }{
		"null context":     {`"context":{"u":{"a":1}}`, `"context":null`},
		"key case":         {`"event_id":"e"`, `"Event_ID":"e"`},
		"repeated key":     {`"model":"m"`, `"model":"m","model":"n"`},
		"repeated feature": {`{"a":1}`, `{"a":1,"a":2}`},
		"nested value":     {`{"a":1}`, `{"a":{"b":1}}`},
		"null value":       {`{"a":1}`, `{"a":null}`},
		"mixed bag":        {`{"a":1}`, `{"a":["x",1]}`},
		"float index":      {`"chosen_index":1`, `"chosen_index":1.0`},
		"trailing":         {`"sum"}}`, `"sum"}}x`},
		"bad escape":       {`"event_id":"e"`, `"event_id":"\q"`},
		"chosen out":       {`"chosen_index":1`, `"chosen_index":2`},
		"features string":  {`"features":{"item":{"x":1}}`, `"features":"x"`},
		"late key case":    {`"aggregate":"sum"}`, `"aggregate":"sum","Late_Window_S":60}`},
		"late repeated":    {`"aggregate":"sum"}`, `"aggregate":"sum","late_window_s":60,"late_window_s":61}`},
	} {
		bad := strings.Replace(good, tc.from, tc.to, 1)
		if bad == good {
			t.Fatalf("%s: the test did not change the record", name)
		}
		if checkScan(t, []byte(bad)) {
			t.Errorf("%s: the fast path read %s", name, bad)
		}
	}
}

// Whatever bytes arrive, the fast path never reads a record differently
// from the general decoder, nor accepts one it refuses.
func FuzzScanDecision(f *testing.F) {
	f.Add(benchDecision(f))
	f.Add([]byte(`{"schema":1,"event_id":"e","ts":"2026-01-01T00:00:00Z","model":"m","kind":"classifier","model_version":1,"context":{"u":{"a":"\u00e9","b":[],"c":true}},"reward":{"window_s":60,"aggregate":"sum"}}`))
	f.Add([]byte(`{"schema":1,"event_id":"e","ts":"2026-01-01T00:00:00Z","model":"m","kind":"ranker","model_version":1,"context":{},"actions":[{"id":"a","x":[1,{"y":null}]}],"probabilities":[1e0],"chosen_index":0,"reward":{"window_s":6,"default":-0.5,"aggregate":"max"},"extra":{"k":[true,false,null]}}`))
	f.Fuzz(func(t *testing.T, msg []byte) {
		checkScan(t, msg)
	})
}
