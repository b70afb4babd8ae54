package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-dev/flywheel/internal/testenv"
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
	fin := watchFinality(t, d, "homepage", 300*time.Millisecond)
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
	// The dashboard shows the same lift over its window, and over time.
	var dash struct {
		Data struct {
			Overview struct {
				Lift *struct {
					Points []struct{ Lift, Lower, Upper float64 }
					Total  *struct {
						Treated, Control   uint64
						Lift, Lower, Upper float64
					}
				}
			}
		}
	}
	// Closed examples are final (fin checks it), so the dashboard, read
	// after, answers on the same examples.
	d.get("/v1/models/homepage/dashboard?window=1h", &dash)
	l := dash.Data.Overview.Lift
	if l == nil || l.Total == nil {
		t.Fatalf("the dashboard shows no lift over the control group: %+v", l)
	}
	t.Logf("dashboard: lift %.4f [%.4f, %.4f] over %d + %d decisions, %d buckets", l.Total.Lift, l.Total.Lower, l.Total.Upper,
		l.Total.Treated, l.Total.Control, len(l.Points))
	if l.Total.Treated != c.Treated.Decisions || l.Total.Control != c.Control.Decisions || math.Abs(l.Total.Lift-c.Lift) > 1e-9 {
		t.Errorf("the dashboard's lift %.6f over %d treated and %d control decisions, /v1/models %.6f over %d and %d",
			l.Total.Lift, l.Total.Treated, l.Total.Control, c.Lift, c.Treated.Decisions, c.Control.Decisions)
	}
	if len(l.Points) < 2 {
		t.Errorf("the dashboard's lift over time has %d buckets", len(l.Points))
	}
	fin.check()
}

// A control group whose baseline is a registry version, through the real
// loop: with promote.control.policy "version 1", the control's users are
// served version 1 from the registry, logged as version 1 and variant
// control, before and after a retrained version becomes the champion; a
// policy naming a version the registry does not have stops the start with
// an error naming the field.
func TestControlGroupOfAVersionThroughTheLoop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	extra := map[string]string{"FLYWHEEL_MODELS_HOMEPAGE_PROMOTE_CONTROL_SHARE": "0.3", "FLYWHEEL_MODELS_HOMEPAGE_PROMOTE_CONTROL_POLICY": "version 1"}
	d := startDev(t, ctx, "ctlver", extra)
	d.flywheel("sim", "--url", d.url, "--events", "5000")
	waitFor(t, ctx, "the 5,000 decisions in ClickHouse", func() bool {
		var n uint64
		return d.conn.QueryRow(ctx, "SELECT count() FROM "+d.db+".decisions FINAL WHERE model = 'homepage'").Scan(&n) == nil && n >= 5000
	})
	if out := d.flywheel("retrain", "--now", "--model", "homepage"); !strings.Contains(out, "model homepage: promoted") {
		t.Fatalf("retrain --now did not promote a version over version 1:\n%s", out)
	}
	d.flywheel("sim", "--url", d.url, "--events", "2000")
	served := map[string]uint64{}
	waitFor(t, ctx, "7,000 decisions in ClickHouse", func() bool {
		rows, err := d.conn.Query(ctx, "SELECT variant, version, count() FROM "+d.db+".decisions FINAL WHERE model = 'homepage' GROUP BY variant, version")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		clear(served)
		var total uint64
		for rows.Next() {
			var variant string
			var version uint32
			var n uint64
			if err := rows.Scan(&variant, &version, &n); err != nil {
				t.Fatal(err)
			}
			served[fmt.Sprintf("%s v%d", variant, version)] = n
			total += n
		}
		return total >= 7000
	})
	t.Logf("decisions by variant and version: %v", served)
	if len(served) != 3 || served["control v1"] == 0 || served["champion v1"] == 0 || served["champion v2"] == 0 {
		t.Fatalf("decisions by variant and version %v, want control v1 throughout and champion v1 then v2", served)
	}

	env := maps.Clone(extra)
	env["FLYWHEEL_MODELS_HOMEPAGE_PROMOTE_CONTROL_POLICY"] = "version 9"
	env["FLYWHEEL_HTTP_ADDR"], env["FLYWHEEL_SERVE_SPOOL_DIR"] = testenv.FreeAddr(t), t.TempDir()
	for _, k := range []string{"FLYWHEEL_CLICKHOUSE_DSN", "FLYWHEEL_KAFKA_TOPIC_PREFIX", "FLYWHEEL_LOG_LEVEL"} {
		env[k] = d.getenv(k)
	}
	err := run(ctx, []string{"dev", "--kafka", strings.Join(testenv.Kafka(t), ",")}, func(k string) string { return env[k] }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `models.homepage.promote.control.policy "version 9"`) || !strings.Contains(err.Error(), "has no version 9") {
		t.Fatalf("dev with a control group of a missing version returned %v", err)
	}
}
