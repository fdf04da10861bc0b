package app

import (
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
)

// A rules reload that changes a route's stream_timeout applies to the
// streams open on it, not only to those opened after: a WebSocket whose
// route now allows a shorter silence is closed idle by the new value, an
// event stream whose route now allows a longer one is not cut at the old,
// and a WebSocket whose route no longer has one stays open.
// (Each kept the value it was opened with for good: lowering it after an
// incident left the streams already open silent for the old one.)
func TestStreamTimeoutOfAReloadAppliesToOpenStreams(t *testing.T) {
	a := newStreamApp(t)
	base := a.rules("")
	rulesWith := func(ws, sse, keep string) string {
		return base[:strings.Index(base, "routes:\n")] + "routes:\n" +
			"  - {prefix: /notes/ws/keep, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], websocket: true" + keep + "}\n" +
			"  - {prefix: /notes/ws, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], websocket: true, stream_timeout: " + ws + "}\n" +
			"  - {prefix: /notes/events, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], stream_timeout: " + sse + "}\n"
	}
	e := start(t, envOpt{rules: rulesWith("30s", "2s", ", stream_timeout: 2s")})
	e.core.SetProjection(notesProjection())
	tok := e.token(nil)
	ws := e.openWS(t, "/notes/ws", tok)
	echo(t, ws, "before")
	keep := e.openWS(t, "/notes/ws/keep", tok)
	echo(t, keep, "before")
	s := e.openSSE(t, "/notes/events", tok)
	sseOpened := time.Now()
	gen := e.generation()
	e.writeRules(rulesWith("1s", "30s", ""))
	testenv.Eventually(t, func() error { return testenv.WantAbove("rules generation", e.generation(), gen) })
	reloaded := time.Now()

	// Opened with 30s, now 1s: closed idle about a second after the reload.
	if code, text := wantClosed(t, ws, 5*time.Second); code != websocket.CloseGoingAway || text != "idle" {
		t.Fatalf("open WebSocket: close = %d %q", code, text)
	}
	t.Logf("open WebSocket closed idle %v after the reload", time.Since(reloaded))
	// Opened after the reload: 1s too.
	fresh := e.openWS(t, "/notes/ws", tok)
	if code, text := wantClosed(t, fresh, 5*time.Second); code != websocket.CloseGoingAway || text != "idle" {
		t.Fatalf("new WebSocket: close = %d %q", code, text)
	}
	// Opened with 2s, now 30s: still open after 3s of silence.
	time.Sleep(time.Until(sseOpened.Add(3 * time.Second)))
	a.events <- `{"id":"late"}`
	if got := s.next(t, 5*time.Second); got != `{"id":"late"}` {
		t.Fatalf("event = %q", got)
	}
	// Opened with 2s, now without stream_timeout: open after 3s of silence.
	echo(t, keep, "after")
}
