package app

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
)

// xffWarnings are the log lines warning about an untrusted X-Forwarded-For.
func xffWarnings(e *env) []string {
	var out []string
	for _, line := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(line, `"level":"WARN"`) && strings.Contains(line, "X-Forwarded-For from a peer outside TRUSTED_PROXY_CIDRS") {
			out = append(out, line)
		}
	}
	return out
}

// A request carrying X-Forwarded-For from a peer outside
// TRUSTED_PROXY_CIDRS is counted every time and warned about the first
// time, then at most once a minute; the warning names the peer and the
// setting. Requests without the header, and from trusted peers, are not.
func TestUntrustedForwardedForWarned(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"TRUSTED_PROXY_CIDRS": "10.0.0.0/8"}})
	const counter = "authproxy_untrusted_forwarded_for_total"
	tok := e.token(nil)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	if n := metricCount(t, e, counter); n != 0 {
		t.Fatalf("%s = %v after a request without X-Forwarded-For, want 0", counter, n)
	}
	if w := xffWarnings(e); len(w) != 0 {
		t.Fatalf("warned without X-Forwarded-For: %v", w)
	}

	xff := map[string]string{"X-Forwarded-For": "203.0.113.7"}
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, xff), 200)
	w := xffWarnings(e)
	if len(w) != 1 {
		t.Fatalf("%d warnings after the first request with X-Forwarded-For, want 1:\n%s", len(w), e.logs)
	}
	if !strings.Contains(w[0], `"peer":"127.0.0.1"`) || !strings.Contains(w[0], "set TRUSTED_PROXY_CIDRS") {
		t.Fatalf("the warning names neither the peer nor the setting: %s", w[0])
	}
	// The header was not believed: the client IP is the peer.
	if got := e.core.Last(t).Headers["X-Auth-Client-Ip"]; len(got) != 1 || got[0] != "127.0.0.1" {
		t.Fatalf("X-Auth-Client-Ip = %v, want the peer 127.0.0.1", got)
	}

	// Within the minute: counted, not warned again (the public route and
	// the lower-case spelling included).
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, xff), 200)
	e.wantStatus(e.do("POST", "/api/v1/auth/token", "", map[string]string{"x-forwarded-for": "198.51.100.1"}), 200)
	e.clock.Advance(59 * time.Second)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, xff), 200)
	if w := xffWarnings(e); len(w) != 1 {
		t.Fatalf("%d warnings within a minute, want 1", len(w))
	}
	if n := metricCount(t, e, counter); n != 4 {
		t.Fatalf("%s = %v, want 4", counter, n)
	}
	// A minute after the first warning: one more.
	e.clock.Advance(2 * time.Second)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, xff), 200)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, xff), 200)
	if w := xffWarnings(e); len(w) != 2 {
		t.Fatalf("%d warnings a minute later, want 2", len(w))
	}
	// Requests without the header change nothing.
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	if n := metricCount(t, e, counter); n != 6 {
		t.Fatalf("%s = %v, want 6", counter, n)
	}
}

func TestTrustedForwardedForNotWarned(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"}})
	tok := e.token(nil)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, map[string]string{"X-Forwarded-For": "203.0.113.7"}), 200)
	if got := e.core.Last(t).Headers["X-Auth-Client-Ip"]; len(got) != 1 || got[0] != "203.0.113.7" {
		t.Fatalf("X-Auth-Client-Ip = %v, want the forwarded client", got)
	}
	if w := xffWarnings(e); len(w) != 0 {
		t.Fatalf("warned about a trusted peer: %v", w)
	}
	if n := metricCount(t, e, "authproxy_untrusted_forwarded_for_total"); n != 0 {
		t.Fatalf("counted a trusted peer: %v", n)
	}
}

