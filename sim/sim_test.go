package sim

import "testing"

// Popularity must not be optimal: the best item differs between segments, and
// the best single item for everyone is well below the oracle.
func TestWorldNeedsInteractions(t *testing.T) {
	t.Parallel()
	w := NewWorld(1)
	best := map[string]bool{}
	oracle := 0.0
	itemAvg := make([]float64, len(w.Items))
	for _, s := range w.Segments {
		b, bp := "", -1.0
		for i, it := range w.Items {
			p := w.ClickProbability(s, it)
			itemAvg[i] += p / float64(len(w.Segments))
			if p > bp {
				b, bp = it.ID, p
			}
		}
		best[b] = true
		oracle += bp / float64(len(w.Segments))
	}
	popular := 0.0
	for _, a := range itemAvg {
		popular = max(popular, a)
	}
	if len(best) != len(w.Segments) {
		t.Errorf("%d distinct best items for %d segments", len(best), len(w.Segments))
	}
	if popular > 0.6*oracle {
		t.Errorf("the most popular item earns %.3f, the oracle %.3f: popularity is nearly optimal", popular, oracle)
	}
	t.Logf("oracle %.3f, best single item %.3f", oracle, popular)
}
