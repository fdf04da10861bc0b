// Package silent gives tests a TCP address that accepts connections and
// never answers: a peer behind a network partition, a failover to a stale
// address or a firewall that drops packets after the handshake looks like
// this to a client. Nothing is refused and nothing is closed, so only the
// client's own deadlines end its wait (package refused is the other case,
// a peer that refuses at once).
package silent

import (
	"net"
	"sync"
	"testing"
)

// Addr returns "127.0.0.1:port" of a listener that accepts every
// connection, reads nothing, writes nothing and holds it open until the
// test and its subtests end.
func Addr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("silent: %v", err)
	}
	var (
		mu   sync.Mutex
		held []net.Conn
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return ln.Addr().String()
}
