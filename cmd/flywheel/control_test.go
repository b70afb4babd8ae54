package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A control group through the real loop: with promote.control.share 0.3
// (set by environment, as an operator would), about 30% of decisions are
// served uniformly at random as variant control, and once a retrained
// version serves the rest, /v1/models/homepage reports the lift over the
// control with an interval above 0.
func TestControlGroupLiftThroughTheLoop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	d := startDev(t, ctx, "control", map[string]string{"FLYWHEEL_MODELS_HOMEPAGE_PROMOTE_CONTROL_SHARE": "0.3"})
	d.flywheel("sim", "--url", d.url, "--events", "5000")
	out := d.flywheel("retrain", "--now", "--model", "homepage")
	if !strings.Contains(out, "model homepage: promoted") {
		t.Fatalf("retrain --now did not promote a version over the uniform one:\n%s", out)
	}
	d.flywheel("sim", "--url", d.url, "--events", "5000")
	type arm struct {
		Decisions  uint64  `json:"decisions"`
		RewardRate float64 `json:"reward_rate"`
	}
	var info struct {
		Registry struct {
			Control *struct {
				Treated, Control             arm
				Lift, Lower, Upper, Relative float64
			} `json:"control"`
		} `json:"registry"`
	}
	waitFor(t, ctx, "the lift over 10,000 closed decisions", func() bool {
		d.get("/v1/models/homepage", &info)
		c := info.Registry.Control
		return c != nil && c.Treated.Decisions+c.Control.Decisions >= 10000
	})
	c := info.Registry.Control
	share := float64(c.Control.Decisions) / float64(c.Treated.Decisions+c.Control.Decisions)
	t.Logf("control %d decisions at %.4f, treated %d at %.4f: lift %.4f [%.4f, %.4f], %+.0f%%",
		c.Control.Decisions, c.Control.RewardRate, c.Treated.Decisions, c.Treated.RewardRate, c.Lift, c.Lower, c.Upper, 100*c.Relative)
	if share < 0.26 || share > 0.34 {
		t.Errorf("the control group made %.3f of the decisions, want about 0.3", share)
	}
	if !(c.Lower > 0) {
		t.Errorf("lift %.4f [%.4f, %.4f]: the retrained version is not shown better than uniform", c.Lift, c.Lower, c.Upper)
	}
}
