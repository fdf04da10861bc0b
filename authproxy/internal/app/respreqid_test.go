package app

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// An app that answers with X-Request-Id fields of its own (one, two, in
// lower case) does not change the request id the client gets: the client
// receives exactly one X-Request-Id, the proxy's, the one both services
// logged and the app received. Stream routes too. (The client's id is the
// proxy's here as it comes through a trusted peer.)
func TestUpstreamRequestIDAnswerIsTheProxys(t *testing.T) {
	t.Parallel()
	url := cannedUpstream(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Request-Id: app-1\r\nx-request-id: app-2\r\nX-App: kept\r\n\r\nok")
	e := start(t, envOpt{vars: map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"}, rules: "upstreams:\n  notes:\n    url: " + url + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /events, upstream: notes, access: public, stream_timeout: 10s}\n" +
		"  - {prefix: /, upstream: notes, access: public}\n"})
	for _, path := range []string{"/x", "/events"} {
		t.Run(path, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+e.addr+path, nil)
			req.Header.Set("X-Request-Id", "client-req-1")
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "ok" || resp.Header.Get("X-App") != "kept" {
				t.Fatalf("status %d, body %q, X-App %q", resp.StatusCode, body, resp.Header.Get("X-App"))
			}
			if ids := resp.Header.Values("X-Request-Id"); len(ids) != 1 || ids[0] != "client-req-1" {
				t.Fatalf("X-Request-Id %q, want exactly the proxy's [client-req-1]", ids)
			}
		})
	}
}

