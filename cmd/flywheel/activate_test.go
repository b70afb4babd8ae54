package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel/client"
)

// Deferred activation through the real loop: of 1,500 decisions, 500 are
// deferred and never activated, 500 deferred and activated (once twice),
// 500 ordinary, and a 2-slot page deferred and activated by its page id.
// All are in the decisions table; the examples (what training and
// evaluation read) hold the activated and the ordinary ones only, the
// activation carries no reward, and a retrain counts only those as new.
func TestDeferredActivationThroughTheLoop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// A reward window long enough that every click below is inside it however
	// loaded the machine.
	d := startDev(t, ctx, "activate", map[string]string{"FLYWHEEL_MODELS_HOMEPAGE_REWARD_WINDOW": "10s"})
	type answer struct {
		EventID string `json:"event_id"`
		Chosen  string `json:"chosen"`
	}
	const n = 500
	rank := func(i int, deferred bool) answer {
		var a answer
		d.post("/v1/rank", fmt.Sprintf(`{"model": "homepage", "defer_activation": %v, "context": {"user": {"segment": "s%d"}},
			"actions": [{"id": "a1", "features": {"item": {"category": "news"}}}, {"id": "a2", "features": {"item": {"category": "sport"}}}]}`, deferred, i%3), &a)
		return a
	}
	var fb []string
	var hiddenClicks uint64
	for i := 0; i < n; i++ {
		shown, hidden, plain := rank(i, true), rank(i, true), rank(i, false)
		d.post("/v1/events/"+shown.EventID+"/activate", "", nil)
		if i == 0 {
			d.post("/v1/events/"+shown.EventID+"/activate", `{"model": "homepage"}`, nil) // twice counts once
		}
		var clicks []string // sent at once, inside the reward window
		for _, a := range []answer{shown, hidden, plain} {
			if a.Chosen == "a1" {
				clicks = append(clicks, fmt.Sprintf(`{"event_id": %q, "reward": 1}`, a.EventID))
			}
		}
		if len(clicks) > 0 {
			d.post("/v1/feedback", "["+strings.Join(clicks, ",")+"]", nil)
			if a := hidden; a.Chosen == "a1" {
				hiddenClicks++
			}
			fb = append(fb, clicks...)
		}
	}
	var page answer
	d.post("/v1/rank", `{"model": "homepage", "defer_activation": true, "actions": [{"id": "a1"}, {"id": "a2"}], "slots": [{"id": "x"}, {"id": "y"}]}`, &page)
	// The page through the Go client's Activate, twice (it may retry).
	for range 2 {
		if err := client.New(d.url, "").Activate(ctx, page.EventID); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, ctx, "every decision in ClickHouse", func() bool {
		var all, deferred uint64
		err := d.conn.QueryRow(ctx, "SELECT count(), countIf(deferred = 1) FROM "+d.db+".decisions FINAL").Scan(&all, &deferred)
		return err == nil && all == 3*n+2 && deferred == 2*n+2
	})
	var examples, rewarded uint64
	var reward float64
	waitFor(t, ctx, "the examples of the activated and ordinary decisions", func() bool {
		err := d.conn.QueryRow(ctx, "SELECT count(), countIf(feedback_count > 0), sum(reward) FROM "+d.db+".examples").Scan(&examples, &rewarded, &reward)
		return err == nil && examples == 2*n+2
	})
	want := uint64(len(fb))
	if rewarded != want-hiddenClicks || reward != float64(want-hiddenClicks) {
		t.Fatalf("examples: %d rewarded, reward %v; want %d clicks of shown and ordinary decisions (activations carry none)", rewarded, reward, want-hiddenClicks)
	}
	t.Logf("%d decisions, %d examples (%d rewarded); %d clicks on never-activated decisions left out", 3*n+2, examples, rewarded, hiddenClicks)
	out := d.flywheel("retrain", "--now", "--model", "homepage")
	if !strings.Contains(out, "model homepage: promoted") && !strings.Contains(out, "model homepage: rejected") {
		t.Fatalf("retrain --now:\n%s", out)
	}
	// It learned and was judged on the examples only.
	m := regexp.MustCompile(`trained on (\d+) examples, judged on (\d+)`).FindStringSubmatch(out)
	if m == nil || atoi(m[1])+atoi(m[2]) != int(examples) {
		t.Fatalf("retrain --now did not read the %d examples:\n%s", examples, out)
	}
	t.Logf("retrain --now:\n%s", out)
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