// The client IP of each request is its own, whatever the requests before
// it came from (the proxy keeps the text of the last address it wrote).
func TestClientIPEachRequest(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"}})
	tok := e.token(nil)
	for _, tc := range []struct{ xff, want string }{
		{"203.0.113.7", "203.0.113.7"},
		{"203.0.113.7", "203.0.113.7"},
		{"", "127.0.0.1"},
		{"198.51.100.9", "198.51.100.9"},
		{"2001:db8::1", "2001:db8::1"},
		{"", "127.0.0.1"},
		{"::ffff:203.0.113.8", "203.0.113.8"},
		{"203.0.113.7", "203.0.113.7"},
		// A hop with its port, as some balancers write it: the client
		// is its address, not the balancer behind it.
		{"203.0.113.20:51234", "203.0.113.20"},
		{"[2001:db8::2]:443", "2001:db8::2"},
		{"6.6.6.6, 203.0.113.21:4000", "203.0.113.21"},
		{"203.0.113.22, 127.0.0.5:8080", "203.0.113.22"},
		{"not-an-address, 203.0.113.23", "203.0.113.23"},
		{"203.0.113.24, not-an-address", "127.0.0.1"},
	} {
		var hdr map[string]string
		if tc.xff != "" {
			hdr = map[string]string{"X-Forwarded-For": tc.xff}
		}
		e.wantStatus(e.do("GET", "/api/v1/users/me", tok, hdr), 200)
		if got := e.core.Last(t).Headers["X-Auth-Client-Ip"]; len(got) != 1 || got[0] != tc.want {
			t.Fatalf("X-Forwarded-For %q: X-Auth-Client-Ip = %v, want %s", tc.xff, got, tc.want)
		}
	}
}

// TestTrustedForwardedForLines: behind a trusted peer, X-Forwarded-For
// sent as several lines (a hop that adds its own line rather than extend
// the client's, as HAProxy's option forwardfor does; RFC 9110 5.3) is one
// list: the client IP is the rightmost untrusted hop of all the lines, not
// of the client's first line, and the upstream gets one line with every
// hop and the peer.
func TestTrustedForwardedForLines(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"}})
	tok := e.token(nil)
	r := e.raw("GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok +
		"\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n")
	e.wantStatus(r, 200)
	got := e.wantSigned()
	if ip := got.Headers["X-Auth-Client-Ip"]; len(ip) != 1 || ip[0] != "203.0.113.7" {
		t.Fatalf("X-Auth-Client-Ip = %v, want 203.0.113.7 (the hop the trusted peer added; the client chose 6.6.6.6)", ip)
	}
	if xff := got.Headers["X-Forwarded-For"]; len(xff) != 1 || xff[0] != "6.6.6.6, 203.0.113.7, 127.0.0.1" {
		t.Fatalf("upstream X-Forwarded-For = %q, want one line with every hop and the peer", xff)
	}
	// An empty line names no hop: the list is the others and the peer.
	r = e.raw("GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok +
		"\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: \r\nConnection: close\r\n\r\n")
	e.wantStatus(r, 200)
	got = e.wantSigned()
	if xff := got.Headers["X-Forwarded-For"]; len(xff) != 1 || xff[0] != "203.0.113.9, 127.0.0.1" {
		t.Fatalf("upstream X-Forwarded-For = %q after an empty line, want \"203.0.113.9, 127.0.0.1\"", xff)
	}
	if ip := got.Headers["X-Auth-Client-Ip"]; len(ip) != 1 || ip[0] != "203.0.113.9" {
		t.Fatalf("X-Auth-Client-Ip = %v after an empty line, want 203.0.113.9", ip)
	}
}

