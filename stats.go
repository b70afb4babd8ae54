package flywheel

import "math"

// TwoSidedZ returns the z of a two-sided normal interval at confidence (in
// (0, 1)): 1.96 at 0.95. Every interval the product reports, offline and
// online, uses it.
func TwoSidedZ(confidence float64) float64 { return math.Sqrt2 * math.Erfinv(confidence) }
