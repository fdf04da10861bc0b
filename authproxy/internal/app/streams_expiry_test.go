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

// TestStreamWithinLeewayAdmittedLikeARequest: a token past its exp but
// within TOKEN_LEEWAY is accepted by a request, and so opens a WebSocket
// and an event stream, which close (1008 token_expired; the stream's
// end) when a request with it would be refused: at exp plus the leeway.
// Armed at exp alone, the expiry closed the stream as it registered, and
// its handshake was refused 401 invalid_token while a request with the
// same token was answered 200.
func TestStreamWithinLeewayAdmittedLikeARequest(t *testing.T) {
	const leeway = 2500 * time.Millisecond
	e, _ := startStreams(t, map[string]string{"TOKEN_LEEWAY": leeway.String()})
	past := time.Now().Add(-time.Minute).Unix()
	// One to two seconds ago: past the leeway within 0.5 to 1.5 s, before
	// the event stream's stream_timeout (2 s) ends it idle.
	exp := time.Now().Unix() - 1
	tok := e.token(func(c testenv.Claims) { c["iat"], c["nbf"], c["exp"] = past, past, exp })
	until := time.Unix(exp, 0).Add(leeway) // a request with tok is refused from then on
	e.wantStatus(e.do("GET", "/notes", tok, nil), 200)
	c := e.openWS(t, "/notes/ws", tok)
	s := e.openSSE(t, "/notes/events", tok)
	echo(t, c, "within the leeway")
	if code, text := wantClosed(t, c, 10*time.Second); code != websocket.ClosePolicyViolation || text != "token_expired" {
		t.Fatalf("close = %d %q, want 1008 token_expired", code, text)
	}
	if early := time.Until(until); early > 0 {
		t.Fatalf("closed %v before exp plus the leeway, while a request with its token is still accepted", early)
	}
	s.wantEnd(t, 5*time.Second)
	if r := e.do("GET", "/notes", tok, nil); r.status != 401 || r.prob.Code != problem.CodeInvalidToken {
		t.Fatalf("request after exp plus the leeway: %d %q, want 401 %s", r.status, r.prob.Code, problem.CodeInvalidToken)
	}
	eventually.Within(t, 5*time.Second, func() error {
		for _, kind := range []string{"websocket", "sse"} {
			if n := metricCount(t, e, `authproxy_streams_closed_total{kind="`+kind+`",reason="token_expired"}`); n != 1 {
				return fmt.Errorf("%s streams closed for token_expired = %v, want 1", kind, n)
			}
		}
		return nil
	})
}