// TestClientAddressHeadersOnlyFromTrustedPeers: the headers in which
// proxies and CDNs pass a client's address besides X-Forwarded-For
// (X-Real-IP, True-Client-IP, CF-Connecting-IP...) reach the upstream only
// from a peer in TRUSTED_PROXY_CIDRS: from any other they are the client's
// own claim, and an app that reads one of them first would take it for
// the client's address. Spelled with '_' (X_Cluster_Client_IP), they reach
// it from no peer (TestUnderscoreSpellingsRemovedFromEveryPeer).
func TestClientAddressHeadersOnlyFromTrustedPeers(t *testing.T) {
	t.Parallel()
	sent := map[string]string{"X-Real-IP": "10.9.9.9", "True-Client-IP": "10.9.9.9", "CF-Connecting-IP": "10.9.9.9",
		"X-Client-IP": "10.9.9.9", "Fastly-Client-IP": "10.9.9.9", "X_Cluster_Client_IP": "10.9.9.9", "Client-IP": "10.9.9.9",
		"X-Forwarded": "10.9.9.9", "Forwarded-For": "10.9.9.9", "Via": "10.9.9.9", "X-Envoy-External-Address": "10.9.9.9",
		"X-Envoy-Internal": "true", "X-Original-Forwarded-For": "10.9.9.9", "X-Appengine-User-Ip": "10.9.9.9",
		"Fly-Client-IP": "10.9.9.9", "Do-Connecting-Ip": "10.9.9.9", "Cf-Pseudo-IPv4": "10.9.9.9", "X-Azure-ClientIP": "10.9.9.9",
		"X_Azure_SocketIP": "10.9.9.9", "Proxy-Client-IP": "10.9.9.9", "WL-Proxy-Client-IP": "10.9.9.9", "X-ProxyUser-Ip": "10.9.9.9",
		"X-Original-For": "10.9.9.9"}
	for _, trusted := range []bool{false, true} {
		t.Run(fmt.Sprintf("trusted=%v", trusted), func(t *testing.T) {
			vars := map[string]string{}
			if trusted {
				vars["TRUSTED_PROXY_CIDRS"] = "127.0.0.0/8"
			}
			e := start(t, envOpt{vars: vars})
			tok := e.token(nil)
			for _, route := range []string{"", "public"} { // a warm token, and a public route
				r := e.do("GET", "/api/v1/users/me", tok, sent)
				if route == "public" {
					r = e.do("GET", "/.well-known/jwks.json", "", sent)
				}
				e.wantStatus(r, 200)
				got := e.core.Last(t).Headers
				norm := func(k string) string { return strings.ToLower(strings.ReplaceAll(k, "_", "-")) }
				for name := range sent {
					ok := false
					for k := range got {
						ok = ok || norm(k) == norm(name)
					}
					if want := trusted && !strings.Contains(name, "_"); ok != want {
						t.Errorf("%s %s: reached the upstream %v, want %v", route, name, ok, want)
					}
				}
				if ip := got["X-Auth-Client-Ip"]; len(ip) != 1 || ip[0] != "127.0.0.1" {
					t.Errorf("%s: X-Auth-Client-Ip = %v, want the peer", route, ip)
				}
			}
		})
	}
}

// TestHostOverrideFieldsOnlyFromTrustedPeers: the fields besides
// X-Forwarded-Host in which frameworks and apps read the request's host
// (X-Host, X-Original-Host, X-HTTP-Host-Override; X-Forwarded-Server
// among the X-Forwarded-* ones) reach the app only from a peer in
// TRUSTED_PROXY_CIDRS: from any other they are the client's word, and an
// app that builds links, redirects or password-reset URLs from one would
// write the client's host into them. Spelled with '_', they reach it from
// no peer (TestUnderscoreSpellingsRemovedFromEveryPeer).
func TestHostOverrideFieldsOnlyFromTrustedPeers(t *testing.T) {
	t.Parallel()
	sent := map[string]string{"X-Host": "evil.example", "x-host": "evil.example", "X-Original-Host": "evil.example",
		"X-HTTP-Host-Override": "evil.example", "x-http-host-override": "evil.example", "X-Forwarded-Server": "evil.example",
		"X_Original_Host": "evil.example", "X_Host": "evil.example"}
	forEachPeer(t, func(t *testing.T, e *env, trusted bool) {
		tok := e.token(nil)
		for name, v := range sent {
			e.onEachRoute(t, tok, name, v, func(route string, got map[string][]string) {
				if want := trusted && !strings.Contains(name, "_"); reached(got, name, v) != want {
					t.Errorf("%s route: %s reached the upstream %v, want %v", route, name, !want, want)
				}
			})
		}
	})
}

