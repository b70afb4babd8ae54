package testenv

import (
	"net"
	"testing"
)

// FreePort never hands out a port twice in one process, and the port is
// free to bind when it is handed out.
func TestFreePortIsNeverRepeated(t *testing.T) {
	seen := make(map[int]bool)
	for range 300 {
		p := FreePort(t)
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
	ln, err := net.Listen("tcp", FreeAddr(t))
	if err != nil {
		t.Fatalf("bind the address FreeAddr gave: %v", err)
	}
	ln.Close()
}
