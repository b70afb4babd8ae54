package serve

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
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