// TestClientCertificateFieldsOnlyFromTrustedPeers: the fields in which a
// TLS-terminating front tells an app which certificate the client
// presented (HAProxy's and nginx's X-SSL-Client-*, ingress-nginx's
// ssl-client-*, Azure's X-ARR-ClientCert, the AWS load balancer's
// X-Amzn-Mtls-Clientcert*, Google's X-Client-Cert-*, Cloudflare's
// cf-cert-*, Envoy's X-Forwarded-Client-Cert, RFC 9440's Client-Cert)
// reach the app only from a peer in TRUSTED_PROXY_CIDRS: the proxy
// terminates no client TLS of its own, so from any other peer they are
// the client's word, and an app that authenticates by certificate would
// take "X-SSL-Client-Verify: SUCCESS" with a DN of the client's choosing
// for a verified certificate. Spelled with '_', or as CGI names them,
// they reach it from no peer.
func TestClientCertificateFieldsOnlyFromTrustedPeers(t *testing.T) {
	t.Parallel()
	const sent = "CN=admin,O=client-chosen"
	names := []string{"X-SSL-Client-Verify", "X-SSL-Client-DN", "X-SSL-Client-S-DN", "X-SSL-Client-I-DN", "X-SSL-Client-Cert",
		"X-SSL-Client-Serial", "x-ssl-client-cn", "X-SSL-Cert", "X-Client-Cert", "X-Client-Verify", "X-Client-DN",
		"X-Client-Cert-Present", "X-ARR-ClientCert", "Ssl-Client-Cert", "Ssl-Client-Verify", "ssl-client-subject-dn",
		"X-Forwarded-Client-Cert", "X-Forwarded-Tls-Client-Cert", "X-Amzn-Mtls-Clientcert", "X-Amzn-Mtls-Clientcert-Subject",
		"X-Amzn-Mtls-Clientcert-Leaf", "Client-Cert", "Client-Cert-Chain", "cf-cert-verified", "cf-cert-subject-dn",
		"X_SSL_Client_Verify", "x_client_cert", "Ssl_Client_Verify", "X_ARR_ClientCert", "Client_Cert", "cf_cert_presented",
		"HTTP_X_SSL_CLIENT_VERIFY", "Http-Ssl-Client-Cert", "HTTP_X_ARR_CLIENTCERT"}
	forEachPeer(t, func(t *testing.T, e *env, trusted bool) {
		tok := e.token(nil)
		for _, name := range names {
			e.onEachRoute(t, tok, name, sent, func(route string, got map[string][]string) {
				cgi := strings.HasPrefix(fieldNorm(name), "http-")
				if want := trusted && !strings.Contains(name, "_") && !cgi; reached(got, name, sent) != want {
					t.Errorf("%s route: %s reached the upstream %v, want %v", route, name, !want, want)
				}
			})
		}
	})
}

