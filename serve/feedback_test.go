package serve

import (
	"strings"
	"testing"
	"time"
)

func TestParseFeedback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		body string
		n    int
		err  string
	}{
		{`{"event_id": "e1", "reward": 1, "type": "click"}`, 1, ""},
		{`[{"event_id": "e1", "reward": 1}, {"event_id": "e2", "reward": 0.5, "feedback_id": "f2"}]`, 2, ""},
		{`{"event_id": "e1"}`, 0, "reward is missing"},
		{`{"reward": 1}`, 0, "event_id is empty"},
		{`[{"event_id": "e1", "reward": 1}, {"event_id": "e2", "reward": "x"}]`, 0, "reward must be a number"},
		{`[{"event_id": "e1", "reward": 1}, {"event_id": "", "reward": 1}]`, 0, "[1].event_id is empty"},
		{`{"event_id": "e1", "reward": 1e999}`, 0, "reward is out of range"},
		{`{"event_id": "e1", "reward": 1, "rewrd": 2}`, 0, "unknown field"},
		{`[]`, 0, "empty"},
		{``, 0, "empty"},
		{`{"event_id": "e1", "reward": 1} {}`, 0, "more than one"},
		{`[` + strings.Repeat(`{"event_id": "e", "reward": 1},`, 3) + `{"event_id": "e", "reward": 1}]`, 0, "limit is 3"},
		{`{"event_id": "e1", "reward": 1, "time": "2026-03-01T12:00:00.25+01:00", "model": "homepage", "feedback_id": "f"}`, 1, ""},
		{`{"event_id": "e1", "reward": 1, "time": "2026-03-01 12:00"}`, 0, `time "2026-03-01 12:00" is not an RFC 3339 time`},
		{`[{"event_id": "e1", "reward": 1}, {"event_id": "e1", "reward": 1, "time": ""}, {"event_id": "e1", "reward": 1, "model": "Home"}]`, 0, `[2].model "Home" may hold only`},
		{`{"event_id": "e1", "reward": 1, "feedback_id": "` + strings.Repeat("f", 129) + `"}`, 0, "feedback_id is longer than 128 bytes"},
	} {
		items, err := parseFeedback([]byte(tc.body), 3)
		if tc.err == "" {
			if err != nil || len(items) != tc.n {
				t.Errorf("%s: %d items, %v", tc.body, len(items), err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want one containing %q", tc.body, err, tc.err)
		}
		if items != nil {
			t.Errorf("%s: items returned with an error", tc.body)
		}
	}
}

func FuzzParseFeedback(f *testing.F) {
	f.Add([]byte(`{"event_id": "e1", "reward": 1}`))
	f.Add([]byte(`[{"event_id": "e1", "reward": 1, "type": "x", "feedback_id": "y"}]`))
	f.Add([]byte(`{"event_id": "e1", "reward": 1, "time": "2026-03-01T12:00:00Z", "model": "m"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		items, err := parseFeedback(b, 100)
		if err == nil {
			for _, it := range items {
				if it.EventID == "" || it.Reward == nil || it.Time != "" && it.Acted.IsZero() {
					t.Fatalf("accepted an item without event_id or reward, or with a time not parsed: %+v", it)
				}
			}
		}
	})
}

func TestParseFeedbackTime(t *testing.T) {
	t.Parallel()
	items, err := parseFeedback([]byte(`{"event_id": "e1", "reward": 1, "time": "2026-03-01T12:00:00.25+01:00"}`), 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := items[0].Acted; got.Location() != time.UTC || !got.Equal(time.Date(2026, 3, 1, 11, 0, 0, 250e6, time.UTC)) {
		t.Fatalf("time parsed as %v", got)
	}
}
