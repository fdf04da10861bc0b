package outbox

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// TestBacklogFollowsANATSOutage: while NATS is down, the rows written
// pile up unpublished and only the failure counter rose; the relay's
// backlog reading (Relay.Backlog, read every BacklogEvery) now shows how
// many rows are pending and how old the oldest is, growing while the
// outage lasts, and both go back to 0 once NATS is back and the rows are
// published.
func TestBacklogFollowsANATSOutage(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	port := ns.Addr().(*net.TCPAddr).Port
	relayConn := connect(t, ns.ClientURL())
	r := startRelay(t, db.Pool, relayConn, RelayOptions{Poll: 20 * time.Millisecond, BacklogEvery: 20 * time.Millisecond})

	insert(t, db.Pool, Row{Subject: invalidation.UserSubject("before"), Reason: invalidation.ReasonUserPasswordChanged})
	eventually.Within(t, wait, func() error {
		b := r.Backlog()
		return want(b.Rows == 0 && b.OldestAge == 0 && pendingCount(t, db.Pool) == 0, "backlog %+v with NATS up, want none", b)
	})

	ns.Shutdown()
	ns.WaitForShutdown()
	eventually.Within(t, wait, func() error {
		return want(!relayConn.IsConnected(), "the relay's connection is still %v", relayConn.Status())
	})
	const written = 5
	for i := range written {
		insert(t, db.Pool, Row{Subject: invalidation.UserSubject("outage-" + string(rune('a'+i))), Reason: invalidation.ReasonUserPasswordChanged})
	}
	var first Backlog
	eventually.Within(t, wait, func() error {
		first = r.Backlog()
		return want(first.Rows == written && first.OldestAge > 0, "backlog %+v while NATS is down, want %d rows and an age", first, written)
	})
	eventually.Within(t, wait, func() error {
		b := r.Backlog()
		return want(b.Rows == written && b.OldestAge >= first.OldestAge+200*time.Millisecond,
			"backlog %+v while NATS is down, want %d rows, older than %v by 200 ms", b, written, first.OldestAge)
	})

	startNATS(t, port, "")
	eventually.Within(t, wait, func() error {
		b := r.Backlog()
		return want(b.Rows == 0 && b.OldestAge == 0 && pendingCount(t, db.Pool) == 0, "backlog %+v after NATS is back, want none", b)
	})
}

// TestBacklogCountIsCapped: the reading counts pending rows only up to
// BacklogCap, so that a huge backlog does not make the reading itself
// slow; the oldest row's age is read all the same.
func TestBacklogCountIsCapped(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	r := NewRelay(db.Pool, connect(t, ns.ClientURL()), quiet(), RelayOptions{BacklogCap: 10})
	rows := make([]Row, 25)
	for i := range rows {
		rows[i] = Row{Subject: invalidation.SubjectAll, Reason: "test"}
	}
	insert(t, db.Pool, rows...)
	b, err := r.ReadBacklog(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if b.Rows != 10 || b.OldestAge < 0 {
		t.Errorf("backlog %+v of 25 pending rows counted up to 10, want 10 rows", b)
	}
	if got := r.Backlog(); got != b {
		t.Errorf("Backlog() = %+v after the reading %+v", got, b)
	}
}