// X-Script-Name is the base path a proxy in front says it removed: the
// ReverseProxied middleware of Flask recipes, pgAdmin, Calibre-Web and
// Radicale makes it SCRIPT_NAME and cuts it off the path it routes. A
// client's "X-Script-Name: /notes/public" on /notes/public/notes/1,
// which the rules matched under /notes/public (public), had such an app
// route /notes/1 (protected). It is removed from an untrusted peer, as
// X-Forwarded-Prefix is, so the app routes the path the proxy authorized.
func TestScriptNameOnlyFromTrustedPeers(t *testing.T) {
	t.Parallel()
	// The path such an app routes, from what it received.
	routed := func(r testenv.Received) string {
		for k, v := range r.Headers {
			if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), "X-Script-Name") && strings.HasPrefix(r.URI, v[0]) {
				return strings.TrimPrefix(r.URI, v[0])
			}
		}
		return r.URI
	}
	e := start(t, envOpt{rules: notesRules})
	for _, name := range []string{"X-Script-Name", "x-script-name", "X_Script_Name"} {
		e.reset()
		e.wantStatus(e.do("GET", "/notes/public/notes/1", "", map[string]string{name: "/notes/public"}), 200)
		if r := e.wantAnonymousAt(e.up, testenv.AppKey.ID); routed(r) != r.URI {
			t.Errorf("%s: the app routes %q, not %q, which the rules matched", name, routed(r), r.URI)
		}
	}
}

// Each field that only a trusted peer may give (forwarding, client
// address, trace context) is removed from an untrusted peer's request when
// it comes alone, not only beside another of them: the scan that decides
// whether the fields need cleaning at all must know every such name
// (baggage, alone, reached the upstream as the client wrote it).
func TestEachUntrustedFieldRemovedAlone(t *testing.T) {
	t.Parallel()
	const sent = "10.9.9.9-client-chosen"
	names := []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X_Forwarded_Prefix", "Forwarded",
		"X-Real-IP", "True-Client-IP", "CF-Connecting-IP", "X-Client-IP", "X-Remote-IP", "X-Remote-Addr",
		"Fastly-Client-IP", "X-Originating-IP", "X_Cluster_Client_IP", "Client-IP",
		"X-Forwarded", "Forwarded-For", "Forwarded_For", "Via", "VIA",
		"X-Original-Forwarded-For", "X-Appengine-User-Ip", "Fly-Client-IP", "Do-Connecting-Ip", "Cf-Pseudo-IPv4",
		"X-Azure-ClientIP", "x_azure_socketip", "X-Scheme", "x_url_scheme", "Front-End-Https",
		"traceparent", "tracestate", "baggage", "Baggage", "BAGGAGE",
		"X-Envoy-External-Address", "x-envoy-internal", "X-Envoy-Retry-On", "x_envoy_max_retries", "X-Envoy-Upstream-Rq-Timeout-Ms",
		"X-Envoy-Original-Path", "X-Script-Name", "x-script-name", "X-Host", "X-Original-Host", "x-http-host-override",
		"X-Forwarded-Server", "Proxy-Client-IP", "WL-Proxy-Client-IP", "X-ProxyUser-Ip", "X-ARR-SSL", "CloudFront-Forwarded-Proto",
		"CF-Visitor", "X-AppService-Proto", "X-Original-Proto", "x-original-proto", "X-Original-For", "Fastly-SSL", "fastly-ssl",
		"X-SSL", "x_ssl", "X-Url-Scheme", "X-Forwarded-Ssl", "X-Original-Prefix", "x-original-prefix"}
	e := start(t, envOpt{})
	tok := e.token(nil)
	for _, name := range names {
		e.onEachRoute(t, tok, name, sent, func(route string, got map[string][]string) {
			for k, vs := range got {
				if fieldNorm(k) != fieldNorm(name) {
					continue
				}
				for _, v := range vs {
					if strings.Contains(v, sent) {
						t.Errorf("%s route: %s sent alone reached the upstream as %s: %q", route, name, k, v)
					}
				}
			}
		})
	}
}

