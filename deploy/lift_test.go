package deploy

import (
	"math"
	"testing"

	"github.com/flywheel-dev/flywheel/clickhouse"
)

// Pooling groups gives the union's mean and standard deviation, and the
// lift's interval is the unpooled normal one.
func TestLift(t *testing.T) {
	// treated: 0,1,1,1 (v2 champion) and 1,1 (v3 canary); control: 0,0,1,0
	rows := []clickhouse.VersionReward{
		{Version: 2, Variant: "champion", Decisions: 4, Mean: 0.75, StdDev: 0.5},
		{Version: 3, Variant: "canary", Decisions: 2, Mean: 1, StdDev: 0},
		{Version: 1, Variant: "control", Decisions: 4, Mean: 0.25, StdDev: 0.5},
	}
	l := Lift(rows, 0.95, 1, 2)
	if l == nil {
		t.Fatal("no lift")
	}
	// the union 0,1,1,1,1,1: mean 5/6, sd sqrt(1/6)
	if math.Abs(l.Treated.RewardRate-5.0/6) > 1e-12 || math.Abs(l.Treated.StdDev-math.Sqrt(1.0/6)) > 1e-12 || l.Treated.Decisions != 6 {
		t.Fatalf("treated %+v", l.Treated)
	}
	se := math.Sqrt(1.0/6/6 + 0.25/4)
	if math.Abs(l.Lift-(5.0/6-0.25)) > 1e-12 || math.Abs(l.Upper-l.Lift-1.959963984540054*se) > 1e-9 || math.Abs(l.Relative-(5.0/6-0.25)/0.25) > 1e-12 {
		t.Fatalf("lift %+v", l)
	}
	if Lift(rows[:2], 0.95, 1, 2) != nil {
		t.Fatal("a lift without a control group")
	}
}
