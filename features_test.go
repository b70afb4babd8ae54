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
