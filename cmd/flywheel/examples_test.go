package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"testing"
	"time"
)

// The Python and JavaScript examples run as documented against `flywheel
// dev`, twice each: every run gets a decision of version 1 and sends its
// feedback, and the last run's decision and its one feedback reach
// ClickHouse.
func TestClientExamples(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := startDev(t, ctx, "examples", nil)
	for _, ex := range [][]string{
		{"python3", "../../examples/python/quickstart.py", d.url},
		{"node", "../../examples/js/quickstart.mjs", d.url},
	} {
		var eventID string
		for run := 0; run < 2; run++ {
			out, err := exec.CommandContext(ctx, ex[0], ex[1:]...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", ex[1], err, out)
			}
			var lines []map[string]map[string]any
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				var l map[string]map[string]any
				if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
					t.Fatalf("%s printed %q", ex[1], sc.Text())
				}
				lines = append(lines, l)
			}
			if len(lines) != 2 || lines[0]["decision"]["model_version"] != 1.0 || lines[1]["feedback"]["accepted"] != 1.0 {
				t.Fatalf("%s printed %s", ex[1], out)
			}
			eventID = lines[0]["decision"]["event_id"].(string)
		}
		waitFor(t, ctx, ex[1]+"'s decision and feedback in ClickHouse", func() bool {
			var n uint64
			err := d.conn.QueryRow(ctx, "SELECT count() FROM "+d.db+".feedback FINAL WHERE event_id IN (SELECT event_id FROM "+d.db+".decisions WHERE event_id = ?)", eventID).Scan(&n)
			return err == nil && n == 1
		})
	}
}
