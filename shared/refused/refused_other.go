//go:build !linux

package refused

import (
	"net"
	"testing"
)

// Addr returns the address of a closed listener. Off Linux the port is not
// held: another process may bind it before the test dials it.
func Addr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("refused: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
