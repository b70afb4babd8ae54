package flywheel

import "testing"

// A slot's decision is told by its event id PAGE#SLOT and its context's
// slot^id together.
func TestExampleSlot(t *testing.T) {
	t.Parallel()
	slot := func(id string) Features { return Features{SlotNamespace: {"id": id}, "user": {"segment": "a"}} }
	for _, tc := range []struct {
		eventID    string
		ctx        Features
		page, slot string
		ok         bool
	}{
		{"p1#hero", slot("hero"), "p1", "hero", true},
		{"a#b#hero", slot("hero"), "a#b", "hero", true}, // a client's event id with a '#'
		{"p1#hero", Features{"user": {"segment": "a"}}, "", "", false},
		{"p1", slot("p1"), "", "", false},          // no page
		{"hero", slot("hero"), "", "", false},      // imported with a slot^id
		{"p1#xhero", slot("hero"), "", "", false},  // not the slot's id after the '#'
		{"p1#hero", slot("side"), "", "", false},   // another slot's
		{"#hero", slot("hero"), "", "hero", false}, // an empty page
	} {
		ex := Example{EventID: tc.eventID, Context: tc.ctx}
		page, s, ok := ex.Slot()
		if ok != tc.ok || ok && (page != tc.page || s != tc.slot) {
			t.Errorf("%q: %q, %q, %v; want %q, %q, %v", tc.eventID, page, s, ok, tc.page, tc.slot, tc.ok)
		}
	}
}
