package app

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// sse opens an event stream through the proxy.
type sse struct {
	resp *http.Response
	r    *bufio.Reader
}

func (e *env) openSSE(t *testing.T, path, tok string) *sse {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+e.addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream answer %d %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return &sse{resp: resp, r: bufio.NewReader(resp.Body)}
}

// next reads one event's data within d.
func (s *sse) next(t *testing.T, d time.Duration) string {
	t.Helper()
	type res struct {
		data string
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		var data string
		for {
			line, err := s.r.ReadString('\n')
			if err != nil {
				ch <- res{err: err}
				return
			}
			line = strings.TrimRight(line, "\n")
			if v, ok := strings.CutPrefix(line, "data: "); ok {
				data = v
			}
			if line == "" && data != "" {
				ch <- res{data: data}
				return
			}
		}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("event stream: %v", r.err)
		}
		return r.data
	case <-time.After(d):
		t.Fatalf("no event within %v: held back", d)
	}
	return ""
}

// wantEnd waits for the end of the stream (clean: EOF).
func (s *sse) wantEnd(t *testing.T, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ch := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, s.r); ch <- err }()
	select {
	case err := <-ch:
		if err != nil {
			t.Fatalf("stream ended with %v, want a clean end", err)
		}
	case <-time.After(d):
		t.Fatalf("stream still open after %v", d)
	}
	return time.Since(start)
}

// TestStreamRouteFlushedAndNotCutByTimeouts: an event stream's events
// reach the client as they come, and neither UPSTREAM_TIMEOUT,
// WRITE_TIMEOUT nor READ_TIMEOUT (300 ms) cuts a stream silent for longer
// (its route's stream_timeout is a minute); a stream silent for its
// route's stream_timeout (2 s) is ended by the proxy.
func TestStreamRouteFlushedAndNotCutByTimeouts(t *testing.T) {
	a := newStreamApp(t)
	rules := strings.Replace(a.rules("  - {prefix: /notes/open-events, methods: [GET], upstream: notes, access: public, stream_timeout: 2s}\n"),
		"permissions: [notes:read], stream_timeout: 2s}", "permissions: [notes:read], stream_timeout: 1m}", 1)
	e := start(t, envOpt{rules: rules, vars: map[string]string{"UPSTREAM_TIMEOUT": "300ms", "WRITE_TIMEOUT": "300ms", "READ_TIMEOUT": "300ms"}})
	e.core.SetProjection(notesProjection())
	s := e.openSSE(t, "/notes/events", e.token(nil))
	if got := a.last(t); got.verifyErr != nil || got.identity.UserID != userID {
		t.Fatalf("app saw %+v, %v", got.identity, got.verifyErr)
	}
	a.events <- `{"id":1}`
	if got := s.next(t, 5*time.Second); got != `{"id":1}` {
		t.Fatalf("event = %q", got)
	}
	// Silent for longer than every request timeout: what is tested, not
	// a wait for something.
	time.Sleep(900 * time.Millisecond)
	a.events <- `{"id":2}`
	if got := s.next(t, 5*time.Second); got != `{"id":2}` {
		t.Fatalf("event = %q", got)
	}
	if open := metricCount(t, e, `authproxy_streams_open{kind="sse",route="/notes/events"}`); open != 1 {
		t.Fatalf("open streams metric = %v", open)
	}
	// Silent beyond stream_timeout: the proxy ends it (timed from before
	// it was opened: it cannot end sooner after that).
	opened := time.Now()
	idle := e.openSSE(t, "/notes/open-events", "")
	idle.wantEnd(t, 10*time.Second)
	if d := time.Since(opened); d < 2*time.Second {
		t.Fatalf("ended %v after it was opened, before stream_timeout (2s)", d)
	}
	testenv.Eventually(t, func() error {
		return testenv.Want("streams closed as idle", metricCount(t, e, `authproxy_streams_closed_total{kind="sse",reason="idle"}`), 1)
	})
}

