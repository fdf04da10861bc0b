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

// A reload's stream_timeout counts the silence of an open WebSocket from
// its last frame, not from the reload: a WebSocket silent for most of the
// new value ends when the new value has passed since that frame, and
// reloads that follow one another do not extend it. (Each reload that
// changed the value woke the relay, which then waited the whole new value
// again from the reload, so a stream silent for longer than any value the
// rules ever had stayed open.)
func TestStreamTimeoutOfAReloadCountsFromTheLastFrame(t *testing.T) {
	a := newStreamApp(t)
	base := a.rules("")
	rulesWith := func(ws string) string {
		return base[:strings.Index(base, "routes:\n")] + "routes:\n" +
			"  - {prefix: /notes/ws, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], websocket: true, stream_timeout: " + ws + "}\n" +
			"  - {prefix: /notes/events, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], stream_timeout: 2s}\n"
	}
	e := start(t, envOpt{rules: rulesWith("8s")})
	e.core.SetProjection(notesProjection())
	tok := e.token(nil)
	ws := e.openWS(t, "/notes/ws", tok)
	echo(t, ws, "last")
	last := time.Now() // the last frame either way
	reload := func(at time.Duration, timeout string) {
		time.Sleep(time.Until(last.Add(at)))
		gen := e.generation()
		e.writeRules(rulesWith(timeout))
		testenv.Eventually(t, func() error { return testenv.WantAbove("rules generation", e.generation(), gen) })
	}
	reload(2*time.Second, "7s")
	reload(4*time.Second, "6s")
	// Closed idle 6 s after the last frame; counted from the reloads it
	// would stay open until about 10 s after it, past even the 8 s it was
	// opened with.
	if code, text := wantClosed(t, ws, time.Until(last.Add(8*time.Second))); code != websocket.CloseGoingAway || text != "idle" {
		t.Fatalf("close = %d %q, want 1001 idle", code, text)
	}
	t.Logf("closed idle %v after the last frame", time.Since(last).Round(time.Millisecond))
	if time.Since(last) < 5*time.Second {
		t.Fatalf("closed %v after the last frame, before the 6 s the rules allow", time.Since(last))
	}
}
