package serve

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/flywheel-dev/flywheel"
)

// Every typed answer has exactly the fields its schema in openapi.json
// describes.
func TestResponsesMatchOpenAPI(t *testing.T) {
	t.Parallel()
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	for schema, v := range map[string]any{
		"Status": StatusResponse{}, "Error": ErrorResponse{}, "FeedbackResponse": FeedbackResponse{},
		"ActivateResponse": ActivateResponse{}, "ModelInfo": ModelInfo{}, "ModelsResponse": ModelsResponse{},
		"ChampionResponse": ChampionResponse{}, "CanaryResponse": CanaryResponse{}, "DashboardResponse": DashboardResponse{},
		"ReplicaStats": ReplicaStats{}, "ReferencesResponse": ReferencesResponse{},
	} {
		t.Run(schema, func(t *testing.T) {
			s, ok := doc.Components.Schemas[schema]
			if !ok {
				t.Fatalf("openapi.json has no schema %s", schema)
			}
			var documented, declared []string
			for name := range s.Properties {
				documented = append(documented, name)
			}
			rt := reflect.TypeOf(v)
			for i := range rt.NumField() {
				name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
				declared = append(declared, name)
			}
			slices.Sort(documented)
			slices.Sort(declared)
			if !slices.Equal(documented, declared) {
				t.Fatalf("%T has the fields %v; openapi.json's %s describes %v", v, declared, schema, documented)
			}
		})
	}
}

// A rank response written by appendJSON reads back as json.Marshal's.
func TestRankResponseAppendJSON(t *testing.T) {
	for _, r := range []rankResponse{
		{EventID: "e\"1\u2028", Model: "m", ModelVersion: 3, Variant: "champion", Chosen: "b<&>",
			Ranking: []flywheel.Ranked{{ID: "b<&>", Probability: 0.95}, {ID: "a\x01é", Probability: 1e-9}, {ID: "c", Probability: 0}}},
		{EventID: "x", Model: "m", Variant: "canary", Chosen: "only", Explored: true, Ranking: []flywheel.Ranked{{ID: "only", Probability: 1}}},
	} {
		got, err := r.appendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		// With the probabilities formatted for the log, action by action
		// (here the ranked entries reversed), the same bytes.
		pre := r
		pre.order = make([]int, len(r.Ranking))
		probs := make([]float64, len(r.Ranking))
		for i, x := range r.Ranking {
			pre.order[i] = len(r.Ranking) - 1 - i
			probs[pre.order[i]] = x.Probability
		}
		pre.probs, pre.ends = flywheel.AppendJSONFloats(nil, probs, nil)
		if b, err := pre.appendJSON(nil); err != nil || string(b) != string(got) {
			t.Fatalf("with the log's probabilities:\n%s (%v)\nwithout:\n%s", b, err, got)
		}
		want, _ := json.Marshal(&r)
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("%s: %v", got, err)
		}
		json.Unmarshal(want, &w)
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("\n%s\n%s", got, want)
		}
	}
}