// TestStreamHandshakeUpstreamTimeout: an upstream's timeout, not
// UPSTREAM_TIMEOUT, bounds its answer to a stream's request (the headers of
// an event stream, the answer to an upgrade), as it bounds its other
// answers; once the stream is open neither cuts it (only stream_timeout).
func TestStreamHandshakeUpstreamTimeout(t *testing.T) {
	const wait = 600 * time.Millisecond // the app's delay before its headers
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(wait)
		if websocket.IsWebSocketUpgrade(r) {
			c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
			if err == nil {
				_ = c.WriteMessage(websocket.TextMessage, []byte("hello"))
				_, _, _ = c.ReadMessage()
				c.Close()
			}
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		time.Sleep(1500 * time.Millisecond) // longer than the upstream's timeout
		fmt.Fprint(w, "data: late\n\n")
	}))
	defer app.Close()
	for _, tc := range []struct {
		timeout string
		want    int
	}{{"", 504}, {", timeout: 1s", 200}} {
		e := start(t, envOpt{vars: map[string]string{"UPSTREAM_TIMEOUT": "300ms"}, rules: `
upstreams:
  slow: {url: "` + app.URL + `", key_id: app-notes` + tc.timeout + `}
routes:
  - {prefix: /events, methods: [GET], upstream: slow, access: public, stream_timeout: 5s}
  - {prefix: /ws, methods: [GET], upstream: slow, access: public, websocket: true}
`})
		if tc.want != 200 {
			e.wantProblem(e.do("GET", "/events", "", nil), tc.want, problem.CodeUpstreamDown)
			if _, resp, err := e.dialWS("/ws", nil); err == nil || resp == nil || resp.StatusCode != tc.want {
				t.Fatalf("upstream%s: WebSocket %v, %v; want %d", tc.timeout, resp, err, tc.want)
			}
			continue
		}
		s := e.openSSE(t, "/events", "")
		if got := s.next(t, 5*time.Second); got != "late" {
			t.Fatalf("event = %q", got)
		}
		c, resp, err := e.dialWS("/ws", nil)
		if err != nil {
			t.Fatalf("upstream%s: WebSocket %v, %v", tc.timeout, resp, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, p, err := c.ReadMessage(); err != nil || string(p) != "hello" {
			t.Fatalf("WebSocket message %q, %v", p, err)
		}
		c.Close()
	}
}

func TestStreamsClosedOnRevocation(t *testing.T) {
	// A token expires for the proxy at exp plus TOKEN_LEEWAY.
	e, _ := startStreams(t, map[string]string{"TOKEN_LEEWAY": "1s"})
	tok := e.token(nil)
	restore := func() {
		e.core.SetProjection(notesProjection())
		e.publishAndWait("auth.invalidate.user." + userID)
	}

	t.Run("permission removed: WebSocket closed 1008", func(t *testing.T) {
		defer restore()
		var lat []time.Duration
		for i := 0; i < 20; i++ {
			c, _, err := e.dialWS("/notes/ws", bearer(tok))
			if err != nil {
				t.Fatal(err)
			}
			echo(t, c, "x")
			p := notesProjection()
			p.Permissions = []string{"tenant:read"}
			e.core.SetProjection(p)
			start := time.Now()
			e.publish("auth.invalidate.user." + userID)
			code, text := wantClosed(t, c, 5*time.Second)
			lat = append(lat, time.Since(start))
			c.Close()
			if code != websocket.ClosePolicyViolation || text != "insufficient_scope" {
				t.Fatalf("close = %d %q", code, text)
			}
			restore()
		}
		slices.Sort(lat)
		t.Logf("event published -> close frame read, 20 trials: p50 %v, max %v", lat[len(lat)/2], lat[len(lat)-1])
	})
	t.Run("unchanged access keeps the stream", func(t *testing.T) {
		n := e.rechecks.count()
		c, _, err := e.dialWS("/notes/ws", bearer(tok))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// The recheck its registration asked for, then each event's,
		// published once the one before had decided: the stream's
		// rechecks are idle when the event asks for one, so the next to
		// decide began after it.
		kept := func(after string) {
			t.Helper()
			decided := e.rechecks.await(t, n, 1)
			n += len(decided)
			for _, reason := range decided {
				if reason != "" {
					t.Fatalf("the recheck after %s closed the stream (%s), want it kept", after, reason)
				}
			}
		}
		kept("its opening")
		for _, subject := range []string{"auth.invalidate.user." + userID, "auth.invalidate.tenant." + tenantID} {
			e.publishAndWait(subject)
			kept(subject)
		}
		echo(t, c, "still here")
	})
	t.Run("session revoked: event stream ended", func(t *testing.T) {
		defer restore()
		s := e.openSSE(t, "/notes/events", tok)
		p := notesProjection()
		p.RevokedSessions = []string{sessionID}
		e.core.SetProjection(p)
		e.publish("auth.invalidate.user." + userID)
		t.Logf("stream ended %v after the event", s.wantEnd(t, 5*time.Second))
	})
	t.Run("tenant suspended: all its streams closed", func(t *testing.T) {
		defer restore()
		c1, _, err := e.dialWS("/notes/ws", bearer(tok))
		if err != nil {
			t.Fatal(err)
		}
		defer c1.Close()
		c2, _, err := e.dialWS("/notes/ws", bearer(e.token(nil)))
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		s := e.openSSE(t, "/notes/events", tok)
		p := notesProjection()
		p.TenantStatus = "suspended"
		e.core.SetProjection(p)
		e.publish("auth.invalidate.tenant." + tenantID)
		for _, c := range []*websocket.Conn{c1, c2} {
			if code, text := wantClosed(t, c, 5*time.Second); code != websocket.ClosePolicyViolation || text != "inactive" {
				t.Fatalf("close = %d %q", code, text)
			}
		}
		s.wantEnd(t, 5*time.Second)
	})
	t.Run("logout through this proxy closes at once, without the event", func(t *testing.T) {
		defer restore()
		c, _, err := e.dialWS("/notes/ws", bearer(tok))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// coreapi has committed the logout; its event never comes here.
		p := notesProjection()
		p.RevokedSessions = []string{sessionID}
		e.core.SetProjection(p)
		answerInvalidated(e.core, invalidation.UserSubject(userID)) // coreapi's answer names the caller
		e.wantStatus(e.do("POST", "/api/v1/auth/logout", tok, nil), 200)
		answerInvalidated(e.core)
		if code, text := wantClosed(t, c, 5*time.Second); code != websocket.ClosePolicyViolation || text != "session_revoked" {
			t.Fatalf("close = %d %q", code, text)
		}
	})
	t.Run("token version bumped: closed", func(t *testing.T) {
		defer restore()
		c, _, err := e.dialWS("/notes/ws", bearer(tok))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		p := notesProjection()
		p.TokenVersion = 1
		e.core.SetProjection(p)
		e.publish("auth.invalidate.user." + userID)
		if code, text := wantClosed(t, c, 5*time.Second); code != websocket.ClosePolicyViolation || text != "token_version" {
			t.Fatalf("close = %d %q", code, text)
		}
	})
	t.Run("user deactivated, seen through invalidate.all: closed", func(t *testing.T) {
		defer restore()
		c, _, err := e.dialWS("/notes/ws", bearer(tok))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		p := notesProjection()
		p.UserStatus = "disabled"
		e.core.SetProjection(p)
		e.publish("auth.invalidate.all")
		if code, text := wantClosed(t, c, 5*time.Second); code != websocket.ClosePolicyViolation || text != "inactive" {
			t.Fatalf("close = %d %q", code, text)
		}
	})
	t.Run("token expiry closes the connection", func(t *testing.T) {
		short := e.token(func(c testenv.Claims) { c["exp"] = time.Now().Add(1500 * time.Millisecond).Unix() })
		c, _, err := e.dialWS("/notes/ws", bearer(short))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		echo(t, c, "x")
		if code, text := wantClosed(t, c, 5*time.Second); code != websocket.ClosePolicyViolation || text != "token_expired" {
			t.Fatalf("close = %d %q", code, text)
		}
	})
	if n := metricCount(t, e, `authproxy_streams_closed_total{kind="websocket",reason="insufficient_scope"}`); n != 20 {
		t.Errorf("closed for insufficient_scope = %v, want 20", n)
	}
	if n := metricCount(t, e, `authproxy_streams_bytes_total{direction="to_client"}`); n == 0 {
		t.Error("no bytes relayed counted")
	}
}

// refusedStreams is the count of streams refused by the cap reason.
func refusedStreams(t *testing.T, e *env, reason string) float64 {
	t.Helper()
	return metricCount(t, e, `authproxy_streams_refused_total{reason="`+reason+`"}`)
}

func TestStreamLimits(t *testing.T) {
	t.Run("per user: 429", func(t *testing.T) {
		e, _ := startStreams(t, map[string]string{"STREAM_MAX_PER_USER": "1"})
		// Every cap's refusals are exported before the first one, so
		// that an alert on their increase sees it.
		for _, r := range []string{"proxy_limit", "user_limit"} {
			if n := refusedStreams(t, e, r); n != 0 {
				t.Fatalf("refused %s before any refusal = %v, want 0", r, n)
			}
		}
		c, _, err := e.dialWS("/notes/ws", bearer(e.token(nil)))
		if err != nil {
			t.Fatal(err)
		}
		_, resp, err := e.dialWS("/notes/ws", bearer(e.token(nil)))
		if err == nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("second stream = %v, %v; want 429", err, resp)
		}
		if n := refusedStreams(t, e, "user_limit"); n != 1 {
			t.Fatalf("refused user_limit = %v, want 1", n)
		}
		// Freed when the first goes.
		c.Close()
		testenv.Eventually(t, func() error { return testenv.Want("open streams", e.app.Streams.Open(), 0) })
		c, _, err = e.dialWS("/notes/ws", bearer(e.token(nil)))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
	t.Run("per proxy: 503", func(t *testing.T) {
		e, _ := startStreams(t, map[string]string{"STREAM_MAX_CONNS": "1", "STREAM_MAX_PER_USER": "0"})
		s := e.openSSE(t, "/notes/events", e.token(nil))
		_ = s
		r := e.do("GET", "/notes/ws", e.token(nil), map[string]string{"Connection": "Upgrade", "Upgrade": "websocket",
			"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
		e.wantProblem(r, 503, problem.CodeUnavailable)
		if n := refusedStreams(t, e, "proxy_limit"); n != 1 {
			t.Fatalf("refused proxy_limit = %v, want 1", n)
		}
		// Plain requests are not streams: never capped.
		e.wantStatus(e.do("GET", "/notes", e.token(nil), nil), 200)
	})
}

// An event stream whose client goes away while its upstream is silent
// ends at once: its slot under STREAM_MAX_PER_USER is free for the user's
// next stream, and the app's connection is closed (its handler ends), not
// kept until the route's stream_timeout (here a minute) or the next event
// the proxy would fail to write.
func TestEventStreamClientGoneFreesItsSlotAndItsUpstream(t *testing.T) {
	a := newStreamApp(t)
	e := start(t, envOpt{vars: map[string]string{"STREAM_MAX_PER_USER": "1"}, rules: a.rules(
		"  - {prefix: /notes/open-events, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], stream_timeout: 1m}\n")})
	e.core.SetProjection(notesProjection())
	tok := e.token(nil)
	s := e.openSSE(t, "/notes/open-events", tok)
	testenv.Eventually(t, func() error { return testenv.Want("app event streams open", a.sseOpen.Load(), int64(1)) })
	r := e.do("GET", "/notes/open-events", tok, map[string]string{"Accept": "text/event-stream"})
	e.wantProblem(r, 429, problem.CodeTooManyRequests)
	gone := time.Now()
	s.resp.Body.Close() // the client goes away
	eventually.Within(t, 5*time.Second, func() error {
		return testenv.Want("app event streams open after the client went away", a.sseOpen.Load(), int64(0))
	})
	eventually.Within(t, 5*time.Second, func() error { return testenv.Want("open streams", e.app.Streams.Open(), 0) })
	t.Logf("app connection closed and slot freed %v after the client went away", time.Since(gone))
	e.openSSE(t, "/notes/open-events", tok) // the slot is free
}

// The proxy's close frame is the client's: a WebSocket closed because its
// access was withdrawn has its app connection closed without one, and the
// app reads an abnormal closure (1006, an unexpected EOF), as
// docs/operations.md tells apps to expect.
func TestAppSeesAbnormalClosureWhenTheProxyClosesAStream(t *testing.T) {
	e, a := startStreams(t, nil)
	ws := e.openWS(t, "/notes/ws", e.token(nil))
	echo(t, ws, "x")
	pr := notesProjection()
	pr.Permissions = []string{"tenant:read"}
	e.core.SetProjection(pr)
	e.publish("auth.invalidate.user." + userID)
	if code, text := wantClosed(t, ws, 5*time.Second); code != websocket.ClosePolicyViolation || text != "insufficient_scope" {
		t.Fatalf("client: close = %d %q", code, text)
	}
	select {
	case err := <-a.wsEnded:
		if !websocket.IsCloseError(err, websocket.CloseAbnormalClosure) {
			t.Fatalf("app: the WebSocket ended with %v, want an abnormal closure (1006)", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("app: its WebSocket still open 5 s after the proxy closed the client's")
	}
}

func TestStreamsEndOnShutdown(t *testing.T) {
	e, _ := startStreams(t, map[string]string{"STREAM_DRAIN_TIMEOUT": "3s"})
	c, _, err := e.dialWS("/notes/ws", bearer(e.token(nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := e.openSSE(t, "/notes/events", e.token(nil))
	e.cancel()
	if code, text := wantClosed(t, c, 5*time.Second); code != websocket.CloseGoingAway || text != "shutdown" {
		t.Fatalf("close = %d %q", code, text)
	}
	s.wantEnd(t, 5*time.Second)
	select {
	case err := <-e.done:
		e.done <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// openWS opens a WebSocket at path with tok as its bearer, closed at the
// test's end.
func (e *env) openWS(t *testing.T, path, tok string) *websocket.Conn {
	t.Helper()
	c, _, err := e.dialWS(path, bearer(tok))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A rules reload reaches open streams: a route that now needs a permission
// the caller lacks closes them (insufficient_scope), one that no longer
// allows WebSockets closes them (route_changed, 1012: a reconnect is
// routed by the new rules, not an access withdrawn), an unchanged one keeps
// them.
func TestStreamsRerouteOnReload(t *testing.T) {
	e, a := startStreams(t, nil)
	tok := e.token(nil)
	dial := func(path string) *websocket.Conn { return e.openWS(t, path, tok) }
	ws, open, kept := dial("/notes/ws"), dial("/notes/open-ws"), dial("/notes/ws/x")
	gen := e.generation()
	e.writeRules(a.rules("")[:strings.Index(a.rules(""), "routes:\n")] + "routes:\n" +
		"  - {prefix: /notes/ws/x, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], websocket: true}\n" +
		"  - {prefix: /notes/ws, methods: [GET], upstream: notes, access: protected, permissions: [notes:write], websocket: true}\n" +
		"  - {prefix: /notes/open-ws, methods: [GET], upstream: notes, access: public}\n")
	testenv.Eventually(t, func() error { return testenv.WantAbove("rules generation", e.generation(), gen) })
	if code, text := wantClosed(t, ws, 5*time.Second); code != websocket.ClosePolicyViolation || text != "insufficient_scope" {
		t.Fatalf("tightened route: close = %d %q", code, text)
	}
	if code, text := wantClosed(t, open, 5*time.Second); code != websocket.CloseServiceRestart || text != "route_changed" {
		t.Fatalf("route without websocket: close = %d %q", code, text)
	}
	echo(t, kept, "unchanged")
}

// A rules reload that sends a stream's route to another upstream address
// closes the stream (route_changed): its connection is to the old
// upstream, which the rules no longer name for it. A route whose upstream
// was renamed but keeps its address keeps its streams, as does an
// unchanged one.
func TestStreamsEndWhenTheirRouteMovesUpstream(t *testing.T) {
	e, a := startStreams(t, nil)
	other := newStreamApp(t)
	tok := e.token(nil)
	dial := func(path string) *websocket.Conn { return e.openWS(t, path, tok) }
	moved, renamed, kept := dial("/notes/ws/moved"), dial("/notes/ws/renamed"), dial("/notes/ws")
	for _, c := range []*websocket.Conn{moved, renamed, kept} {
		echo(t, c, "before")
	}
	s := e.openSSE(t, "/notes/events", tok)
	gen := e.generation()
	e.writeRules("upstreams:\n" +
		"  notes:\n    url: http://" + a.addr + "\n    key_id: app-notes\n" +
		"  alias:\n    url: http://" + a.addr + "\n    key_id: app-notes\n" +
		"  other:\n    url: http://" + other.addr + "\n    key_id: app-two\n" +
		"routes:\n" +
		"  - {prefix: /notes/ws/moved, methods: [GET], upstream: other, access: protected, permissions: [notes:read], websocket: true}\n" +
		"  - {prefix: /notes/ws/renamed, methods: [GET], upstream: alias, access: protected, permissions: [notes:read], websocket: true}\n" +
		"  - {prefix: /notes/ws, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], websocket: true}\n" +
		"  - {prefix: /notes/events, methods: [GET], upstream: other, access: protected, permissions: [notes:read], stream_timeout: 2s}\n")
	testenv.Eventually(t, func() error { return testenv.WantAbove("rules generation", e.generation(), gen) })
	if code, text := wantClosed(t, moved, 5*time.Second); code != websocket.CloseServiceRestart || text != "route_changed" {
		t.Fatalf("route moved to another upstream: close = %d %q", code, text)
	}
	s.wantEnd(t, 5*time.Second)
	echo(t, renamed, "renamed")
	echo(t, kept, "unchanged")
}

// A rules reload after which a stream's route would reach the upstream at
// another path (strip_prefix turned on) or with another Host
// (rewrite_host) closes the stream (route_changed), as a move to another
// upstream address does: the stream is to the resource the old route
// named. A longer prefix that forwards the same path and Host keeps it.
func TestStreamsEndWhenTheirRouteForwardsElsewhere(t *testing.T) {
	e, a := startStreams(t, nil)
	tok := e.token(nil)
	dial := func(path string) *websocket.Conn {
		c, _, err := e.dialWS(path, bearer(tok))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	stripped, hosted, longer, kept := dial("/notes/ws/stripped"), dial("/notes/ws/hosted"), dial("/notes/ws/longer"), dial("/notes/ws")
	for _, c := range []*websocket.Conn{stripped, hosted, longer, kept} {
		echo(t, c, "before")
	}
	gen := e.generation()
	e.writeRules("upstreams:\n" +
		"  notes:\n    url: http://" + a.addr + "\n    key_id: app-notes\n" +
		"  hosted:\n    url: http://" + a.addr + "\n    key_id: app-notes\n    rewrite_host: true\n" +
		"routes:\n" +
		"  - {prefix: /notes/ws/stripped, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], websocket: true, strip_prefix: true}\n" +
		"  - {prefix: /notes/ws/hosted, methods: [GET], upstream: hosted, access: protected, permissions: [notes:read], websocket: true}\n" +
		"  - {prefix: /notes/ws/longer, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], websocket: true}\n" +
		"  - {prefix: /notes/ws, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], websocket: true}\n")
	testenv.Eventually(t, func() error { return testenv.WantAbove("rules generation", e.generation(), gen) })
	for name, c := range map[string]*websocket.Conn{"strip_prefix turned on": stripped, "rewrite_host turned on": hosted} {
		if code, text := wantClosed(t, c, 5*time.Second); code != websocket.CloseServiceRestart || text != "route_changed" {
			t.Fatalf("%s: close = %d %q", name, code, text)
		}
	}
	echo(t, longer, "longer prefix, same path")
	echo(t, kept, "unchanged")
}

// A stream is decided again as its token sees the projection: a scope
// claim narrows the permissions as it does for requests, and a route that
// now requires a second factor closes the streams of tokens without one.
func TestStreamsRecheckAsTheTokenSees(t *testing.T) {
	e, a := startStreams(t, nil)
	now := time.Now()
	dial := func(mod func(testenv.Claims)) *websocket.Conn {
		c, _, err := e.dialWS("/notes/ws/x", bearer(e.token(mod)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	scoped := dial(func(c testenv.Claims) {
		c["scope"] = "notes:read"
		c["amr"] = []string{"pwd", "otp"}
		c["auth_time"] = now.Unix()
	})
	pwdOnly := dial(func(c testenv.Claims) { c["amr"] = []string{"pwd"}; c["auth_time"] = now.Unix() })
	otp := dial(func(c testenv.Claims) { c["amr"] = []string{"pwd", "otp"}; c["auth_time"] = now.Unix() })
	for _, c := range []*websocket.Conn{scoped, pwdOnly, otp} {
		echo(t, c, "before")
	}
	gen := e.generation()
	// The user holds tenant:read; the scoped token does not.
	e.writeRules(a.rules("")[:strings.Index(a.rules(""), "routes:\n")] + "routes:\n" +
		"  - {prefix: /notes/ws, methods: [GET], upstream: notes, access: protected, permissions: [tenant:read], require_mfa: true, max_auth_age: 5m, websocket: true}\n")
	testenv.Eventually(t, func() error { return testenv.WantAbove("rules generation", e.generation(), gen) })
	if code, text := wantClosed(t, scoped, 5*time.Second); code != websocket.ClosePolicyViolation || text != "insufficient_scope" {
		t.Fatalf("scoped token: close = %d %q", code, text)
	}
	if code, text := wantClosed(t, pwdOnly, 5*time.Second); code != websocket.ClosePolicyViolation || text != "insufficient_user_authentication" {
		t.Fatalf("token without a second factor: close = %d %q", code, text)
	}
	echo(t, otp, "after")
}

// A stream that ends at once, many times over: the proxy's watch on the
// client ends with each stream, never reading the hijacked connection after
// fasthttp took it back (that read panicked, now and then, or raced with
// the connection's next user).
func TestStreamEndsAtOnceManyTimes(t *testing.T) {
	e := start(t, envOpt{rules: appUpstream + "routes:\n  - {prefix: /app, methods: [GET], upstream: notes, access: public, stream_timeout: 5s}\n"})
	for i := range 200 {
		resp, err := e.client.Get("http://" + e.addr + "/app/stream")
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || len(body) != 2*testenv.StreamChunk {
			t.Fatalf("stream %d: %d, %d bytes, %v", i, resp.StatusCode, len(body), err)
		}
	}
}

// TestStreamsEndWhenTheirKeyIsRemoved: when the key that signed a stream's
// token leaves the published set (auth.keys.changed), the stream ends as a
// request with that token is refused; streams of the remaining key stay.
func TestStreamsEndWhenTheirKeyIsRemoved(t *testing.T) {
	e, _ := startStreams(t, map[string]string{"JWKS_REFETCH_COOLDOWN": "1h", "JWKS_REFRESH_INTERVAL": "1h"})
	next := testenv.NewKey(t, "20260201T000000Z-0000bbbb", jwa.EdDSA)
	e.core.Publish(e.key, next)
	e.publish(invalidation.SubjectKeysChanged)
	nextTok := testenv.Sign(t, next, testenv.DefaultClaims(time.Now(), userID, tenantID, sessionID), nil)
	eventually.Within(t, 5*time.Second, func() error {
		if r := e.do("GET", "/api/v1/users/me", nextTok, nil); r.status != 200 {
			return fmt.Errorf("token of the new key: status %d", r.status)
		}
		return nil
	})
	oldWS, _, err := e.dialWS("/notes/ws", bearer(e.token(nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer oldWS.Close()
	oldSSE := e.openSSE(t, "/notes/events", e.token(nil))
	nextWS, _, err := e.dialWS("/notes/ws", bearer(nextTok))
	if err != nil {
		t.Fatal(err)
	}
	defer nextWS.Close()
	echo(t, oldWS, "before")
	echo(t, nextWS, "before")

	e.core.Publish(next)
	e.publish(invalidation.SubjectKeysChanged)
	if code, text := wantClosed(t, oldWS, 5*time.Second); code != websocket.ClosePolicyViolation || text != "key_removed" {
		t.Fatalf("WebSocket of the removed key: close = %d %q", code, text)
	}
	oldSSE.wantEnd(t, 5*time.Second)
	echo(t, nextWS, "after")
}

// TestUnansweredRecheckClosesTheStreamWithoutStaleness: with
// MAX_STALENESS=0 (nothing cached is trusted once NATS is down), a stream
// whose re-evaluation after an event cannot get its projection (coreapi
// not answering) is closed ("unavailable", WebSocket 1013) at once, as
// the user's requests get 503. The bound of such a re-evaluation is
// MAX_STALENESS, and 0 there meant "tried until answered": the strictest
// setting kept the stream open for as long as coreapi stayed away, the
// event that may have withdrawn its access never applied.
func TestUnansweredRecheckClosesTheStreamWithoutStaleness(t *testing.T) {
	e, _ := startStreams(t, map[string]string{"MAX_STALENESS": "0s", "PROJECTION_TIMEOUT": "200ms"})
	tok := e.token(nil)
	c, _, err := e.dialWS("/notes/ws", bearer(tok))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo(t, c, "x")
	// coreapi stops answering projections.
	gate := make(chan struct{})
	e.core.ProjectionGate.Store(&gate)
	defer func() {
		e.core.ProjectionGate.Store(nil)
		close(gate)
	}()
	e.publish("auth.invalidate.user." + userID)
	if code, text := wantClosed(t, c, 5*time.Second); code != websocket.CloseTryAgainLater || text != "unavailable" {
		t.Fatalf("close = %d %q", code, text)
	}
	e.wantProblem(e.do("GET", "/notes", tok, nil), 503, problem.CodeUpstreamDown)
}

// TestStreamsDecidedAgainWhileNATSDown: with the invalidation feed down,
// a request trusts a cached projection for MAX_STALENESS only; an open
// stream, a decision that lasts, is decided again on the same bound, so
// a member disabled during the outage loses the stream as they lose their
// requests, not at their token's expiry or the feed's return.
func TestStreamsDecidedAgainWhileNATSDown(t *testing.T) {
	streamLosesAccessWhileNATSDown(t, "1s", 2*time.Second, 10*time.Second)
}

// TestStreamsLoseAccessWhileNATSDownAsRequestsDo: while NATS is down, a
// stream whose projection is no longer trusted is decided again soon after
// (each tenth of MAX_STALENESS), not up to MAX_STALENESS later. Decided
// again only each MAX_STALENESS, a revoked user's stream outlived their
// requests by up to that much: twice the bound after the revocation. The
// wait, 15 s, has room beyond the tenth (3 s) and ends before the next
// recheck each MAX_STALENESS would have come (30 s).
func TestStreamsLoseAccessWhileNATSDownAsRequestsDo(t *testing.T) {
	streamLosesAccessWhileNATSDown(t, "30s", 31*time.Second, 15*time.Second)
}

// streamLosesAccessWhileNATSDown opens a stream with MAX_STALENESS set to
// maxStaleness, stops NATS, disables the member, moves the clock on by
// advance (past the bound for the entry and the disconnect), checks that a
// request is refused, and wants the stream closed as inactive within.
func streamLosesAccessWhileNATSDown(t *testing.T, maxStaleness string, advance, within time.Duration) {
	t.Helper()
	e, _ := startStreams(t, map[string]string{"MAX_STALENESS": maxStaleness})
	tok := e.token(nil)
	c, _, err := e.dialWS("/notes/ws", bearer(tok))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo(t, c, "x")
	e.nats.Stop()
	testenv.Eventually(t, func() error {
		return testenv.Want("bounded staleness", e.app.Projections.BoundedStaleness(), true)
	})
	p := notesProjection()
	p.MembershipStatus = "disabled"
	e.core.SetProjection(p)
	e.clock.Advance(advance)
	e.wantProblem(e.do("GET", "/notes", tok, nil), 401, problem.CodeInvalidToken)
	if code, text := wantClosed(t, c, within); code != websocket.ClosePolicyViolation || text != "inactive" {
		t.Fatalf("close = %d %q", code, text)
	}
}

// heldFetch is PROJECTION_TIMEOUT for tests that hold a projection fetch
// (holdProjection) while they change something else.
const heldFetch = "30s"

// holdProjection holds the next projection fetch at the stand-in core
// until the returned release is called; started has a value once the
// fetch waits.
func (e *env) holdProjection() (started <-chan struct{}, release func()) {
	s, gate := make(chan struct{}, 1), make(chan struct{})
	e.core.ProjectionStarted.Store(&s)
	e.core.ProjectionGate.Store(&gate)
	return s, func() {
		e.core.ProjectionStarted.Store(nil)
		e.core.ProjectionGate.Store(nil)
		close(gate)
	}
}

// dialHeld opens a WebSocket whose request waits at its projection fetch
// (holdProjection) while during runs, then goes on; it returns the
// connection once open, or the proxy's refusal of the upgrade.
func (e *env) dialHeld(t *testing.T, path, tok string, during func()) (*websocket.Conn, *http.Response) {
	t.Helper()
	started, release := e.holdProjection()
	type dialed struct {
		c    *websocket.Conn
		resp *http.Response
		err  error
	}
	res := make(chan dialed, 1)
	go func() {
		c, resp, err := e.dialWS(path, bearer(tok))
		res <- dialed{c, resp, err}
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		release()
		t.Fatal("the request fetched no projection")
	}
	during()
	release()
	d := <-res
	if d.err != nil {
		if errors.Is(d.err, websocket.ErrBadHandshake) && d.resp != nil {
			return nil, d.resp
		}
		t.Fatalf("dial: %v (%v)", d.err, d.resp)
	}
	t.Cleanup(func() { d.c.Close() })
	return d.c, nil
}

// wantUpgradeRefused checks a refusal of a WebSocket upgrade (resp; c, the
// connection had it opened) against status and problem code.
func wantUpgradeRefused(t *testing.T, c *websocket.Conn, resp *http.Response, status int, code string) {
	t.Helper()
	if c != nil {
		t.Fatalf("upgrade accepted, want %d %s", status, code)
	}
	var p problem.Problem
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &p)
	if resp.StatusCode != status || p.Code != code {
		t.Fatalf("upgrade refused %d %s, want %d %s", resp.StatusCode, b, status, code)
	}
}

// TestStreamOfAKeyRemovedWhileItsRequestWasDecided: a token verified just
// before its key left the set, whose stream registered just after (the
// request waited for its projection meanwhile), is closed as it registers,
// before anything reached the upstream or the client: refused 401
// invalid_token, as a request with the token is. The streams were held to
// a new key set only when it became current: that one stayed open until
// the token expired, though requests with the token were refused from
// then on.
func TestStreamOfAKeyRemovedWhileItsRequestWasDecided(t *testing.T) {
	e, a := startStreams(t, map[string]string{"JWKS_REFETCH_COOLDOWN": "1h", "JWKS_REFRESH_INTERVAL": "1h", "PROJECTION_TIMEOUT": heldFetch})
	tok := e.token(nil)
	c, resp := e.dialHeld(t, "/notes/ws", tok, func() {
		e.core.Publish(testenv.NewKey(t, "20260201T000000Z-0000bbbb", jwa.EdDSA))
		e.publish(invalidation.SubjectKeysChanged)
		// (A request with the token would wait for the held fetch.)
		eventually.Within(t, 5*time.Second, func() error {
			return testenv.Want("token's key in the current set", e.app.Keys.Current().Keys[e.key.Kid] != nil, false)
		})
	})
	wantUpgradeRefused(t, c, resp, 401, problem.CodeInvalidToken)
	if n := a.count(); n != 0 {
		t.Fatalf("the app got %d requests", n)
	}
	if n := e.app.Streams.Open(); n != 0 {
		t.Fatalf("open streams = %d", n)
	}
}

// TestStreamRoutedBeforeAReloadRegisteredAfter: a stream whose request was
// routed by the table a reload replaced, and that registered after the
// reload had routed the open streams again, is routed again as it
// registers: closed when the new table no longer routes it the way it
// was opened (route_changed: refused 503 with Retry-After, nothing having
// reached the upstream or the client, so that the request sent again is
// routed by the new table), decided under its new route otherwise (here
// one that needs a permission the caller lacks: refused 403 if that
// decision came before the upstream's answer, closed 1008 once open if
// after). It kept its old route for good: even an invalidation decided it
// under the permissions the rules no longer asked for.
func TestStreamRoutedBeforeAReloadRegisteredAfter(t *testing.T) {
	e, a := startStreams(t, map[string]string{"PROJECTION_TIMEOUT": heldFetch})
	tok := e.token(nil)
	upstream := a.rules("")[:strings.Index(a.rules(""), "routes:\n")]
	reload := func(routes string) func() {
		return func() {
			gen := e.generation()
			e.writeRules(upstream + "routes:\n" + routes)
			testenv.Eventually(t, func() error { return testenv.WantAbove("rules generation", e.generation(), gen) })
		}
	}
	dropped, resp := e.dialHeld(t, "/notes/ws", tok, reload(
		"  - {prefix: /notes, methods: [GET], upstream: notes, access: protected, permissions: [notes:read]}\n"))
	wantUpgradeRefused(t, dropped, resp, 503, problem.CodeUpstreamDown)
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("route changed: no Retry-After")
	}
	if n := a.count(); n != 0 {
		t.Fatalf("the app got %d requests", n)
	}
	testenv.Eventually(t, func() error { return testenv.Want("open streams", e.app.Streams.Open(), 0) })
	reload(a.rules("")[len(upstream)+len("routes:\n"):])()
	e.publishAndWait("auth.invalidate.user." + userID) // the next request fetches its projection
	tightened, resp := e.dialHeld(t, "/notes/ws", tok, reload(
		"  - {prefix: /notes/ws, methods: [GET], upstream: notes, access: protected, permissions: [notes:write], websocket: true}\n"))
	if tightened == nil {
		wantUpgradeRefused(t, tightened, resp, 403, problem.CodeInsufficientScope)
	} else if code, text := wantClosed(t, tightened, 5*time.Second); code != websocket.ClosePolicyViolation || text != "insufficient_scope" {
		t.Fatalf("route now needing notes:write: close = %d %q", code, text)
	}
}

// heldUpstream serves requests it never answers: each one read, held
// gets a channel that has the error of the connection's next read, once
// the proxy closes it (or a minute has passed: os.ErrDeadlineExceeded).
func heldUpstream(t *testing.T) (addr string, held <-chan chan error) {
	t.Helper()
	h := make(chan chan error, 4)
	addr = serveRaw(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		closed := make(chan error, 1)
		h <- closed
		_ = c.SetReadDeadline(time.Now().Add(time.Minute))
		_, err := c.Read(make([]byte, 1))
		closed <- err
	})
	return addr, h
}

// heldRequest writes req, a raw request, to the proxy and waits until it
// reaches the upstream of heldUpstream (held); it returns the channel of
// that upstream connection's end and the one of the proxy's answer.
func heldRequest(t *testing.T, e *env, req string, held <-chan chan error) (closed <-chan error, answered <-chan result) {
	t.Helper()
	conn, br := dialProxy(t, e.addr)
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	a := make(chan result, 1)
	go func() {
		var r result
		if resp, err := http.ReadResponse(br, nil); err == nil {
			r.status, r.header = resp.StatusCode, resp.Header
			r.body, _ = io.ReadAll(resp.Body)
			_ = json.Unmarshal(r.body, &r.prob)
		}
		a <- r
	}()
	select {
	case c := <-held:
		return c, a
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the upstream")
	}
	return nil, nil
}

// wantHeldRefused waits for the upstream connection of a held request
// to be closed, then for the proxy's answer, which it returns.
func wantHeldRefused(t *testing.T, closed <-chan error, answered <-chan result) result {
	t.Helper()
	select {
	case err := <-closed:
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("upstream connection still open after a minute")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("upstream connection still open 5 s after the stream was closed")
	}
	select {
	case r := <-answered:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no answer 5 s after the stream was closed")
	}
	return result{}
}

// TestStreamRevokedDuringItsHandshake: a WebSocket or event stream whose
// user loses access while its upstream has not answered the upgrade or
// the stream's request yet is refused at once, as a new request of that
// user is then (401 invalid_token for a disabled user, 403
// insufficient_scope for a permission taken out), and its upstream
// connection is closed then. Closed before its transport existed, the
// stream was only marked closed: the proxy kept its upstream connection,
// and the client waiting, until the upstream answered or its timeout (here
// UPSTREAM_TIMEOUT, 30 s; up to an hour with a route's timeout) passed.
func TestStreamRevokedDuringItsHandshake(t *testing.T) {
	addr, held := heldUpstream(t)
	e := start(t, envOpt{vars: map[string]string{"UPSTREAM_TIMEOUT": "30s"}, rules: `
upstreams:
  slow: {url: "http://` + addr + `", key_id: app-notes}
routes:
  - {prefix: /ws, methods: [GET], upstream: slow, access: protected, permissions: [notes:read], websocket: true}
  - {prefix: /events, methods: [GET], upstream: slow, access: protected, permissions: [notes:read], stream_timeout: 1m}
`})
	e.core.SetProjection(notesProjection())
	tok := e.token(nil)
	for _, kind := range []struct{ name, req string }{
		{"websocket", strings.Replace(wsUpgrade("/ws"), "\r\n\r\n", "\r\nAuthorization: Bearer "+tok+"\r\n\r\n", 1)},
		{"event stream", "GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAuthorization: Bearer " + tok + "\r\n\r\n"},
	} {
		for _, tc := range []struct {
			name   string
			change func(p *identity.Projection)
			status int
			code   string
		}{
			{"user disabled", func(p *identity.Projection) { p.UserStatus = "disabled" }, 401, problem.CodeInvalidToken},
			{"permission removed", func(p *identity.Projection) { p.Permissions = []string{"tenant:read"} }, 403, problem.CodeInsufficientScope},
		} {
			t.Run(kind.name+", "+tc.name, func(t *testing.T) {
				defer func() {
					e.core.SetProjection(notesProjection())
					e.publishAndWait("auth.invalidate.user." + userID)
				}()
				closed, answered := heldRequest(t, e, kind.req, held)
				p := notesProjection()
				tc.change(&p)
				e.core.SetProjection(p)
				e.publish("auth.invalidate.user." + userID)
				e.wantProblem(wantHeldRefused(t, closed, answered), tc.status, tc.code)
				testenv.Eventually(t, func() error { return testenv.Want("open streams", e.app.Streams.Open(), 0) })
			})
		}
	}
}

// TestStreamTokenExpiresDuringItsHandshake: a WebSocket or event stream
// whose access token expires while its upstream has not answered yet is
// refused then (401 invalid_token, as a stream closed for token_expired
// before anything went to its client is), and its upstream connection is
// closed. The expiry was armed only once the upstream had answered: the
// proxy held the upstream connection, and the client, up to the upstream's
// timeout (here 30 s; up to an hour with a route's timeout), then passed
// the answer on and closed the stream at once.
func TestStreamTokenExpiresDuringItsHandshake(t *testing.T) {
	addr, held := heldUpstream(t)
	// A token expires for the proxy at exp plus TOKEN_LEEWAY.
	e := start(t, envOpt{vars: map[string]string{"UPSTREAM_TIMEOUT": "30s", "TOKEN_LEEWAY": "1s"}, rules: `
upstreams:
  slow: {url: "http://` + addr + `", key_id: app-notes}
routes:
  - {prefix: /ws, methods: [GET], upstream: slow, access: protected, permissions: [notes:read], websocket: true}
  - {prefix: /events, methods: [GET], upstream: slow, access: protected, permissions: [notes:read], stream_timeout: 1m}
`})
	e.core.SetProjection(notesProjection())
	for _, kind := range []struct{ name, req string }{
		{"websocket", wsUpgrade("/ws")},
		{"event stream", "GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"},
	} {
		t.Run(kind.name, func(t *testing.T) {
			// Expires within 3 s (the leeway's second included), well
			// before the upstream's timeout.
			short := e.token(func(c testenv.Claims) { c["exp"] = time.Now().Add(2 * time.Second).Unix() })
			req := strings.Replace(kind.req, "\r\n\r\n", "\r\nAuthorization: Bearer "+short+"\r\n\r\n", 1)
			closed, answered := heldRequest(t, e, req, held)
			e.wantProblem(wantHeldRefused(t, closed, answered), 401, problem.CodeInvalidToken)
			testenv.Eventually(t, func() error { return testenv.Want("open streams", e.app.Streams.Open(), 0) })
			if n := metricCount(t, e, `authproxy_streams_closed_total{kind="`+map[string]string{"websocket": "websocket", "event stream": "sse"}[kind.name]+`",reason="token_expired"}`); n != 1 {
				t.Fatalf("closed for token_expired = %v, want 1", n)
			}
		})
	}
}
