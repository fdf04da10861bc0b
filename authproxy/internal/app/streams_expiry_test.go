package app

import (
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestStreamsDecidedAgainWhenTheirProjectionExpires: a request trusts a
// cached projection for PROJECTION_CACHE_TTL at most, event or no event;
// an open stream, a decision that lasts, is decided again on the same
// bound, so that a change whose event never reached the proxy (a role's
// permission taken out during a catalog rollout, answered by an old
// replica after the new catalog's auth.invalidate.all; an outbox that
// cannot publish while NATS_HEARTBEAT_TIMEOUT is 0) ends the streams it
// withdraws as it ends the requests: the WebSocket and the event stream
// of the user who lost notes:read close, another user's stays open. They
// were decided only on events, and stayed open until their token expired.
func TestStreamsDecidedAgainWhenTheirProjectionExpires(t *testing.T) {
	e, _ := startStreams(t, map[string]string{"PROJECTION_CACHE_TTL": "1s"})
	const other = "44444444-4444-4444-8444-444444444444"
	po := notesProjection()
	po.UserID = other
	e.core.SetProjection(po)
	tok := e.token(nil)
	c := e.openWS(t, "/notes/ws", tok)
	s := e.openSSE(t, "/notes/events", tok)
	kept := e.openWS(t, "/notes/ws", e.token(func(c testenv.Claims) { c["sub"] = other }))
	echo(t, c, "before")
	echo(t, kept, "before")

	// coreapi no longer grants notes:read; no event says so.
	p := notesProjection()
	p.Permissions = []string{"tenant:read"}
	e.core.SetProjection(p)
	// The user's requests are refused once the entry expires.
	eventually.Within(t, 5*time.Second, func() error {
		if r := e.do("GET", "/notes", tok, nil); r.status != 403 || r.prob.Code != problem.CodeInsufficientScope {
			return fmt.Errorf("request: %d %q, want 403 %s", r.status, r.prob.Code, problem.CodeInsufficientScope)
		}
		return nil
	})
	if code, text := wantClosed(t, c, 5*time.Second); code != websocket.ClosePolicyViolation || text != "insufficient_scope" {
		t.Fatalf("close = %d %q", code, text)
	}
	s.wantEnd(t, 5*time.Second)
	echo(t, kept, "after")
}
