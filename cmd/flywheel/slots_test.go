package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel/retrain"
)

// Pages of three slots go through the real loop: every slot is a decision
// in ClickHouse (EVENT_ID#SLOT) with its chosen action and logged
// probability, feedback naming a slot reaches that slot's decision and no
// other, the analysts' per-slot query sees it, and a retrain learns from the
// slots' decisions: the version it trains (with a [slot, item] interaction)
// beats v1 on every slot and on the page, is promoted on the page's
// evidence, and the run's per-slot figures are printed and recorded.
func TestPagesThroughTheLoop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	d := startDev(t, ctx, "pages", map[string]string{"FLYWHEEL_MODELS_HOMEPAGE_INTERACTIONS": "[[user, item], [slot, item]]"})
	conn, db, post := d.conn, d.db, d.post
	type page struct {
		EventID string `json:"event_id"`
		Slots   []struct {
			ID          string  `json:"id"`
			EventID     string  `json:"event_id"`
			Chosen      string  `json:"chosen"`
			Probability float64 `json:"probability"`
		} `json:"slots"`
	}
	// 1,800 slot decisions: above retrain.min_new_examples, and a holdout of
	// 120 pages, enough for the gate to judge each slot (MinSlotExamples)
	const pages = 600
	chosen := map[string]string{}
	prob := map[string]float64{}
	var fb []string
	heroReward, sideReward, footerReward := 0.0, 0.0, 0.0
	for i := 0; i < pages; i++ {
		var p page
		post("/v1/rank", fmt.Sprintf(`{"model": "homepage", "context": {"user": {"segment": "s%d"}},
			"actions": [{"id": "a1", "features": {"item": {"category": "news"}}}, {"id": "a2", "features": {"item": {"category": "sport"}}},
			            {"id": "a3", "features": {"item": {"category": "games"}}}, {"id": "a4"}],
			"slots": [{"id": "hero", "features": {"size": "large"}}, {"id": "side", "excluded_actions": ["a4"]}, {"id": "footer"}]}`, i%3), &p)
		if len(p.Slots) != 3 {
			t.Fatalf("page %d: %+v", i, p)
		}
		for _, sl := range p.Slots {
			chosen[sl.EventID], prob[sl.EventID] = sl.Chosen, sl.Probability
		}
		// Each slot has its taste: a click on the hero when it shows news,
		// half a click on the side when it shows sport, a click on the
		// footer when it shows games.
		if p.Slots[0].Chosen == "a1" {
			fb = append(fb, fmt.Sprintf(`{"event_id": %q, "slot": "hero", "reward": 1, "feedback_id": "h"}`, p.EventID))
			heroReward++
		}
		if p.Slots[1].Chosen == "a2" {
			fb = append(fb, fmt.Sprintf(`{"event_id": %q, "slot": "side", "reward": 0.5, "feedback_id": "s"}`, p.EventID))
			sideReward += 0.5
		}
		if p.Slots[2].Chosen == "a3" {
			fb = append(fb, fmt.Sprintf(`{"event_id": %q, "slot": "footer", "reward": 1, "feedback_id": "f"}`, p.EventID))
			footerReward++
		}
	}
	for i := 0; i < len(fb); i += 100 {
		post("/v1/feedback", "["+strings.Join(fb[i:min(i+100, len(fb))], ",")+"]", nil)
	}
	// Every slot's decision is in ClickHouse with its choice and probability.
	waitFor(t, ctx, "every slot decision in ClickHouse", func() bool {
		var n uint64
		return conn.QueryRow(ctx, "SELECT count() FROM "+db+".decisions FINAL WHERE position(event_id, '#') > 0").Scan(&n) == nil && n == 3*pages
	})
	rows, err := conn.Query(ctx, "SELECT event_id, chosen, chosen_probability FROM "+db+".decisions FINAL")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, c string
		var p float64
		if err := rows.Scan(&id, &c, &p); err != nil {
			t.Fatal(err)
		}
		if chosen[id] != c || prob[id] != p {
			t.Fatalf("%s: stored %s with %v, answered %s with %v", id, c, p, chosen[id], prob[id])
		}
	}
	rows.Close()
	// Once the windows close, each slot's reward is its own.
	q := `SELECT splitByChar('#', event_id)[2] AS slot, count() AS decisions, sum(reward) AS reward_sum
		FROM ` + db + `.examples WHERE model = 'homepage' AND position(event_id, '#') > 0 GROUP BY slot ORDER BY slot`
	var got string
	waitFor(t, ctx, "the slots' rewards in examples", func() bool {
		rows, err := conn.Query(ctx, q)
		if err != nil {
			return false
		}
		defer rows.Close()
		var parts []string
		for rows.Next() {
			var slot string
			var n uint64
			var r float64
			if rows.Scan(&slot, &n, &r) != nil {
				return false
			}
			parts = append(parts, fmt.Sprintf("%s %d %g", slot, n, r))
		}
		got = strings.Join(parts, ", ")
		return got == fmt.Sprintf("footer %d %g, hero %d %g, side %d %g", pages, footerReward, pages, heroReward, pages, sideReward)
	})
	t.Logf("by slot: %s", got)
	// The dashboard shows the same by slot, and the page's reward.
	var dash struct {
		Data struct {
			Overview struct {
				Slots []struct {
					Slot       string  `json:"slot"`
					Decisions  uint64  `json:"decisions"`
					RewardRate float64 `json:"reward_rate"`
				} `json:"slots"`
			} `json:"overview"`
		} `json:"data"`
	}
	d.get("/v1/models/homepage/dashboard?window=1h", &dash)
	var shown []string
	for _, s := range dash.Data.Overview.Slots {
		shown = append(shown, fmt.Sprintf("%s %d %.4f", s.Slot, s.Decisions, s.RewardRate))
	}
	if want := fmt.Sprintf("footer %d %.4f, hero %d %.4f, side %d %.4f,  %d %.4f", pages, footerReward/pages, pages, heroReward/pages, pages, sideReward/pages,
		pages, (heroReward+sideReward+footerReward)/pages); strings.Join(shown, ", ") != want {
		t.Errorf("the dashboard's slots are %q, want %q", strings.Join(shown, ", "), want)
	}
	// A retrain learns from the slots' decisions, and its version beats v1
	// on every slot and on the page.
	out := d.flywheel("retrain", "--now", "--model", "homepage")
	t.Logf("retrain --now:\n%s", out)
	if !strings.Contains(out, "model homepage: promoted") || !strings.Contains(out, "per slot and for the page, by snips") {
		t.Fatalf("retrain --now promoted no candidate on the page's evidence, with per-slot figures:\n%s", out)
	}
	var js string
	if err := conn.QueryRow(ctx, "SELECT comparison FROM "+db+".retrain_runs WHERE model = 'homepage' ORDER BY started_ms DESC LIMIT 1").Scan(&js); err != nil {
		t.Fatal(err)
	}
	var cmp retrain.Comparison
	if err := json.Unmarshal([]byte(js), &cmp); err != nil {
		t.Fatalf("retrain_runs.comparison %s: %v", js, err)
	}
	if cmp.Page == nil || len(cmp.Slots) != 3 {
		t.Fatalf("retrain_runs.comparison has slots %+v and page %v; want footer, hero and side and the page", cmp.Slots, cmp.Page)
	}
	for _, sl := range append(cmp.Slots, retrain.SlotComparison{Slot: "the page", Comparison: *cmp.Page}) {
		v2, gain := sl.Candidate.SNIPS, sl.DiffSNIPS
		t.Logf("%s: v2 %.4f [%.4f, %.4f] vs v1 %.4f on %d holdout pages: gain %.4f [%.4f, %.4f]",
			sl.Slot, v2.Value, v2.Lower, v2.Upper, sl.Champion.SNIPS.Value, sl.Candidate.N, gain.Value, gain.Lower, gain.Upper)
		if gain.Lower <= 0 {
			t.Errorf("%s: v2 is not shown better than v1 (gain %.4f [%.4f, %.4f])", sl.Slot, gain.Value, gain.Lower, gain.Upper)
		}
	}
	// flywheel eval reads the same figures per slot: v1 against the new champion.
	ev := d.flywheel("eval", "--model", "homepage", "--version", "1", "--window", "1h")
	t.Logf("eval v1:\n%s", ev)
	if !strings.Contains(ev, "per slot and for the page, by snips") || !strings.Contains(ev, "footer") {
		t.Fatalf("eval prints no per-slot figures:\n%s", ev)
	}
}
