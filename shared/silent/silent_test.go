package silent

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestAddrAcceptsAndNeverAnswers: a connection is accepted, a write to it
// succeeds, and a read waits until its own deadline.
func TestAddrAcceptsAndNeverAnswers(t *testing.T) {
	addr := Addr(t)
	for range 3 {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("hello?")); err != nil {
			t.Fatalf("write: %v", err)
		}
		if err := c.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		n, err := c.Read(make([]byte, 1))
		if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read = %d, %v; want nothing until the deadline", n, err)
		}
	}
}
