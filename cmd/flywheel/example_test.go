package main

import (
	"path/filepath"
	"testing"
)

// The documented example configuration loads as it is.
func TestExampleConfigLoads(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"flywheel.example.yaml", "demo/flywheel.demo.yaml"} {
		if _, err := loadConfig(filepath.Join("..", "..", p), func(string) string { return "" }); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}