// The same for an app's 101 to a WebSocket upgrade (a trusted peer's id).
func TestUpstreamRequestIDSwitchingProtocolsIsTheProxys(t *testing.T) {
	t.Parallel()
	url := cannedUpstream(t, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nX-Request-Id: app-1\r\nX-Request-Id: app-2\r\n\r\n")
	e := start(t, envOpt{vars: map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"}, rules: "upstreams:\n  notes:\n    url: " + url + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /ws, upstream: notes, access: public, websocket: true}\n"})
	conn, br := dialProxy(t, e.addr)
	if _, err := io.WriteString(conn, strings.Replace(wsUpgrade("/ws"), "\r\n", "\r\nX-Request-Id: client-req-1\r\n", 1)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	if ids := resp.Header.Values("X-Request-Id"); len(ids) != 1 || ids[0] != "client-req-1" {
		t.Fatalf("X-Request-Id %q, want exactly the proxy's [client-req-1]", ids)
	}
}

// The '_' spellings of the fields the proxy removes from an answer (its
// own X-Request-Id set in their place, coreapi's X-Auth-Invalidated, the
// hop-by-hop and diagnostic fields) are removed too, in any case: an
// app's X_Request_Id reached the client beside the proxy's X-Request-Id,
// under the name a CGI-style reader (a front proxy, a client library)
// files both as, and an app's X_Auth_Invalidated passed for coreapi's
// before a proxy in front. Stream routes too. (The client's id is the
// proxy's here as it comes through a trusted peer.)
func TestUpstreamUnderscoreSpellingsAnswerRemoved(t *testing.T) {
	t.Parallel()
	url := cannedUpstream(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX_Request_Id: app-1\r\nx_request_id: app-2\r\n"+
		"X-Request_Id: app-3\r\nX_Auth_Invalidated: auth.invalidate.all\r\nx_auth-invalidated: auth.invalidate.all\r\n"+
		"Server_Timing: db;dur=53\r\nKeep_Alive: timeout=5\r\nX_App: kept\r\n\r\nok")
	e := start(t, envOpt{vars: map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"}, rules: "upstreams:\n  notes:\n    url: " + url + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /events, upstream: notes, access: public, stream_timeout: 10s}\n" +
		"  - {prefix: /, upstream: notes, access: public}\n"})
	for _, path := range []string{"/x", "/events"} {
		t.Run(path, func(t *testing.T) {
			conn, br := dialProxy(t, e.addr)
			if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: x\r\nX-Request-Id: client-req-1\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "ok" || resp.Header.Get("X_App") != "kept" {
				t.Fatalf("status %d, body %q, X_App %q", resp.StatusCode, body, resp.Header.Get("X_App"))
			}
			var ids []string
			for k, v := range resp.Header {
				switch strings.ToLower(strings.ReplaceAll(k, "_", "-")) {
				case "x-request-id":
					for _, id := range v {
						ids = append(ids, k+": "+id)
					}
				case "x-auth-invalidated", "server-timing", "keep-alive":
					t.Errorf("%s: %v reached the client", k, v)
				}
			}
			if len(ids) != 1 || ids[0] != "X-Request-Id: client-req-1" {
				t.Errorf("request ids %q, want exactly the proxy's [X-Request-Id: client-req-1]", ids)
			}
		})
	}
}

// identityAnswer is an app's answer that echoes the identity fields the
// proxy signed for it (a debugging handler, a framework copying request
// fields onto its answer), in several spellings, with an end-to-end field
// beside them.
const identityAnswer = "X-Auth-User-Id: " + userID + "\r\nX-Auth-Key-Id: app-notes\r\n" +
	"X-Auth-Signature: v2=MSXL_wxmJWaPVxaJ0oqGhJspaaZgLqCCwEnF3ZnNow8\r\nx-auth-roles: owner\r\n" +
	"X_Auth_Principal: user\r\nX-AUTH-CLIENT-IP: 203.0.113.7\r\nX-Authorization-Note: kept\r\nX-App: kept\r\n"

// An app's answer that carries X-Auth-* fields (in any spelling: any case,
// '_' for '-') reaches the client without them, on forwarded routes, stream
// routes, in a WebSocket's 101 and in an upstream's refusal of the upgrade
// alike: they are the proxy's word to the
// app about the request, signed with the app's key (its key id, the
// signature over the request, the client IP it settled on, the caller's
// roles and address), never the client's to read or to hand on to a hop
// in front that reads X-Auth-* as an identity. They reached the client as
// the app echoed them; only X-Auth-Invalidated was removed. Other fields
// pass, X-Authorization-Note among them (no X-Auth- prefix).
func TestUpstreamIdentityAnswerFieldsRemoved(t *testing.T) {
	t.Parallel()
	url := scriptedUpstream(t, func(path string) string {
		switch path {
		case "/ws":
			return "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
				"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" + identityAnswer + "\r\n"
		case "/ws/refused":
			return "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n" + identityAnswer + "\r\nno"
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + identityAnswer + "\r\nok"
	})
	e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: " + url + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /events, upstream: notes, access: public, stream_timeout: 10s}\n" +
		"  - {prefix: /ws, upstream: notes, access: public, websocket: true}\n" +
		"  - {prefix: /, upstream: notes, access: public}\n"})
	for _, tc := range []struct{ path, req string }{
		{"/x", "GET /x HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"/events", "GET /events HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"/ws", wsUpgrade("/ws")},
		{"/ws/refused", wsUpgrade("/ws/refused")},
	} {
		t.Run(tc.path, func(t *testing.T) {
			conn, br := dialProxy(t, e.addr)
			if _, err := io.WriteString(conn, tc.req); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			switch tc.path {
			case "/ws":
				if resp.StatusCode != 101 {
					t.Fatalf("status %d, want 101", resp.StatusCode)
				}
			case "/ws/refused":
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 403 || string(body) != "no" {
					t.Fatalf("status %d, body %q, want the upstream's 403", resp.StatusCode, body)
				}
			default:
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != "ok" {
					t.Fatalf("status %d, body %q", resp.StatusCode, body)
				}
			}
			for k, v := range resp.Header {
				if strings.HasPrefix(strings.ToLower(strings.ReplaceAll(k, "_", "-")), "x-auth-") {
					t.Errorf("%s: %v reached the client", k, v)
				}
			}
			if resp.Header.Get("X-App") != "kept" || resp.Header.Get("X-Authorization-Note") != "kept" {
				t.Errorf("X-App %q, X-Authorization-Note %q, want the app's other fields kept",
					resp.Header.Get("X-App"), resp.Header.Get("X-Authorization-Note"))
			}
		})
	}
}
