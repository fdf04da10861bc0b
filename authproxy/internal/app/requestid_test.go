package app

import (
	"strings"
	"testing"
)

// TestRequestIDFromUntrustedPeerReplaced: the request id is the one the
// services log, audit rows record and the signature binds, so a peer
// outside TRUSTED_PROXY_CIDRS does not choose it (it could give its
// requests another client's id, and have them logged and audited as that
// client's): its X-Request-Id is replaced by one the proxy makes, which
// the client gets back and the upstream receives, and its own value is
// logged apart as client_request_id (cut to 128 bytes, escaped). From a
// trusted peer (an ingress that set the id), a well-formed id is kept.
// Both access log writers (buffered lines and slog) are checked.
func TestRequestIDFromUntrustedPeerReplaced(t *testing.T) {
	t.Parallel()
	for _, slogAccess := range []bool{false, true} {
		name := map[bool]string{false: "lines", true: "slog"}[slogAccess]
		t.Run(name+"/untrusted", func(t *testing.T) {
			e := start(t, envOpt{vars: map[string]string{"ACCESS_LOG": "true"}, slogAccess: slogAccess})
			long := "victim-" + strings.Repeat("x", 200)
			for _, sent := range []string{"victim-req-1", "bad id\"<>{\u00e9", long} {
				r := e.do("GET", "/api/v1/users/me", e.token(nil), map[string]string{"X-Request-Id": sent})
				e.wantStatus(r, 200)
				got := r.header.Get("X-Request-Id")
				if got == "" || got == sent || strings.HasPrefix(got, "victim") || strings.ContainsAny(got, " \"<>\n{") {
					t.Fatalf("sent %q: answered with X-Request-Id %q, want one the proxy made", sent, got)
				}
				if up := e.core.Last(t).Headers["X-Request-Id"]; len(up) != 1 || up[0] != got {
					t.Fatalf("sent %q: upstream got X-Request-Id %q, want [%s]", sent, up, got)
				}
				line := accessLineOf(t, e, got)
				want := sent[:min(len(sent), 128)]
				if line["client_request_id"] != want {
					t.Fatalf("sent %q: access line client_request_id = %q, want %q", sent, line["client_request_id"], want)
				}
			}
			// Without one, the field is left out.
			r := e.do("GET", "/api/v1/users/me", e.token(nil), nil)
			if line := accessLineOf(t, e, r.header.Get("X-Request-Id")); line["client_request_id"] != nil {
				t.Fatalf("client_request_id logged for a request without X-Request-Id: %v", line)
			}
		})
		t.Run(name+"/trusted", func(t *testing.T) {
			e := start(t, envOpt{vars: map[string]string{"ACCESS_LOG": "true", "TRUSTED_PROXY_CIDRS": "127.0.0.0/8"}, slogAccess: slogAccess})
			r := e.do("GET", "/api/v1/users/me", e.token(nil), map[string]string{"X-Request-Id": "ingress-req-1"})
			e.wantStatus(r, 200)
			if got := r.header.Get("X-Request-Id"); got != "ingress-req-1" || e.core.Last(t).Headers["X-Request-Id"][0] != "ingress-req-1" {
				t.Fatalf("trusted peer's request id not kept: answered %q", got)
			}
			if line := accessLineOf(t, e, "ingress-req-1"); line["client_request_id"] != nil {
				t.Fatalf("client_request_id logged for an adopted id: %v", line)
			}
			// Malformed from a trusted peer too: replaced, and logged apart.
			r = e.do("GET", "/api/v1/users/me", e.token(nil), map[string]string{"X-Request-Id": "bad id"})
			got := r.header.Get("X-Request-Id")
			if got == "bad id" || got == "" {
				t.Fatalf("malformed id kept: %q", got)
			}
			if line := accessLineOf(t, e, got); line["client_request_id"] != "bad id" {
				t.Fatalf("client_request_id = %v, want the malformed id", line["client_request_id"])
			}
		})
	}
}
