package model

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/flywheel-dev/flywheel"
)

func profileOf(exs []flywheel.Example) *FeatureProfile {
	p := NewProfiler()
	for i := range exs {
		p.Add(exs[i].Context, exs[i].Actions)
	}
	return p.Profile()
}

// A profile of the segment world: every feature with its presence, the
// categories and segments seen, the range of ages and prices; features of
// the actions count once per example. The same examples give the same
// profile, and it survives JSON and validation.
func TestProfileOfAKnownWorld(t *testing.T) {
	t.Parallel()
	exs := segmentWorld(3000, 5)
	for i := range exs {
		if i%4 == 0 {
			delete(exs[i].Context["user"], "age") // a quarter of users give no age
		}
	}
	p := profileOf(exs)
	if p.Examples != 3000 || p.FeaturesTruncated {
		t.Fatalf("examples %d, truncated %v", p.Examples, p.FeaturesTruncated)
	}
	byKey := map[string]ProfiledFeature{}
	var keys []string
	for _, f := range p.Features {
		byKey[f.Key()] = f
		keys = append(keys, f.Key())
	}
	if want := []string{"item^category", "item^price", "user^age", "user^segment", "user^vip"}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("features %v, want %v", keys, want)
	}
	cat := byKey["item^category"]
	if cat.Present != 3000 || cat.Strings != 4*3000 || !reflect.DeepEqual(cat.Values, []string{"books", "games", "garden", "shoes"}) || cat.Range != nil {
		t.Errorf("item^category: %+v", cat)
	}
	price := byKey["item^price"]
	if r := price.Range; r == nil || r.Min != 10 || r.Max != 40 || r.P01 != 10 || r.P99 != 40 || price.Numbers != 4*3000 {
		t.Errorf("item^price: %+v %+v", price, price.Range)
	}
	age := byKey["user^age"]
	if got := p.Presence(&age); got != 0.75 {
		t.Errorf("user^age presence %v, want 0.75", got)
	}
	if r := age.Range; r == nil || r.Min < 20 || r.Max > 59 || r.P01 > r.P99 || r.Min > r.P01 {
		t.Errorf("user^age range %+v", age.Range)
	}
	if vip := byKey["user^vip"]; vip.Present != 3000 || vip.Range != nil || len(vip.Values) != 0 {
		t.Errorf("a bool is presence only: %+v", vip)
	}
	if again := profileOf(exs); !reflect.DeepEqual(again, p) {
		t.Error("the same examples gave another profile")
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var back FeatureProfile
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(&back, p) || back.Validate() != nil {
		t.Fatalf("JSON round trip: %v, validate %v", err, back.Validate())
	}
	if NewProfiler().Profile() != nil {
		t.Error("an empty profiler gave a profile")
	}
}

// The caps: past ProfileFeatures features the profile says it is
// truncated, and past ProfileValues values of one feature that feature
// does; long values are counted, not kept. Which features and values are
// kept does not depend on map order.
func TestProfileBounds(t *testing.T) {
	t.Parallel()
	var exs []flywheel.Example
	for i := 0; i < 3; i++ {
		ctx := flywheel.Features{"wide": {}, "cat": {"id": fmt.Sprint("v", i)}}
		for j := 0; j < ProfileFeatures; j++ {
			ctx["wide"][fmt.Sprintf("f%04d", j+i)] = 1.0
		}
		exs = append(exs, flywheel.Example{Context: ctx})
	}
	for i := 0; i < ProfileValues+5; i++ {
		exs = append(exs, flywheel.Example{Context: flywheel.Features{"cat": {"id": fmt.Sprint("v", i), "long": string(make([]byte, ProfileValueBytes+1))}}})
	}
	p := profileOf(exs)
	if !p.FeaturesTruncated || len(p.Features) != ProfileFeatures {
		t.Fatalf("%d features, truncated %v", len(p.Features), p.FeaturesTruncated)
	}
	// cat^id and f0000..f1022 fit in the first example, cat^long never did.
	if p.Features[0].Key() != "cat^id" || p.Features[len(p.Features)-1].Key() != "wide^f1022" {
		t.Errorf("kept %s … %s", p.Features[0].Key(), p.Features[len(p.Features)-1].Key())
	}
	id := p.Features[0]
	if len(id.Values) != ProfileValues || !id.ValuesTruncated || id.Strings != uint64(3+ProfileValues+5) {
		t.Errorf("cat^id: %d values, truncated %v, %d strings", len(id.Values), id.ValuesTruncated, id.Strings)
	}
	if err := p.Validate(); err != nil {
		t.Error(err)
	}
	for i := 0; i < 5; i++ {
		if again := profileOf(exs); !reflect.DeepEqual(again, p) {
			t.Fatal("the same examples gave another profile")
		}
	}
	bad := *p
	bad.Features = append([]ProfiledFeature{p.Features[1]}, p.Features[1:]...)
	if bad.Validate() == nil {
		t.Error("a repeated feature passed validation")
	}
}

// Merging the profiles of two runs of examples gives the profile of both,
// but for the percentiles, which widen; nil is the identity.
func TestProfileMerge(t *testing.T) {
	t.Parallel()
	exs := segmentWorld(2000, 9)
	for i := 1500; i < 2000; i++ {
		exs[i].Context["user"]["segment"] = fmt.Sprint("late-", i%7) // values the first run never had
		exs[i].Context["late"] = map[string]any{"x": 1.0}
	}
	whole, a, b := profileOf(exs), profileOf(exs[:1500]), profileOf(exs[1500:])
	m := a.Merge(b)
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	if m.Examples != whole.Examples || len(m.Features) != len(whole.Features) {
		t.Fatalf("merged %d examples, %d features; whole %d, %d", m.Examples, len(m.Features), whole.Examples, len(whole.Features))
	}
	for i := range whole.Features {
		w, g := whole.Features[i], m.Features[i]
		if g.Range != nil && (g.Range.P01 > w.Range.P01 || g.Range.P99 < w.Range.P99) {
			t.Errorf("%s: merged percentiles %+v are narrower than the whole's %+v", w.Key(), *g.Range, *w.Range)
		}
		if w.Range != nil {
			w.Range.P01, w.Range.P99, g.Range.P01, g.Range.P99 = 0, 0, 0, 0
		}
		if !reflect.DeepEqual(w, g) {
			t.Errorf("merged %+v\nwhole  %+v", g, w)
		}
	}
	if a.Merge(nil) != a || (*FeatureProfile)(nil).Merge(b) != b {
		t.Error("nil is not the identity")
	}
}
