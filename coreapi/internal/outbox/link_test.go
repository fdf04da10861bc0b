package outbox

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/natstest"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// link is a TCP relay between a client and a real server (NATS, or
// PostgreSQL) whose connections can go silent (a partition: nothing passes
// either way, nothing is closed; connections made after that pass again),
// or be cut (every connection closed and new ones refused: a server that
// went away, a failover), and then restored (the server back, at the same
// address).
type link struct {
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	pairs  []*linkPair
}

type linkPair struct {
	a, b   net.Conn
	silent atomic.Bool
}

func newLink(t *testing.T, target string) *link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &link{ln: ln, target: target, addr: ln.Addr().String()}
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.ln.Close()
		for _, p := range l.pairs {
			p.a.Close()
			p.b.Close()
		}
	})
	go l.serve(ln)
	return l
}

func (l *link) serve(ln net.Listener) {
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
		p := &linkPair{a: a, b: b}
		l.mu.Lock()
		l.pairs = append(l.pairs, p)
		l.mu.Unlock()
		go p.pipe(a, b)
		go p.pipe(b, a)
	}
}

func (l *link) URL() string { return "nats://" + l.addr }

// silence makes every connection open now go silent.
func (l *link) silence() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.pairs {
		p.silent.Store(true)
	}
}

// refuseNew closes the listener: the connections open now still pass,
// new ones are refused.
func (l *link) refuseNew() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ln.Close()
}

// cut closes the listener and every connection.
func (l *link) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ln.Close()
	for _, p := range l.pairs {
		p.a.Close()
		p.b.Close()
	}
}

// restore listens again at the link's address after a cut.
func (l *link) restore(t *testing.T) {
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

func (p *linkPair) pipe(dst, src net.Conn) {
	defer dst.Close()
	b := make([]byte, 32<<10)
	for {
		n, err := src.Read(b)
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

// TestRelayLeavesASilentConnection: the relay's link to NATS dies without
// closing. The client still reads as connected (it would notice only
// after minutes of unanswered pings), so every batch failed its flush and
// waited for the next, and invalidations stayed pending all that time
// while proxies on healthy links trusted their caches. A flush the server
// does not answer makes the relay reconnect at once.
func TestRelayLeavesASilentConnection(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	c := collect(t, ns.ClientURL())
	l := newLink(t, ns.Addr().String())
	startRelay(t, db.Pool, connect(t, l.URL()), RelayOptions{Poll: 100 * time.Millisecond, FlushTimeout: 300 * time.Millisecond})

	insert(t, db.Pool, Row{Subject: invalidation.UserSubject("u1"), Reason: invalidation.ReasonRoleRevoked})
	eventually.Within(t, wait, func() error { n := c.distinct(); return want(n == 1, "%d distinct events arrived, want 1", n) })

	l.silence()
	insert(t, db.Pool, Row{Subject: invalidation.UserSubject("u2"), Reason: invalidation.ReasonRoleRevoked})
	eventually.Within(t, 5*time.Second, func() error {
		n := c.distinct()
		return want(n == 2, "%d distinct events arrived, want 2: the one committed after the link went silent is still pending", n)
	})
}

// TestPublishRefusedByPermissionsStaysPending: the NATS server's subject
// permissions refuse one of the relay's subjects (here auth.keys.changed,
// a deployment that allowed coreapi auth.invalidate.> only). The server
// drops the message and says so apart, and the flush that follows
// succeeds: the row was marked published, the event lost without a
// trace. It must stay pending, and the batch count as a failure.
func TestPublishRefusedByPermissionsStaysPending(t *testing.T) {
	db := dbtest.New(t)
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Users: []*server.User{{Username: "core", Password: "pw", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{invalidation.SubjectWildcard}},
		}}}}
	ns := natstest.StartWith(t, opts)
	nc := connect(t, "nats://core:pw@"+ns.Addr().String())

	insert(t, db.Pool, Row{Subject: invalidation.SubjectKeysChanged, Reason: invalidation.ReasonKeysChanged})
	r := NewRelay(db.Pool, nc, quiet(), RelayOptions{})
	if _, err := r.PublishBatch(context.Background()); err == nil {
		t.Error("PublishBatch succeeded with its publish refused")
	}
	if got := pendingCount(t, db.Pool); got != 1 {
		t.Fatalf("pending rows = %d, want 1: the refused event was marked published", got)
	}
	// An allowed subject still goes out (the refusal is not sticky).
	if _, err := db.Pool.Exec(context.Background(), `DELETE FROM outbox`); err != nil {
		t.Fatal(err)
	}
	insert(t, db.Pool, Row{Subject: invalidation.UserSubject("u1"), Reason: invalidation.ReasonRoleRevoked})
	if _, err := r.PublishBatch(context.Background()); err != nil {
		t.Fatalf("PublishBatch of an allowed subject: %v", err)
	}
	if got := pendingCount(t, db.Pool); got != 0 {
		t.Fatalf("pending rows = %d, want 0", got)
	}
}