// TestCGINamesRemovedFromEveryPeer: the request fields the proxy removes
// named as CGI files them (HTTP_X_FORWARDED_FOR, HTTP_CLIENT_IP,
// HTTP_REMOTE_USER: "HTTP_" and the name, '_' for '-') are read by name
// by the Java helpers that look for a client IP
// (request.getHeader("HTTP_X_FORWARDED_FOR") after X-Forwarded-For,
// Proxy-Client-IP and WL-Proxy-Client-IP), by code ported from PHP that
// asks for HTTP_REMOTE_USER or HTTP_X_AUTH_USER_ID the same way, and by
// whatever files a field under its CGI name again. No proxy writes such a
// name: they reach the app from no peer, in either spelling, those of the
// fields removed from every peer (an identity field, another auth layer's
// user, a method or path override, the request id) as those of the
// fields a trusted peer may give.
func TestCGINamesRemovedFromEveryPeer(t *testing.T) {
	t.Parallel()
	names := []string{"HTTP_X_FORWARDED_FOR", "http_client_ip", "Http-X-Forwarded-For", "HTTP-CLIENT-IP", "HTTP_X_REAL_IP",
		"HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PROTO", "Http_X_Host", "HTTP_X_ORIGINAL_PREFIX", "Http-X-Script-Name",
		"HTTP_REMOTE_USER", "Http-Remote-User", "HTTP_X_AUTH_USER_ID", "http-x-auth-roles", "HTTP_X-Auth-Tenant-Id",
		"HTTP_X_FORWARDED_USER", "HTTP_X_REMOTE_USER", "HTTP_X_WEBAUTH_USER", "HTTP_X_MS_CLIENT_PRINCIPAL_NAME",
		"HTTP_X_CONSUMER_ID", "HTTP_X_CONSUMER_USERNAME", "HTTP_CF_ACCESS_AUTHENTICATED_USER_EMAIL",
		"HTTP_X_HTTP_METHOD_OVERRIDE", "Http-X-Method-Override", "HTTP_X_ORIGINAL_URL", "HTTP_X_ORIGINAL_URI",
		"HTTP_X_FORWARDED_URI", "HTTP_X_REQUEST_ID", "HTTP_HTTP_X_AUTH_USER_ID"}
	forEachPeer(t, func(t *testing.T, e *env, _ bool) {
		tok := e.token(nil)
		for _, name := range names {
			e.onEachRoute(t, tok, name, "10.9.9.9", func(route string, got map[string][]string) {
				for k := range got {
					if fieldNorm(k) == fieldNorm(name) {
						t.Errorf("%s route: %s reached the upstream as %s", route, name, k)
					}
				}
			})
		}
	})
}

