// Package tcplink is a TCP relay for tests, set between a client (a pgx
// pool, a NATS connection or route) and the real server it talks to, that
// fails the way a network or a server does: its connections go silent (a
// partition: nothing passes either way, nothing is closed), hold what
// either side sends (a slow server), close (a server that went away), and
// new ones are refused until the server comes back at the same address.
package tcplink

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Link relays every connection made to Addr to its target, one connection
// to the target for each. Its methods are safe for concurrent use. The
// listener and every connection close when the test that made it ends.
type Link struct {
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	pairs  []*pair
	// frozen: connections made from now on go silent too (Freeze).
	frozen bool
}

// pair is one relayed connection: a the client's, b the server's.
type pair struct {
	a, b   net.Conn
	silent atomic.Bool
	// gate, while set, holds what either side sends until it is closed
	// (a slow server: nothing is lost, all of it comes late).
	gate atomic.Pointer[chan struct{}]
}

// New listens on a free port of 127.0.0.1 and relays what connects there
// to target (host:port) until t ends.
func New(t testing.TB, target string) *Link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &Link{ln: ln, target: target, addr: ln.Addr().String()}
	t.Cleanup(func() {
		l.Release()
		l.Cut()
	})
	go l.serve(ln)
	return l
}

// Addr is the host:port clients connect to instead of the target's. It
// stays the same across Cut and Restore.
func (l *Link) Addr() string { return l.addr }

func (l *Link) serve(ln net.Listener) {
	for {
		a, err := ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", l.target)
		if err != nil {
			a.Close()
			continue
		}
		p := &pair{a: a, b: b}
		l.mu.Lock()
		p.silent.Store(l.frozen)
		l.pairs = append(l.pairs, p)
		l.mu.Unlock()
		go p.pipe(a, b)
		go p.pipe(b, a)
	}
}

// Silence makes every connection open now go silent; connections made
// later pass.
func (l *Link) Silence() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.pairs {
		p.silent.Store(true)
	}
}

// Freeze makes every connection, open now or made later, go silent: a
// server that stopped answering without closing anything (a partition
// that drops every packet, a postmaster and its backends stopped with
// SIGSTOP, whose kernel still accepts connections).
func (l *Link) Freeze() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.frozen = true
	for _, p := range l.pairs {
		p.silent.Store(true)
	}
}

// Thaw lets connections made from now on pass again (those frozen stay
// silent: what they lost leaves them of no use).
func (l *Link) Thaw() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.frozen = false
}

// Hold makes every connection open now hold what either side sends, until
// Release: a server (or a network) slow to answer, not gone.
func (l *Link) Hold() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.pairs {
		g := make(chan struct{})
		p.gate.Store(&g)
	}
}

// Release lets what Hold held through, in order.
func (l *Link) Release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.pairs {
		if g := p.gate.Swap(nil); g != nil {
			close(*g)
		}
	}
}

// SilenceFrom makes the connection that reaches the server from local
// port port go silent (a server's view of its client: the client_port of
// PostgreSQL's pg_stat_activity), and reports whether there was one.
func (l *Link) SilenceFrom(port int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.pairs {
		if a, ok := p.b.LocalAddr().(*net.TCPAddr); ok && a.Port == port {
			p.silent.Store(true)
			return true
		}
	}
	return false
}

// RefuseNew closes the listener: the connections open now still pass,
// new ones are refused.
func (l *Link) RefuseNew() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ln.Close()
}

// Drop closes every connection open now, both sides, cleanly (the client
// reads an end of stream, as from a server that went away without a
// word); connections made later pass: a server restarted at once.
func (l *Link) Drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closePairs()
}

// Cut closes the listener and every connection: a server gone, new
// connections refused until Restore.
func (l *Link) Cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ln.Close()
	l.closePairs()
}

func (l *Link) closePairs() {
	for _, p := range l.pairs {
		p.a.Close()
		p.b.Close()
	}
}

// Restore listens again at Addr after Cut or RefuseNew: the server back
// at the same address.
func (l *Link) Restore(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	go l.serve(ln)
}

// pipe copies what src sends to dst, unless the pair is silent (read and
// dropped) or held (read and kept until released), and closes dst once
// src ends.
func (p *pair) pipe(dst, src net.Conn) {
	defer dst.Close()
	b := make([]byte, 32<<10)
	for {
		n, err := src.Read(b)
		if g := p.gate.Load(); g != nil {
			<-*g
		}
		if n > 0 && !p.silent.Load() {
			if _, werr := dst.Write(b[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
