package app

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// ipRoutes add to startStreams' routes an optional WebSocket route and a
// public event stream.
const ipRoutes = "  - {prefix: /notes/ws-optional, methods: [GET], upstream: notes, access: optional, websocket: true}\n" +
	"  - {prefix: /notes/open-events, methods: [GET], upstream: notes, access: public, stream_timeout: 60s}\n"

func startIPStreams(t *testing.T, vars map[string]string) (*env, *streamApp) {
	t.Helper()
	a := newStreamApp(t)
	e := start(t, envOpt{rules: a.rules(ipRoutes), vars: vars})
	e.core.SetProjection(notesProjection())
	return e, a
}

// localDialer dials from the local address from ("": the system's choice;
// every address of 127.0.0.0/8 is the loopback's).
func localDialer(from string) *net.Dialer {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	return d
}

// wsFrom opens a WebSocket to path from the local address from, closed at
// the test's end.
func (e *env) wsFrom(t *testing.T, from, path string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDialContext: localDialer(from).DialContext}
	c, resp, err := d.Dial("ws://"+e.addr+path, hdr)
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, resp, err
}

// openWSFrom is wsFrom that must succeed.
func (e *env) openWSFrom(t *testing.T, from, path string, hdr http.Header) *websocket.Conn {
	t.Helper()
	c, resp, err := e.wsFrom(t, from, path, hdr)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("WebSocket %s from %q: %v (status %d)", path, from, err, status)
	}
	return c
}

// anonSSE opens an event stream to path without a credential from the
// local address from and returns its answer, whose body is closed at the
// test's end.
func (e *env) anonSSE(t *testing.T, from, path string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+e.addr+path, nil)
	req.Header.Set("Accept", "text/event-stream")
	tr := &http.Transport{DisableCompression: true, DialContext: localDialer(from).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// wantIPRefused: a WebSocket upgrade of path from the local address from
// with the headers hdr is refused as the per-user cap refuses: 429
// too_many_requests, problem+json with the request's id, Retry-After.
func wantIPRefused(t *testing.T, e *env, from, path string, hdr http.Header) {
	t.Helper()
	_, resp, err := e.wsFrom(t, from, path, hdr)
	if err == nil {
		t.Fatalf("WebSocket %s from %s %v opened, want 429", path, from, hdr)
	}
	if resp == nil {
		t.Fatalf("WebSocket %s: %v, want a 429 answer", path, err)
	}
	body, _ := io.ReadAll(resp.Body)
	var p problem.Problem
	if resp.StatusCode != 429 || resp.Header.Get("Content-Type") != problem.ContentType || json.Unmarshal(body, &p) != nil {
		t.Fatalf("WebSocket %s: %d %q %s, want 429 problem+json", path, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if p.Code != problem.CodeTooManyRequests || p.Detail != "too many open streams from this address" ||
		p.RequestID == "" || p.RequestID != resp.Header.Get("X-Request-Id") || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("refusal %+v, Retry-After %q", p, resp.Header.Get("Retry-After"))
	}
}

// STREAM_MAX_PER_IP caps the anonymous streams (WebSockets and event
// streams, on public and optional routes) of one client address: the
// next is refused 429 like the per-user cap's, another address still
// gets one, a closed stream frees its slot, and streams with a principal
// are not counted.
func TestStreamLimitPerIP(t *testing.T) {
	e, _ := startIPStreams(t, map[string]string{"STREAM_MAX_PER_IP": "3", "STREAM_MAX_PER_USER": "1"})
	if n := refusedStreams(t, e, "ip_limit"); n != 0 {
		t.Fatalf("refused ip_limit before any refusal = %v, want 0", n)
	}
	first := e.openWSFrom(t, "127.0.0.1", "/notes/open-ws", nil)
	echo(t, first, "x")
	e.openWSFrom(t, "127.0.0.1", "/notes/ws-optional", nil)
	if resp := e.anonSSE(t, "127.0.0.1", "/notes/open-events"); resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("anonymous event stream = %d %s", resp.StatusCode, b)
	}
	wantIPRefused(t, e, "127.0.0.1", "/notes/open-ws", nil)
	wantIPRefused(t, e, "127.0.0.1", "/notes/ws-optional", nil)
	if resp := e.anonSSE(t, "127.0.0.1", "/notes/open-events"); resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("fourth anonymous stream (an event stream) = %d, Retry-After %q; want 429", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if n := refusedStreams(t, e, "ip_limit"); n != 3 {
		t.Fatalf("refused ip_limit = %v, want 3", n)
	}

	// Another address has its own budget.
	for range 3 {
		e.openWSFrom(t, "127.0.0.2", "/notes/open-ws", nil)
	}
	if _, resp, err := e.wsFrom(t, "127.0.0.2", "/notes/open-ws", nil); err == nil || resp.StatusCode != 429 {
		t.Fatalf("fourth from 127.0.0.2 = %v; want 429", err)
	}

	// A stream with a principal is held to the per-user cap, not to its
	// address's.
	echo(t, e.openWSFrom(t, "127.0.0.1", "/notes/ws-optional", bearer(e.token(nil))), "signed in")
	if _, resp, err := e.wsFrom(t, "127.0.0.1", "/notes/ws", bearer(e.token(nil))); err == nil || resp.StatusCode != 429 {
		t.Fatalf("second stream of one user = %v; want the per-user cap's 429", err)
	}
	if n := refusedStreams(t, e, "user_limit"); n != 1 {
		t.Fatalf("refused user_limit = %v, want 1", n)
	}

	// A closed stream frees its slot, once.
	open := e.app.Streams.Open()
	first.Close()
	testenv.Eventually(t, func() error { return testenv.Want("open streams", e.app.Streams.Open(), open-1) })
	echo(t, e.openWSFrom(t, "127.0.0.1", "/notes/open-ws", nil), "y")
	wantIPRefused(t, e, "127.0.0.1", "/notes/open-ws", nil)
}

// The default cap is 100 anonymous streams per address; 0 turns it off.
func TestStreamLimitPerIPDefaultAndOff(t *testing.T) {
	for _, tt := range []struct {
		name string
		vars map[string]string
		cap  bool
	}{{"default 100", nil, true}, {"0: no cap", map[string]string{"STREAM_MAX_PER_IP": "0"}, false}} {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := startIPStreams(t, tt.vars)
			for range 100 {
				e.openWSFrom(t, "127.0.0.1", "/notes/open-ws", nil)
			}
			if tt.cap {
				wantIPRefused(t, e, "127.0.0.1", "/notes/open-ws", nil)
				return
			}
			c := e.openWSFrom(t, "127.0.0.1", "/notes/open-ws", nil)
			echo(t, c, "101")
			if n := refusedStreams(t, e, "ip_limit"); n != 0 {
				t.Fatalf("refused ip_limit = %v without a cap", n)
			}
		})
	}
}

