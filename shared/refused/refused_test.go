//go:build linux

package refused

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

func TestAddrRefusesAndStaysTaken(t *testing.T) {
	addr := Addr(t)
	for range 3 {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			c.Close()
			t.Fatalf("dial %s succeeded", addr)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial %s: %v, want connection refused", addr, err)
		}
	}
	// Nobody else can take the port while the test runs, the way a
	// closed listener's port could be taken.
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("listen on %s succeeded while it is held", addr)
	}
	_, port, _ := net.SplitHostPort(addr)
	if ln, err := net.Listen("tcp4", ":"+port); err == nil {
		ln.Close()
		t.Fatalf("listen on every address, port %s, succeeded while it is held", port)
	}
}

func TestAddrReleasedAfterTest(t *testing.T) {
	var addr string
	t.Run("hold", func(t *testing.T) { addr = Addr(t) })
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port %s not released after its test: %v", addr, err)
	}
	ln.Close()
}
