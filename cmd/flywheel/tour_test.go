package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The README's by-hand tour works as written: with the default
// configuration (no --config, so the default homepage model), `flywheel
// dev`, a rank and its feedback, `flywheel sim --events 5000`, then
// `flywheel retrain --now --model homepage` trains version 2 (it is not
// skipped for want of closed examples), `flywheel models history` and
// `flywheel eval --model homepage --version 2` answer. Only what must differ
// on a shared machine is set, through FLYWHEEL_* variables: the address,
// the database, the topic prefix and the spool directory.
func TestReadmeTour(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	d := startDev(t, ctx, "tour", nil) // bin/flywheel dev --kafka 127.0.0.1:9092
	url, post, flywheel := d.url, d.post, d.flywheel
	var ranked struct {
		EventID      string `json:"event_id"`
		ModelVersion int    `json:"model_version"`
		Ranking      []struct {
			ID          string  `json:"id"`
			Probability float64 `json:"probability"`
		} `json:"ranking"`
	}
	post("/v1/rank", `{"model": "homepage",
  "context": {"user": {"segment": "gamers", "age": 31}},
  "actions": [{"id": "a1", "features": {"item": {"category": "games", "price": 49.9}}},
              {"id": "a2", "features": {"item": {"category": "books", "price": 12}}}]}`, &ranked)
	if ranked.ModelVersion != 1 || len(ranked.Ranking) != 2 || ranked.Ranking[0].Probability != 0.5 {
		t.Fatalf("rank answered %+v, want version 1 ranking both actions with probability 0.5", ranked)
	}
	post("/v1/feedback", fmt.Sprintf(`{"event_id": %q, "reward": 1, "type": "click"}`, ranked.EventID), nil)

	flywheel("sim", "--url", url, "--events", "5000")
	out := flywheel("retrain", "--now", "--model", "homepage")
	if !strings.Contains(out, "model homepage: promoted") && !strings.Contains(out, "model homepage: rejected") {
		t.Fatalf("retrain --now neither promoted nor rejected a candidate:\n%s", out)
	}
	t.Logf("retrain --now:\n%s", out)
	if out := flywheel("models", "history", "homepage"); !strings.Contains(out, "champion") {
		t.Fatalf("models history shows no champion:\n%s", out)
	}
	if out := flywheel("models", "list"); !regexp.MustCompile(`(?m)^homepage +ranker +[12] +2$`).MatchString(out) {
		t.Fatalf("models list does not show homepage's champion and latest version 2:\n%s", out)
	}
	flywheel("eval", "--model", "homepage", "--version", "2")
}
