package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// runVersion is `flywheel version`.
func runVersion(stdout io.Writer) error {
	fmt.Fprintln(stdout, "flywheel", version())
	return nil
}

// version is the module's version and, when built from a checkout, its
// commit.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return bi.Main.Version + "+" + s.Value[:min(12, len(s.Value))]
			}
		}
		return bi.Main.Version
	}
	return "unknown"
}
