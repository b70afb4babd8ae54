package flywheel

import (
	"fmt"
	"strings"
	"testing"
)

func TestFeaturesValidate(t *testing.T) {
	t.Parallel()
	l := Limits{MaxFeaturesPerNS: 3, MaxBagSize: 2}.WithDefaults()
	for _, tc := range []struct {
		f   Features
		err string
	}{
		{Features{"user": {"segment": "b", "age": 31.0, "vip": true, "tags": []any{"x"}}}, "limit is 3"},
		{Features{"user": {"segment": "b", "age": 31.0, "tags": []any{"x", "y"}}}, ""},
		{Features{"user": {"tags": []any{"x", "y", "z"}}}, "ctx.user.tags has 3 values"},
		{Features{"user": {"tags": []any{"x", 2.0}}}, "ctx.user.tags[1] is not a string"},
		{Features{"user": {"x": map[string]any{}}}, "ctx.user.x must be a string, a number, a bool or an array of strings"},
		{Features{"user": {"x": nil}}, "ctx.user.x is null"},
		{Features{"": {"x": 1.0}}, "empty namespace"},
		{Features{"user": nil}, "ctx.user is not an object"},
		{Features{"user": {"": 1.0}}, "empty name"},
	} {
		err := tc.f.Validate("ctx", l)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: error %v, want %q", tc.f, err, tc.err)
		}
		if err != nil && ErrorCode(err) != EINVALID {
			t.Errorf("%v: code %s", tc.f, ErrorCode(err))
		}
	}
}

func TestFlatten(t *testing.T) {
	t.Parallel()
	f := Features{"user": {"segment": "b", "age": 31.0, "vip": true, "tags": []any{"x", "y"}}, "a": {"z": false}}
	got := fmt.Sprint(f.Flatten())
	want := "[{a^z  0} {user^age  31} {user^segment b 1} {user^tags x 1} {user^tags y 1} {user^vip  1}]"
	if got != want {
		t.Fatalf("Flatten = %s, want %s", got, want)
	}
}

func TestErrorCodes(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("wrapped: %w", Errorf(ENOTFOUND, "model %s", "x"))
	if ErrorCode(err) != ENOTFOUND || ErrorMessage(err) != "model x" {
		t.Fatalf("%s %s", ErrorCode(err), ErrorMessage(err))
	}
	if ErrorCode(fmt.Errorf("boom")) != EINTERNAL || ErrorMessage(fmt.Errorf("secret")) != "internal error" {
		t.Fatal("internal errors must not leak their message")
	}
}

func TestCost(t *testing.T) {
	t.Parallel()
	ctx := Features{"user": {"segment": "b", "age": 31.0, "zero": 0.0, "off": false, "on": true, "tags": []any{"x", "y", "x"}}}
	acts := []Action{
		{ID: "a", Features: Features{"item": {"category": "c", "price": 2.0}}},
		{ID: "b"},
		{ID: "c", Features: Features{"item": {"tags": []any{"p", "q"}}, "user": {"extra": "e"}}},
	}
	pairs := [][2]string{{"user", "item"}}
	// the context: segment, age, on and three tags = 6 (zero and false are not hashed)
	// a: 6 + 2 + 6×2; b: 6 + 0 + 6×0; c: 6 + 3 + 7×2
	want := (6 + 2 + 12) + 6 + (6 + 3 + 14)
	if got := Cost(ctx, acts, pairs, 1<<30); got != want {
		t.Fatalf("Cost = %d, want %d", got, want)
	}
	if got := Cost(ctx, acts, nil, 1<<30); got != 6*3+2+3 {
		t.Fatalf("without interactions: %d, want %d", got, 6*3+2+3)
	}
	if got := Cost(ctx, nil, [][2]string{{"user", "user"}}, 1<<30); got != 6+36 {
		t.Fatalf("features alone, self-crossed: %d, want %d", got, 6+36)
	}
	if got := Cost(ctx, acts, pairs, 10); got <= 10 || got > 20 {
		t.Fatalf("with limit 10: %d, want the first total past it (20)", got)
	}
}