// Behind a trusted proxy, the client counted is the one the proxy signs
// as X-Auth-Client-Ip: the X-Forwarded-For client, not the ingress; from
// an untrusted peer X-Forwarded-For changes nothing (a client cannot
// choose a fresh address for each stream).
func TestStreamLimitPerIPForwardedClient(t *testing.T) {
	xff := func(v string) http.Header { return http.Header{"X-Forwarded-For": {v}} }
	t.Run("trusted ingress", func(t *testing.T) {
		e, a := startIPStreams(t, map[string]string{"STREAM_MAX_PER_IP": "2", "TRUSTED_PROXY_CIDRS": "127.0.0.0/8"})
		// A trusted hop after the client is passed over, as for the
		// signed address.
		echo(t, e.openWSFrom(t, "127.0.0.1", "/notes/open-ws", xff("203.0.113.7, 127.0.0.9")), "a")
		if got := a.last(t); got.verifyErr != nil || got.header.Get("X-Auth-Client-Ip") != "203.0.113.7" {
			t.Fatalf("app saw X-Auth-Client-Ip %q (%v)", got.header.Get("X-Auth-Client-Ip"), got.verifyErr)
		}
		e.openWSFrom(t, "127.0.0.2", "/notes/open-ws", xff("203.0.113.7"))
		wantIPRefused(t, e, "127.0.0.3", "/notes/open-ws", xff("203.0.113.7"))
		// Other clients behind the same ingress are not refused.
		for _, ip := range []string{"203.0.113.8", "198.51.100.1"} {
			echo(t, e.openWSFrom(t, "127.0.0.1", "/notes/open-ws", xff(ip)), ip)
		}
		// An IPv6 client counts by its /64.
		e.openWSFrom(t, "127.0.0.1", "/notes/open-ws", xff("2001:db8:1:2::1"))
		e.openWSFrom(t, "127.0.0.1", "/notes/open-ws", xff("2001:db8:1:2::2"))
		wantIPRefused(t, e, "127.0.0.1", "/notes/open-ws", xff("2001:db8:1:2::3"))
		e.openWSFrom(t, "127.0.0.1", "/notes/open-ws", xff("2001:db8:1:3::1"))
	})
	t.Run("untrusted peer", func(t *testing.T) {
		e, _ := startIPStreams(t, map[string]string{"STREAM_MAX_PER_IP": "2", "TRUSTED_PROXY_CIDRS": "10.0.0.0/8"})
		e.openWSFrom(t, "127.0.0.1", "/notes/open-ws", xff("203.0.113.7"))
		e.openWSFrom(t, "127.0.0.1", "/notes/open-ws", xff("203.0.113.8"))
		wantIPRefused(t, e, "127.0.0.1", "/notes/open-ws", xff("203.0.113.9"))
	})
}