// TestUnderscoreSpellingsRemovedFromEveryPeer: a field the proxy sets,
// removes or trusts (client-address, scheme, forwarding, trace-context
// and x-envoy-* fields) spelled with '_' for '-' never reaches the app,
// from a trusted peer either: CGI-style servers (WSGI, PHP) file
// X_Real_IP under the same name as X-Real-IP (HTTP_X_REAL_IP), so a
// client's '_' spelling that a trusted load balancer passed on stood
// beside the balancer's dashed field, and an app reading that name could
// take the client's address or scheme for the balancer's word. The
// dashed spellings keep their rule: removed from an untrusted peer, passed
// on from a trusted one.
func TestUnderscoreSpellingsRemovedFromEveryPeer(t *testing.T) {
	t.Parallel()
	underscored := []string{"X_Real_IP", "x_real_ip", "X-Real_IP", "Client_IP", "True_Client_IP", "CF_Connecting_IP",
		"Fastly_Client_IP", "X_Cluster_Client_IP", "Forwarded_For", "X_Original_Forwarded_For", "X_Client_IP",
		"X_Scheme", "X_Url_Scheme", "Front_End_Https", "X_Forwarded_Ssl", "X_Forwarded_Proto",
		"X_B3_TraceId", "uber_trace_id", "X_Amzn_Trace_Id", "X_Cloud_Trace_Context", "sw8_correlation",
		"x_envoy_retry_on", "X_Envoy_Internal", "X_Script_Name", "X_Host", "X_Original_Host", "X_HTTP_Host_Override",
		"WL_Proxy_Client_IP", "Proxy_Client_IP", "x_proxyuser_ip", "X_ARR_SSL", "Cloudfront_Forwarded_Proto", "cf_visitor",
		"X_AppService_Proto", "X_Original_Proto", "X_Original_For", "Fastly_SSL", "X_SSL", "X_Original_Prefix"}
	dashed := []string{"X-Real-IP", "X-Scheme", "X-Forwarded-Ssl", "True-Client-IP", "X-B3-TraceId", "X-Envoy-Internal", "X-Script-Name",
		"X-Host", "X-Original-Host", "X-Http-Host-Override", "X-Arr-Ssl", "Cloudfront-Forwarded-Proto", "Cf-Visitor", "X-Appservice-Proto",
		"X-Original-Proto", "X-Original-For", "Fastly-Ssl", "X-Ssl", "X-Original-Prefix"}
	for _, trusted := range []bool{false, true} {
		t.Run(fmt.Sprintf("trusted %v", trusted), func(t *testing.T) {
			var vars map[string]string
			if trusted {
				vars = map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"}
			}
			e := start(t, envOpt{rules: prefixRules, vars: vars})
			tok := e.token(nil)
			var fields strings.Builder
			for _, name := range underscored {
				fmt.Fprintf(&fields, "%s: client-%s\r\n", name, strings.ToLower(name))
			}
			for _, name := range dashed {
				fmt.Fprintf(&fields, "%s: peer-%s\r\n", name, strings.ToLower(name))
			}
			e.wantStatus(e.raw("GET /notes/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+tok+"\r\n"+fields.String()+
				"Connection: close\r\n\r\n"), 200)
			r := e.up.Last(t)
			for k, v := range r.Headers {
				if strings.Contains(k, "_") {
					t.Errorf("%s: %q reached the app", k, v)
				}
			}
			for _, name := range dashed {
				got := r.Headers[http.CanonicalHeaderKey(name)]
				if kept := len(got) == 1 && got[0] == "peer-"+strings.ToLower(name); kept != trusted {
					t.Errorf("%s: %q reached the app, want it kept %v (its rule for the peer)", name, got, trusted)
				}
			}
			if r.VerifyErr != nil || !r.Signed {
				t.Fatalf("signature %v (signed %v)", r.VerifyErr, r.Signed)
			}
		})
	}
}

// fieldNorm is a field's name as a CGI server files it: lower case, '_'
// for '-'; two names an app may read as one have the same.
func fieldNorm(k string) string { return strings.ToLower(strings.ReplaceAll(k, "_", "-")) }

// forEachPeer runs f on a proxy that trusts the test's peer
// (TRUSTED_PROXY_CIDRS 127.0.0.0/8) and on one that does not.
func forEachPeer(t *testing.T, f func(t *testing.T, e *env, trusted bool)) {
	for _, trusted := range []bool{false, true} {
		t.Run(fmt.Sprintf("trusted=%v", trusted), func(t *testing.T) {
			vars := map[string]string{}
			if trusted {
				vars["TRUSTED_PROXY_CIDRS"] = "127.0.0.0/8"
			}
			f(t, start(t, envOpt{vars: vars}), trusted)
		})
	}
}

// onEachRoute sends the field name: value with a warm token to a
// protected route and without one to a public route, wants each answered
// 200, and calls check with the route and the fields coreapi received.
func (e *env) onEachRoute(t *testing.T, tok, name, value string, check func(route string, got map[string][]string)) {
	t.Helper()
	for _, route := range []string{"protected", "public"} {
		path, bearer := "/api/v1/users/me", tok
		if route == "public" {
			path, bearer = "/.well-known/jwks.json", ""
		}
		e.wantStatus(e.do("GET", path, bearer, map[string]string{name: value}), 200)
		check(route, e.core.Last(t).Headers)
	}
}

// reached reports whether got holds a field named as name (in either
// spelling) with the value v.
func reached(got map[string][]string, name, v string) bool {
	for k, vs := range got {
		if fieldNorm(k) == fieldNorm(name) && slices.Contains(vs, v) {
			return true
		}
	}
	return false
}
