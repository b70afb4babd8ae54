// Package proc reads what the benchmarks report of their own process from
// Linux's /proc.
package proc

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// PeakRSS is the process's peak resident memory in bytes (VmHWM), since it
// started or since ResetPeakRSS; 0 where /proc cannot tell.
func PeakRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// ResetPeakRSS returns what it can to the system and starts a new peak
// (writing 5 to clear_refs resets VmHWM), so that a phase's peak is not an
// earlier phase's.
func ResetPeakRSS() {
	runtime.GC()
	debug.FreeOSMemory()
	os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}
