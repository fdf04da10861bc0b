// Package headers cleans the request headers a client sent before anything
// else reads them: hop-by-hop headers and those named in Connection are
// removed, every identity header (identity.IsIdentityHeader) and those
// of other auth layers (Remote-User, X-Forwarded-User, X-Consumer-Id...), every
// method-override and path-override header (X-HTTP-Method-Override,
// X-Original-URL, X-Original-URI, X-Forwarded-Uri...), Expect, the '_'
// spellings of X-Request-Id and of the fields below, and the CGI names of
// all of these and of X-Request-Id (HTTP_REMOTE_USER, HTTP_X_REQUEST_ID,
// HTTP_X_FORWARDED_FOR) are removed, and X-Forwarded-* / Forwarded, the
// other client-address headers (IsClientAddress), the scheme fields
// (IsScheme), the client-certificate fields (IsClientCert:
// X-SSL-Client-Verify, X-ARR-ClientCert, Client-Cert...), the host-override fields (IsHostOverride: X-Host,
// X-Original-Host...), X-Script-Name and X-Original-Prefix (IsScriptName), the trace context (IsTraceContext: W3C's
// traceparent, tracestate and baggage, and other formats' fields) and
// Envoy's x-envoy-* fields (IsEnvoy; but x-envoy-original-path, a path
// override) are kept only from trusted peers. It also parses the bearer
// token strictly, and cleans an upstream's answer of the fields that
// belong to the upstream's connection (SanitizeResponse).
package headers

import (
	"bytes"
	"encoding/binary"
	"errors"
	"unsafe"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/valyala/fasthttp"
)

// hopByHop are the RFC 9110 §7.6.1 connection-specific fields plus the
// legacy ones proxies are expected to drop.
var hopByHop = [...]string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func isHopByHop(name []byte) bool {
	// Most names have no hop-by-hop name of their length: one comparison
	// of lengths each, instead of one call per name.
	switch len(name) {
	case len("Te"), len("Trailer"), len("Connection"), len("Proxy-Connection"), len("Transfer-Encoding"),
		len("Proxy-Authenticate"), len("Proxy-Authorization"):
	default:
		return false
	}
	for _, h := range hopByHop {
		if equalFold(name, h) {
			return true
		}
	}
	return false
}

// isMethodOverride reports whether name is one of the headers with which
// frameworks let a request name another method than its request line's
// (X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override), or another
// path (X-Original-URL, X-Rewrite-URL: older Symfony and Zend Framework
// releases, IIS's URL Rewrite), or in which a proxy in front tells an app
// the path it was asked for before its own rewrite (nginx's
// X-Original-URI for auth_request, Traefik's X-Forwarded-Uri, which
// forward-auth servers such as Authelia read, X-Forwarded-Path,
// X-Original-Path, Envoy's X-Envoy-Original-Path): the proxy authorizes
// and signs the request line's method and path, so an upstream must never
// be told to serve others. From a trusted peer too: the path such a peer
// names is the one before its rewrite, which the proxy's rules never
// matched.
func isMethodOverride(name []byte) bool {
	switch len(name) {
	case len("X-HTTP-Method"): // and X-Rewrite-URL
		return equalFold(name, "x-http-method") || equalFold(name, "x-rewrite-url")
	case len("X-Original-URL"): // and X-Original-URI
		return equalFold(name, "x-original-url") || equalFold(name, "x-original-uri")
	case len("X-Forwarded-Uri"): // and X-Original-Path
		return equalFold(name, "x-forwarded-uri") || equalFold(name, "x-original-path")
	case len("X-Forwarded-Path"):
		return equalFold(name, "x-forwarded-path")
	case len("X-Method-Override"):
		return equalFold(name, "x-method-override")
	case len("X-Envoy-Original-Path"):
		return equalFold(name, "x-envoy-original-path")
	case len("X-HTTP-Method-Override"):
		return equalFold(name, "x-http-method-override")
	}
	return false
}

// IsTraceContext reports whether name carries trace context or baggage: the
// W3C traceparent, tracestate and baggage, and the fields of the other
// propagation formats an app's tracer may read (B3, Jaeger, OpenTracing,
// AWS X-Ray, Google Cloud, Datadog, Elastic APM, New Relic, SkyWalking,
// Instana, Dynatrace, Sentry), with those that force a trace to be recorded
// (jaeger-debug-id, X-Instana-L, Envoy's x-envoy-force-trace and
// x-client-trace-id). A client outside TRUSTED_PROXY_CIDRS may not choose
// the trace (and so the trace id every service logs) its request joins,
// nor make every request it sends recorded, nor hand an app telemetry
// context (OpenTelemetry's default propagators carry W3C Baggage beside
// the trace, Jaeger's uberctx-* and OpenTracing's ot-baggage-* are the
// same: an app would take their entries, e.g. a tenant or user id, as its
// caller's, and SDKs copy them onto spans and logs). The proxy sends the
// W3C trace context only; an app whose tracer reads another format first
// (a composite propagator lets the last format found win) would otherwise
// take the client's.
func IsTraceContext(name []byte) bool {
	if len(name) < len("b3") {
		return false
	}
	var exact bool
	switch len(name) {
	case len("b3"):
		exact = equalFold(name, "b3")
	case len("sw8"):
		exact = equalFold(name, "sw8")
	case len("sw8-x"):
		exact = equalFold(name, "sw8-x")
	case len("newrelic"):
		exact = equalFold(name, "newrelic")
	case len("baggage"):
		exact = equalFold(name, "baggage")
	case len("tracestate"):
		exact = equalFold(name, "tracestate")
	case len("traceparent"): // and x-dynatrace
		exact = equalFold(name, "traceparent") || equalFold(name, "x-dynatrace")
	case len("sentry-trace"):
		exact = equalFold(name, "sentry-trace")
	case len("uber-trace-id"):
		exact = equalFold(name, "uber-trace-id")
	case len("grpc-trace-bin"): // and jaeger-baggage
		exact = equalFold(name, "grpc-trace-bin") || equalFold(name, "jaeger-baggage")
	case len("jaeger-debug-id"): // and x-amzn-trace-id, sw8-correlation
		exact = equalFold(name, "jaeger-debug-id") || equalFold(name, "x-amzn-trace-id") || equalFold(name, "sw8-correlation")
	case len("x-client-trace-id"):
		exact = equalFold(name, "x-client-trace-id")
	case len("x-envoy-force-trace"):
		exact = equalFold(name, "x-envoy-force-trace")
	case len("x-cloud-trace-context"):
		exact = equalFold(name, "x-cloud-trace-context")
	case len("elastic-apm-traceparent"):
		exact = equalFold(name, "elastic-apm-traceparent")
	}
	if exact {
		return true
	}
	// The families named by a prefix (X-B3-TraceId, x-datadog-trace-id,
	// X-Instana-T, uberctx-<key>, ot-baggage-<key>), whatever their length.
	switch name[0] | 0x20 {
	case 'x':
		return hasPrefixFold(name, "x-b3-") || hasPrefixFold(name, "x-datadog-") || hasPrefixFold(name, "x-instana-")
	case 'u':
		return hasPrefixFold(name, "uberctx-")
	case 'o':
		return hasPrefixFold(name, "ot-tracer-") || hasPrefixFold(name, "ot-baggage-")
	}
	return false
}

// hasPrefixFold reports whether name is longer than prefix and starts with
// it (equalFold's comparison).
func hasPrefixFold(name []byte, prefix string) bool {
	return len(name) > len(prefix) && equalFold(name[:len(prefix)], prefix)
}

// IsForwarded reports whether name is Forwarded or starts with X-Forwarded-.
func IsForwarded(name []byte) bool {
	const p = "x-forwarded-"
	if equalFold(name, "forwarded") {
		return true
	}
	return len(name) >= len(p) && equalFold(name[:len(p)], p)
}

// maxDeletes bounds the names collected in one pass without allocating; a
// request with more offending headers is cleaned in further passes.
const maxDeletes = 16

// Sanitize removes from h, in this order: the headers named in Connection,
// the hop-by-hop headers, every identity header, the method- and
// path-override headers (isMethodOverride), Expect (isExpect), the identity fields of
// other auth layers (isOtherAuthIdentity), the '_' spellings of
// X-Request-Id and of the fields below (isUnderscoreVariant), and (unless trustForwarded)
// X-Forwarded-*, Forwarded, the client-address, scheme, client-certificate, host and base-path headers, the trace context
// and Envoy's x-envoy-* fields. It reports whether the client asked for the connection to be
// closed, since removing Connection forgets that, and
// whether it removed an X-Forwarded-For (only ever from an untrusted peer:
// a sign that TRUSTED_PROXY_CIDRS may be missing a load balancer).
func Sanitize(h *fasthttp.RequestHeader, trustForwarded bool) (closeConn, droppedXFF bool) {
	closeConn = h.ConnectionClose()
	// Names listed in Connection first: they may name anything.
	for _, v := range h.PeekAll(fasthttp.HeaderConnection) {
		forEachToken(v, func(tok []byte) {
			if !connectionKeeps(tok) {
				h.DelBytes(tok)
			}
		})
	}
	// Most requests carry nothing to remove: one pass finds that out
	// before the scratch space below is set up.
	dirty := false
	for k := range h.All() {
		if removed(k, trustForwarded) {
			dirty = true
			break
		}
	}
	for dirty {
		var names [maxDeletes][]byte
		var buf [maxDeletes * 64]byte
		n, used, more := 0, 0, false
		for k := range h.All() {
			if !removed(k, trustForwarded) {
				continue
			}
			if !trustForwarded && equalFold(k, "x-forwarded-for") {
				droppedXFF = true
			}
			if n == maxDeletes {
				more = true
				break
			}
			// Copy: deleting while iterating would move the backing store.
			if used+len(k) <= len(buf) {
				names[n] = append(buf[used:used:len(buf)], k...)
				used += len(k)
			} else {
				names[n] = append([]byte(nil), k...)
			}
			n++
		}
		for _, k := range names[:n] {
			h.DelBytes(k)
		}
		if !more {
			break
		}
	}
	return closeConn, droppedXFF
}

// connectionKeeps reports whether Sanitize leaves the field a Connection
// token names: the connection's own options, and the fields that frame
// the request, which a client may not drop this way.
func connectionKeeps(tok []byte) bool {
	return equalFold(tok, "close") || equalFold(tok, "keep-alive") || equalFold(tok, "host") ||
		equalFold(tok, "content-length") || equalFold(tok, "content-type")
}

// ConnectionDrops reports whether the request's Connection names a field
// Sanitize would remove with it (any but those it keeps): what is read
// from the fields before Sanitize may then not be what the request has
// after it (a credential among them).
func ConnectionDrops(h *fasthttp.RequestHeader) bool {
	drops := false
	for _, v := range h.PeekAll(fasthttp.HeaderConnection) {
		forEachToken(v, func(tok []byte) { drops = drops || !connectionKeeps(tok) })
	}
	return drops
}

// ConnectionNames reports whether the request's Connection names the
// field name (any case, '_' read as '-'), which Sanitize then removes.
func ConnectionNames(h *fasthttp.RequestHeader, name string) bool {
	named := false
	for _, v := range h.PeekAll(fasthttp.HeaderConnection) {
		forEachToken(v, func(tok []byte) { named = named || equalFold(tok, name) })
	}
	return named
}

// removed reports whether Sanitize removes the header named k: a hop-by-hop
// or identity header, and unless the peer is trusted, a forwarding or
// trace-context header.
func removed(k []byte, trustForwarded bool) bool {
	return removedAlways(k) || !trustForwarded && removedUntrusted(k)
}

// removedAlways: a hop-by-hop, identity (the proxy's or another auth
// layer's) or method-override header, Expect, or an X-Request-Id field or one removedUntrusted names spelled
// with '_', or any of these or X-Request-Id named as CGI files it (isCGIName), removed from every peer.
func removedAlways(k []byte) bool {
	return isHopByHop(k) || identity.IsIdentityHeader(b2s(k)) || isOtherAuthIdentity(k) || isMethodOverride(k) || isRequestIDVariant(k) ||
		isExpect(k) || isUnderscoreVariant(k) || isCGIName(k)
}

// isOtherAuthIdentity reports whether name is one of the fields in which
// another auth layer in front of an app names the user it signed in:
// Authelia's and other forward-auth servers' Remote-User, Remote-Groups,
// Remote-Email and Remote-Name; the Kubernetes front proxy's
// X-Remote-User, X-Remote-Group and X-Remote-Extra-*; Grafana's
// X-WebAuth-User; oauth2-proxy's X-Forwarded-User, X-Forwarded-Email,
// X-Forwarded-Preferred-Username, X-Forwarded-Groups and
// X-Forwarded-Access-Token (its X-Auth-Request-* are identity headers
// already); X-Authenticated-* (X-Authenticated-User, Kong's
// X-Authenticated-Userid); Authentik's X-Authentik-*; Azure App Service
// authentication's X-Ms-Client-Principal* and X-Ms-Token-*; Google IAP's
// X-Goog-Authenticated-User-* and X-Goog-Iap-Jwt-Assertion; the AWS
// load balancer's X-Amzn-Oidc-*; Cloudflare Access's
// Cf-Access-Jwt-Assertion and Cf-Access-Authenticated-User-Email; and the
// consumer fields of Kong's auth plugins (X-Consumer-Id,
// X-Consumer-Username, X-Consumer-Custom-Id, X-Consumer-Groups,
// X-Anonymous-Consumer, X-Credential-Identifier, X-Credential-Username),
// which APISIX sets too; Pomerium's X-Pomerium-* (X-Pomerium-Claim-*,
// X-Pomerium-Jwt-Assertion); Vouch Proxy's X-Vouch-* (X-Vouch-User,
// X-Vouch-Idp-Claims-*); mod_auth_openidc's OIDC_* (OIDC_CLAIM_*,
// OIDC_access_token, OIDC_id_token_payload...); Google Cloud Endpoints'
// X-Endpoint-API-UserInfo and API Gateway's X-Apigateway-Api-Userinfo;
// and WSO2 API Manager's X-JWT-Assertion. An app
// moved behind the proxy from one of them may still read them, and would
// take the client's for the user it is. The proxy is the one authority
// on the caller (its signed X-Auth-* fields): they are removed from every
// peer, a trusted one too, as X-Auth-* are.
func isOtherAuthIdentity(name []byte) bool {
	if len(name) < len("remote-user") {
		return false
	}
	switch name[0] | 0x20 {
	case 'r':
		switch len(name) {
		case len("remote-user"): // and remote-name
			return equalFold(name, "remote-user") || equalFold(name, "remote-name")
		case len("remote-email"):
			return equalFold(name, "remote-email")
		case len("remote-groups"):
			return equalFold(name, "remote-groups")
		}
		return false
	case 'c':
		return equalFold(name, "cf-access-jwt-assertion") || equalFold(name, "cf-access-authenticated-user-email")
	case 'o':
		return hasPrefixFold(name, "oidc-")
	case 'x':
	default:
		return false
	}
	var exact bool
	switch len(name) {
	case len("x-remote-user"): // and x-consumer-id
		exact = equalFold(name, "x-remote-user") || equalFold(name, "x-consumer-id")
	case len("x-remote-group"): // and x-webauth-user
		exact = equalFold(name, "x-remote-group") || equalFold(name, "x-webauth-user")
	case len("x-forwarded-user"):
		exact = equalFold(name, "x-forwarded-user")
	case len("x-forwarded-email"): // and x-consumer-groups
		exact = equalFold(name, "x-forwarded-email") || equalFold(name, "x-consumer-groups")
	case len("x-forwarded-groups"):
		exact = equalFold(name, "x-forwarded-groups")
	case len("x-consumer-username"):
		exact = equalFold(name, "x-consumer-username")
	case len("x-consumer-custom-id"): // and x-anonymous-consumer
		exact = equalFold(name, "x-consumer-custom-id") || equalFold(name, "x-anonymous-consumer")
	case len("x-credential-username"):
		exact = equalFold(name, "x-credential-username")
	case len("x-credential-identifier"): // and x-endpoint-api-userinfo
		exact = equalFold(name, "x-credential-identifier") || equalFold(name, "x-endpoint-api-userinfo")
	case len("x-apigateway-api-userinfo"):
		exact = equalFold(name, "x-apigateway-api-userinfo")
	case len("x-jwt-assertion"):
		exact = equalFold(name, "x-jwt-assertion")
	case len("x-forwarded-access-token"): // and x-goog-iap-jwt-assertion
		exact = equalFold(name, "x-forwarded-access-token") || equalFold(name, "x-goog-iap-jwt-assertion")
	case len("x-forwarded-preferred-username"):
		exact = equalFold(name, "x-forwarded-preferred-username")
	}
	if exact {
		return true
	}
	// The families named by a prefix, whatever their length; the third
	// byte tells them apart.
	switch name[2] | 0x20 {
	case 'r':
		return hasPrefixFold(name, "x-remote-extra-")
	case 'm':
		return equalFold(name, "x-ms-client-principal") || hasPrefixFold(name, "x-ms-client-principal-") ||
			hasPrefixFold(name, "x-ms-token-")
	case 'g':
		return hasPrefixFold(name, "x-goog-authenticated-user-")
	case 'a':
		return hasPrefixFold(name, "x-amzn-oidc-") || hasPrefixFold(name, "x-authenticated-") || hasPrefixFold(name, "x-authentik-")
	case 'p':
		return hasPrefixFold(name, "x-pomerium-")
	case 'v':
		return hasPrefixFold(name, "x-vouch-")
	}
	return false
}

// isCGIName reports whether name is "HTTP_" (or "HTTP-", any case)
// followed by a field Sanitize removes (from every peer, removedAlways, or
// from an untrusted one, removedUntrusted) or by X-Request-Id: the name
// CGI gives such a field (HTTP_X_FORWARDED_FOR, HTTP_CLIENT_IP,
// HTTP_REMOTE_USER, HTTP_X_AUTH_USER_ID), which the client-IP helpers of
// Java apps ask for as a field of its own
// (request.getHeader("HTTP_X_FORWARDED_FOR"), after X-Forwarded-For,
// Proxy-Client-IP and WL-Proxy-Client-IP), as does code ported from PHP
// (getHeader("HTTP_REMOTE_USER"), the user its web server signed in). No
// proxy writes such a name: a client's would be its own address, user,
// method, path or request id, from any peer.
func isCGIName(name []byte) bool {
	const p = "http-"
	if len(name) <= len(p) || name[0]|0x20 != 'h' || !equalFold(name[:len(p)], p) {
		return false
	}
	k := name[len(p):]
	return removedAlways(k) || removedUntrusted(k) || len(k) == len("X-Request-Id") && equalFold(k, "x-request-id")
}

// isExpect reports whether name is Expect. Its one expectation,
// 100-continue (which curl sends for a body over 1 KiB), is the proxy's
// to meet: the listener answers it (or refuses the body) and reads the
// whole body before the request is forwarded, so an upstream asked the
// same would only send a 100 Continue that nobody waits for. Envoy
// removes it too.
func isExpect(name []byte) bool {
	return len(name) == len("Expect") && equalFold(name, "expect")
}

// isRequestIDVariant reports whether name is X-Request-Id spelled with '_'
// for '-' (X_Request_Id): not the header the proxy reads and replaces,
// but one that CGI-style servers (WSGI, PHP) file under the same name as
// it, so that an app could read the client's value as the request id the
// proxy signed.
func isRequestIDVariant(name []byte) bool {
	return len(name) == len("X-Request-Id") && bytes.IndexByte(name, '_') >= 0 && equalFold(name, "x-request-id")
}

// isUnderscoreVariant reports whether name is one of the fields the
// proxy removes from an untrusted peer and passes on from a trusted one
// (removedUntrusted: X-Forwarded-*, the client-address, scheme, host and
// base-path fields, the trace context, x-envoy-*) spelled with '_' for '-'
// (X_Forwarded_Prefix, X_Real_IP, X_Scheme, X_Host, uber_trace_id). A trusted
// peer's fields are read, extended or passed on under their dashed names;
// CGI-style servers (WSGI, PHP) file the '_' spelling under the same name
// (HTTP_X_REAL_IP), so such a field a client sent through a peer that
// sets or cleans the dashed names only stood beside the peer's value,
// and an app could take it for the base path, scheme, host or client
// address. Proxies write these names with '-' (nginx drops any field
// with '_' in its name): from every peer, the '_' spellings are removed.
// (Forwarded, traceparent and the other names without a '-' have none.)
func isUnderscoreVariant(name []byte) bool {
	return bytes.IndexByte(name, '_') >= 0 && removedUntrusted(name)
}

// removedUntrusted: a forwarding, client-address, scheme,
// client-certificate, host, base-path, trace-context or x-envoy-* header, removed from a peer
// outside TRUSTED_PROXY_CIDRS.
func removedUntrusted(k []byte) bool {
	return IsForwarded(k) || IsClientAddress(k) || IsScheme(k) || IsClientCert(k) || IsHostOverride(k) || IsScriptName(k) ||
		IsTraceContext(k) || IsEnvoy(k)
}

// IsClientCert reports whether name is one of the fields in which a front
// that terminates the client's TLS tells an app which certificate the
// client presented and whether it verified: HAProxy's and nginx's
// X-SSL-Client-* (Verify, DN, S-DN, I-DN, Cert, Serial, CN...) and
// nginx's X-SSL-Cert, ingress-nginx's ssl-client-* (Ssl-Client-Cert,
// Ssl-Client-Verify, ssl-client-subject-dn...), X-Client-Cert,
// X-Client-Verify and X-Client-DN, the X-Client-Cert-* of Google's load
// balancer, Azure App Service's X-ARR-ClientCert, the AWS load balancer's
// X-Amzn-Mtls-Clientcert and X-Amzn-Mtls-Clientcert-*, Cloudflare's
// cf-cert-*, and RFC 9440's Client-Cert and Client-Cert-Chain (Envoy's
// X-Forwarded-Client-Cert and Traefik's X-Forwarded-Tls-Client-Cert are
// X-Forwarded-* fields). An app that authenticates by certificate behind
// such a front believes them: "X-SSL-Client-Verify: SUCCESS" with a DN of
// the client's choosing is a verified certificate to it. They are
// transport facts, the front's to report, as the scheme is: the proxy
// terminates no client TLS itself, so it has none of its own to give.
func IsClientCert(name []byte) bool {
	if len(name) < len("x-ssl-cert") {
		return false
	}
	switch name[0] | 0x20 {
	case 'c':
		return equalFold(name, "client-cert") || equalFold(name, "client-cert-chain") || hasPrefixFold(name, "cf-cert-")
	case 's':
		return hasPrefixFold(name, "ssl-client-")
	case 'x':
	default:
		return false
	}
	var exact bool
	switch len(name) {
	case len("x-ssl-cert"):
		exact = equalFold(name, "x-ssl-cert")
	case len("x-client-dn"):
		exact = equalFold(name, "x-client-dn")
	case len("x-client-cert"):
		exact = equalFold(name, "x-client-cert")
	case len("x-client-verify"):
		exact = equalFold(name, "x-client-verify")
	case len("x-arr-clientcert"):
		exact = equalFold(name, "x-arr-clientcert")
	case len("x-amzn-mtls-clientcert"):
		exact = equalFold(name, "x-amzn-mtls-clientcert")
	}
	if exact {
		return true
	}
	// The families named by a prefix, whatever their length.
	return hasPrefixFold(name, "x-ssl-client-") || hasPrefixFold(name, "x-client-cert-") ||
		hasPrefixFold(name, "x-amzn-mtls-clientcert-")
}

// IsHostOverride reports whether name is one of the fields besides
// X-Forwarded-Host (and X-Forwarded-Server, an X-Forwarded-* field) in
// which a proxy in front of an app names the host the client asked for:
// X-Host (read before Host by PHP and PSR-7 middleware, WSGI proxy
// middleware), X-Original-Host (Azure's Application Gateway and Front
// Door, IIS's URL Rewrite, ASP.NET Core's forwarded-headers middleware,
// which apps behind them read as the request's host) and
// X-HTTP-Host-Override. An app that builds its links, redirects or
// password-reset URLs from one would write the client's host into them
// (host-header poisoning: a reset mail whose link leads to the client's
// site). The proxy sends the client's Host in X-Forwarded-Host, which it
// sets itself.
func IsHostOverride(name []byte) bool {
	switch len(name) {
	case len("x-host"):
		return equalFold(name, "x-host")
	case len("x-original-host"):
		return equalFold(name, "x-original-host")
	case len("x-http-host-override"):
		return equalFold(name, "x-http-host-override")
	}
	return false
}

// IsScriptName reports whether name is one of the base-path fields
// besides X-Forwarded-Prefix: X-Script-Name, the base path a proxy in
// front says it removed, which the ReverseProxied middleware of Flask
// recipes, pgAdmin, Calibre-Web and Radicale makes SCRIPT_NAME and cuts
// off the path they route (PATH_INFO) (a client's "X-Script-Name: /pub"
// on GET /pub/admin, which the rules matched under /pub, had such an app
// route /admin); and X-Original-Prefix, where ASP.NET Core's
// forwarded-headers middleware keeps the base path it replaced with
// X-Forwarded-Prefix's, which apps behind it read back as the request's
// own (as X-Original-Proto and X-Original-For are). They are the front
// proxy's to give, as X-Forwarded-Prefix is.
func IsScriptName(name []byte) bool {
	switch len(name) {
	case len("x-script-name"):
		return equalFold(name, "x-script-name")
	case len("x-original-prefix"):
		return equalFold(name, "x-original-prefix")
	}
	return false
}

// IsScheme reports whether name is one of the fields besides
// X-Forwarded-Proto and X-Forwarded-Ssl in which a proxy in front of an app
// says the client came over TLS: X-Scheme (nginx configurations, Tornado's
// xheaders), X-Url-Scheme and Front-End-Https (Microsoft's). An app that
// reads one takes a plain-HTTP request for an HTTPS one, as the client
// wrote it: its redirects and links, its Secure cookies and its
// HTTPS-only checks follow the client's word. So do those of the fields
// other fronts set and apps behind them read: X-ARR-SSL (IIS's
// Application Request Routing, Azure App Service, whose presence alone
// means HTTPS to WordPress and PHP code), X-AppService-Proto (Azure App
// Service), CloudFront-Forwarded-Proto (AWS CloudFront), CF-Visitor
// (Cloudflare's {"scheme":"https"}), Fastly-SSL (Fastly's, which
// WordPress setups read as HTTPS by its presence), X-SSL (nginx and
// HAProxy configurations) and X-Original-Proto (where ASP.NET Core's
// forwarded-headers middleware keeps the scheme it replaced). The proxy
// sends X-Forwarded-Proto, which it sets itself.
func IsScheme(name []byte) bool {
	switch len(name) {
	case len("x-ssl"):
		return equalFold(name, "x-ssl")
	case len("x-scheme"):
		return equalFold(name, "x-scheme")
	case len("x-arr-ssl"):
		return equalFold(name, "x-arr-ssl")
	case len("cf-visitor"): // and fastly-ssl
		return equalFold(name, "cf-visitor") || equalFold(name, "fastly-ssl")
	case len("x-url-scheme"):
		return equalFold(name, "x-url-scheme")
	case len("front-end-https"):
		return equalFold(name, "front-end-https")
	case len("x-original-proto"):
		return equalFold(name, "x-original-proto")
	case len("x-appservice-proto"):
		return equalFold(name, "x-appservice-proto")
	case len("cloudfront-forwarded-proto"):
		return equalFold(name, "cloudfront-forwarded-proto")
	}
	return false
}

// IsEnvoy reports whether name is one of Envoy's x-envoy-* request fields.
// An Envoy between the proxy and an app (an Istio or other mesh sidecar)
// takes them from the proxy, a peer inside the mesh, as the mesh's own:
// x-envoy-retry-on and x-envoy-max-retries make it resend a request (a
// POST included) up to the count the client chose, x-envoy-upstream-rq-
// timeout-ms sets the app's deadline, x-envoy-internal marks the request
// internal and x-envoy-external-address (an address an app may read as
// the client's) is the client's to choose. Envoy itself removes them
// from a request that comes from outside; the proxy is that edge. (Its
// x-envoy-original-path is removed from every peer, with the other path
// overrides: isMethodOverride.)
func IsEnvoy(name []byte) bool {
	return hasPrefixFold(name, "x-envoy-")
}

// IsClientAddress reports whether name is one of the headers in which
// proxies and CDNs pass the client's address on besides X-Forwarded-For
// (X-Real-IP, True-Client-IP, CF-Connecting-IP, ...): an app or a library
// that reads one of them first (nginx's realip module, many frameworks'
// "client IP" helpers) would take it, as the client wrote it, for the
// client's address. X-Auth-Client-Ip is the signed one. X-Forwarded,
// Forwarded-For and Via are among them: django-ipware and python-ipware
// take the first public address of X-Forwarded-For, X-Forwarded,
// Forwarded-For, Forwarded and Via, in that order, so where
// X-Forwarded-For holds a private one (a peer behind a load balancer that
// translates addresses, a client on an internal network) the client's own
// X-Forwarded: 203.0.113.9 was its address. So are the fields of other
// hosts and CDNs (Fly-Client-IP, Do-Connecting-Ip, X-Appengine-User-Ip,
// X-Azure-ClientIP and X-Azure-SocketIP, Cloudflare's Cf-Pseudo-IPv4) and
// ingress-nginx's X-Original-Forwarded-For (the X-Forwarded-For it was
// given, which apps behind it read as the client's chain). So are
// Proxy-Client-IP and WL-Proxy-Client-IP (Apache's and WebLogic's
// proxy plug-ins), which the client-IP helpers of Java apps read right
// after X-Forwarded-For, and Google's X-ProxyUser-Ip. So is
// X-Original-For, where ASP.NET Core's forwarded-headers middleware keeps
// the address it replaced (the peer's, to an app that reads it).
func IsClientAddress(name []byte) bool {
	switch len(name) {
	case len("via"):
		return equalFold(name, "via")
	case len("x-real-ip"): // and client-ip
		return equalFold(name, "x-real-ip") || equalFold(name, "client-ip")
	case len("x-client-ip"): // and x-remote-ip, x-forwarded
		return equalFold(name, "x-client-ip") || equalFold(name, "x-remote-ip") || equalFold(name, "x-forwarded")
	case len("x-remote-addr"): // and forwarded-for, fly-client-ip
		return equalFold(name, "x-remote-addr") || equalFold(name, "forwarded-for") || equalFold(name, "fly-client-ip")
	case len("true-client-ip"): // and cf-pseudo-ipv4, x-proxyuser-ip, x-original-for
		return equalFold(name, "true-client-ip") || equalFold(name, "cf-pseudo-ipv4") || equalFold(name, "x-proxyuser-ip") ||
			equalFold(name, "x-original-for")
	case len("proxy-client-ip"):
		return equalFold(name, "proxy-client-ip")
	case len("wl-proxy-client-ip"):
		return equalFold(name, "wl-proxy-client-ip")
	case len("cf-connecting-ip"): // and fastly-client-ip, x-originating-ip, do-connecting-ip, x-azure-clientip, x-azure-socketip
		return equalFold(name, "cf-connecting-ip") || equalFold(name, "fastly-client-ip") || equalFold(name, "x-originating-ip") ||
			equalFold(name, "do-connecting-ip") || equalFold(name, "x-azure-clientip") || equalFold(name, "x-azure-socketip")
	case len("x-cluster-client-ip"): // and x-appengine-user-ip
		return equalFold(name, "x-cluster-client-ip") || equalFold(name, "x-appengine-user-ip")
	case len("x-original-forwarded-for"):
		return equalFold(name, "x-original-forwarded-for")
	}
	return false
}

// SanitizeResponse removes from an upstream's answer what belongs to the
// upstream's connection with the proxy (RFC 9110 section 7.6.1): the
// fields its Connection names (but those that frame the answer), the
// hop-by-hop fields, and with Connection its wish to close that
// connection, which is not the client's: the proxy decides about its own
// connection with the client. Most answers carry none of them, which one
// pass over the fields finds out. The status line becomes the proxy's own
// (ownStatusLine). Every X-Request-Id of the answer is removed too: the
// request id the client gets is the proxy's (set after this), the one both
// services logged and the upstream received; an upstream's own stood
// beside it (a second field) or, set twice, survived the proxy's. So are
// the upstream's diagnostic fields (IsDiagnosticAnswer): its trace ids and
// timings are for its operators, not for whoever sent the request. And so
// is every X-Auth-* field (identity.IsIdentityHeader): X-Auth-Invalidated
// (invalidation.HeaderInvalidated), which coreapi's answers carry for the
// proxy alone (read before this from coreapi's answers only) and an app's
// must not pass off as coreapi's to a proxy in front, and the identity
// fields the proxy signed for the upstream (its key id, the signature, the
// client IP, the caller's roles and address), which an app echoing them
// handed to the client and to any hop in front that reads X-Auth-* as an
// identity. Each of these fields is removed in every spelling
// ('_' for '-', any case). Nothing is added either: an answer without a
// Content-Type goes on without one, where fasthttp's writer would name it
// "text/plain; charset=utf-8" (a binary download read as UTF-8 text).
func SanitizeResponse(h *fasthttp.ResponseHeader) {
	h.SetNoDefaultContentType(true)
	if !h.IsHTTP11() || len(h.StatusMessage()) > 0 {
		ownStatusLine(h)
	}
	hops, own, diag := 0, 0, 0
	for k := range h.All() {
		switch {
		case isHopByHop(k):
			hops++
		case len(k) > 0 && k[0]|0x20 == 'x' && isProxysAnswerField(k):
			// First letter first: Content-Type has the length of
			// X-Request-Id, and is in nearly every answer.
			own++
		case IsDiagnosticAnswer(k):
			diag++
		}
	}
	if hops > 0 {
		sanitizeResponse(h, hops)
	}
	// One name per pass, as the hop-by-hop ones (delFirst): each has
	// several spellings, which fasthttp keeps apart.
	for range own {
		if !delFirst(h, isProxysAnswerField) {
			break
		}
	}
	for range diag {
		if !delFirst(h, IsDiagnosticAnswer) {
			break
		}
	}
}

// isProxysAnswerField reports whether name, in an upstream's answer, is
// X-Request-Id or an X-Auth-* field (identity.IsIdentityHeader, which
// X-Auth-Invalidated is), in any spelling ('_' for '-', any case): the
// proxy sets the one, reads X-Auth-Invalidated from coreapi alone, and
// writes the others into requests only. An upstream's X_Request_Id stood
// beside the proxy's X-Request-Id, and its X_Auth_Invalidated passed on,
// under the names CGI-style readers (WSGI, PHP, a front proxy that maps
// '_' to '-') file them as.
func isProxysAnswerField(name []byte) bool {
	if len(name) == len("X-Request-Id") && equalFold(name, "x-request-id") {
		return true
	}
	return identity.IsIdentityHeader(b2s(name))
}

// IsDiagnosticAnswer reports whether name, in an upstream's answer, tells
// of the upstream's tracing or timing: the trace context of every format
// the proxy strips from requests (IsTraceContext: an app's tracer may
// echo it, or X-Ray's and Google's load balancers' ids), W3C Trace Context
// Level 2's traceresponse (the app's trace and span ids) and Server-Timing
// (the app's own durations: database, cache, each backend it called,
// often with their names). None of it is the client's: the proxy is the
// edge, and what crosses it names the request by its X-Request-Id alone.
func IsDiagnosticAnswer(name []byte) bool {
	// Every answer's every field comes here: most (Content-Type,
	// Content-Length, Date, Cache-Control, Vary) begin with a letter no
	// diagnostic name begins with, and leave after one table lookup.
	if len(name) == 0 || !diagnosticFirst[name[0]] {
		return false
	}
	if len(name) == len("traceresponse") && (equalFold(name, "traceresponse") || equalFold(name, "server-timing")) {
		return true
	}
	return IsTraceContext(name)
}

// diagnosticFirst marks, in either case, the first letters of the names
// IsDiagnosticAnswer knows (TestDiagnosticFirstLetters keeps it complete).
var diagnosticFirst = func() (t [256]bool) {
	for _, c := range "begjnostux" {
		t[c], t[c-'a'+'A'] = true, true
	}
	return t
}()

// ownStatusLine makes an answer's status line the proxy's: HTTP/1.1 and
// the status code's own reason phrase. fasthttp writes back the version and
// reason phrase it read from the upstream: an "HTTP/1.0" (or "HTTP/0.9")
// answer reached the client as such, along with the chunked framing and
// kept-alive connection of the proxy's HTTP/1.1 (a client reads such an
// answer until the connection closes, chunk sizes and all), and a reason
// phrase with its control bytes. The version belongs to the connection
// (RFC 9110 section 2.5: an intermediary sends its own), and a reason
// phrase means nothing to a client.
func ownStatusLine(h *fasthttp.ResponseHeader) {
	h.SetProtocol(nil)
	h.SetStatusMessage(nil)
}

// sanitizeResponse is SanitizeResponse for an answer that carries hops
// hop-by-hop fields (some upstreams, Node's among them, send Connection
// and Keep-Alive on every answer): it does not allocate either.
func sanitizeResponse(h *fasthttp.ResponseHeader, hops int) {
	// The names listed in Connection, copied: deleting a field moves the
	// values PeekAll returned.
	var names [maxDeletes][]byte
	var buf [maxDeletes * 32]byte
	n, used, more := 0, 0, false
	for _, v := range h.PeekAll(fasthttp.HeaderConnection) {
		forEachToken(v, func(tok []byte) {
			if framesAnswer(tok) {
				return
			}
			if n == maxDeletes || used+len(tok) > len(buf) {
				more = true
				return
			}
			names[n] = append(buf[used:used:len(buf)], tok...)
			used += len(tok)
			n++
		})
	}
	if more {
		delNamedSlow(h)
	} else {
		for _, k := range names[:n] {
			h.DelBytes(k)
		}
	}
	// Then the hop-by-hop fields (Connection among them), one name per
	// pass: an answer has few. A pass per field, not per hop-by-hop name:
	// each name has several spellings ('_' for '-', which fasthttp keeps
	// apart), and the fields of those past the ninth reached the client.
	for range hops {
		if !delFirst(h, isHopByHop) {
			return
		}
	}
}

// delFirst removes the answer's fields named as the first one match
// accepts, and reports whether there was one: without allocating, but for
// a name longer than 64 bytes (deleting moves the name it was given, so
// the name is copied first).
func delFirst(h *fasthttp.ResponseHeader, match func([]byte) bool) bool {
	var found []byte
	for k := range h.All() {
		if match(k) {
			found = k
			break
		}
	}
	var name [64]byte
	switch {
	case found == nil:
		return false
	case len(found) <= len(name):
		h.DelBytes(name[:copy(name[:], found)])
	default:
		h.Del(string(found))
	}
	return true
}

// delNamedSlow removes the fields an answer's Connection names when they
// are more, or longer, than sanitizeResponse collects without allocating:
// those past the 16th name (or 512 bytes of names) reached the client.
func delNamedSlow(h *fasthttp.ResponseHeader) {
	var names []string
	for _, v := range h.PeekAll(fasthttp.HeaderConnection) {
		forEachToken(v, func(tok []byte) {
			if !framesAnswer(tok) {
				names = append(names, string(tok))
			}
		})
	}
	for _, k := range names {
		h.Del(k)
	}
}

// framesAnswer reports whether a name listed in an answer's Connection is
// one whose removal would change how the answer is framed or read: those
// stay, as Sanitize keeps them in a request.
func framesAnswer(tok []byte) bool {
	return equalFold(tok, "close") || equalFold(tok, "keep-alive") || equalFold(tok, "content-length") ||
		equalFold(tok, "transfer-encoding") || equalFold(tok, "content-type")
}

// TransferNotChunked reports whether the request has a Transfer-Encoding
// field whose coding is not chunked. fasthttp refuses every other coding
// but identity (gzip, "chunked, identity", two such fields: 400), and
// takes "Transfer-Encoding: identity" for no field at all: the body is
// then read by its Content-Length, or taken as empty without one, so the
// bytes that follow the header are read as the next request, where a
// front proxy may have read them as this one's body. RFC 9112 section 6.3:
// a request whose final coding is not chunked has no length that can be
// determined reliably, and is refused with 400, its connection closed.
// The field is not among the parsed ones: it is looked for in the header
// as it was read (RawHeaders). A chunked request (the one coding fasthttp
// keeps, exactly "chunked") is not read again.
//
// plain is LinePerField's answer: a header with one line per field, where
// fasthttp added none, holds no identity coding, and is not read again.
func TransferNotChunked(h *fasthttp.RequestHeader, plain bool) bool {
	if plain || h.ContentLength() == -1 {
		return false
	}
	raw := h.RawHeaders()
	const name = "transfer-encoding"
	for len(raw) > len(name) {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		// fasthttp refuses a name followed by a space before the colon.
		if len(line) > len(name) && line[0]|0x20 == 't' && line[len(name)] == ':' && asciiFold(line[:len(name)], name) {
			return true
		}
	}
	return false
}

// LinePerField reports whether each line of the header as it was read
// (RawHeaders) gave h one field of its own, from fields, how many fields
// h.All yielded before anything changed h (Seen.Fields), or -1 when that
// is not known (then false). Each field fasthttp yields comes from a line
// of its own but two: the "Connection: close" it adds when it is to close
// the connection (as it is for a request with both a Content-Length and a
// Transfer-Encoding), and the "Content-Length: 0" it sets for a request
// other than GET or HEAD that declared no length (as a
// "Transfer-Encoding: identity" one does not). Lines it merges (Cookie,
// Trailer), overwrites (a second User-Agent), drops (an empty Host,
// "Transfer-Encoding: identity") or joins to the line before (a folded
// line) yield fewer fields than lines. The raw header ends with an empty
// line. So a raw header with exactly fields+1 line ends, where fasthttp
// added neither field, has none of those lines: one count of its line
// ends, instead of a look at each line (TransferNotChunked, Folded).
// lineEnds is LineEnds's count.
func LinePerField(h *fasthttp.RequestHeader, fields, lineEnds int) bool {
	return fields >= 0 && !h.ConnectionClose() && (h.ContentLength() > 0 || h.IsGet() || h.IsHead()) &&
		lineEnds == fields+1
}

// LineEnds counts the line ends (LFs) of the header as it was read
// (RawHeaders): the one count LinePerField and BareLF read.
func LineEnds(h *fasthttp.RequestHeader) int {
	return bytes.Count(h.RawHeaders(), []byte{'\n'})
}

// BareLF reports whether the header as it was read ends a line with a LF
// alone, not after a CR, which fasthttp takes for a line's end (RFC 9112
// section 2.2 allows that or a refusal): a front that reads a line only
// up to a CRLF, or keeps a bare LF inside a field's value, reads other
// fields there ("X-A: b\nContent-Length: 5" is one field of its own and
// no body), the framing of a request smuggled. fasthttp refuses a CR
// anywhere but before a LF, so every CR of the header ends a line, and a
// header has a bare LF exactly when it has fewer CRs than line ends:
// one count, beside LineEnds's, instead of a look at each line.
func BareLF(h *fasthttp.RequestHeader, lineEnds int) bool {
	return bytes.Count(h.RawHeaders(), []byte{'\r'}) != lineEnds
}

// Folded reports whether the header as it was read holds a field line
// folded onto the next (obs-fold, RFC 9112 section 5.2: a line that
// starts with a space or a tab), which fasthttp joins to the field before
// it. A front that does not join it reads another field (an unknown one,
// or none) where the proxy reads "Transfer-Encoding: chunked", the
// classic disguise of request smuggling. plain is LinePerField's answer:
// a header with one line per field has no folded line.
func Folded(h *fasthttp.RequestHeader, plain bool) bool {
	if plain {
		return false
	}
	raw := h.RawHeaders()
	return bytes.Contains(raw, []byte("\n ")) || bytes.Contains(raw, []byte("\n\t"))
}

// HasTrailers reports whether the client announced (Trailer) or sent a
// trailer section. fasthttp keeps trailer fields beside the header fields,
// outside what Sanitize iterates, and a Peek on either side of the proxy
// finds them like headers; so requests with trailers are refused rather
// than cleaned.
func HasTrailers(h *fasthttp.RequestHeader) bool {
	for range h.Trailers() {
		return true
	}
	return len(h.Peek(fasthttp.HeaderTrailer)) > 0
}

// forEachToken calls f for each comma-separated, space-trimmed token of v.
func forEachToken(v []byte, f func([]byte)) {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			tok, v = v, nil
		}
		tok = bytes.TrimSpace(tok)
		if len(tok) > 0 {
			f(tok)
		}
	}
}

// Bearer parsing errors.
var (
	ErrNoToken  = errors.New("headers: no bearer token")
	ErrMultiple = errors.New("headers: more than one Authorization header")
	ErrScheme   = errors.New("headers: Authorization scheme is not Bearer")
	ErrMalform  = errors.New("headers: malformed bearer token")
	ErrTooLarge = errors.New("headers: bearer token too large")
)

// Bearer returns the token of the request's single "Authorization: Bearer
// <token>" header (scheme case-insensitive, one space, RFC 6750 b64token
// characters, at most maxLen bytes). The returned slice aliases h: copy it
// before keeping it.
func Bearer(h *fasthttp.RequestHeader, maxLen int) ([]byte, error) {
	all := h.PeekAll(fasthttp.HeaderAuthorization)
	switch len(all) {
	case 0:
		return nil, ErrNoToken
	case 1:
	default:
		return nil, ErrMultiple
	}
	return ParseBearer(all[0], maxLen)
}

// BearerCandidate returns what follows "Bearer " in the request's single
// Authorization header, without checking its characters, when it is at
// most maxLen bytes: the key to look a token up by. Only a cache hit on
// what it returns may skip Bearer; anything else goes through Bearer.
func BearerCandidate(h *fasthttp.RequestHeader, maxLen int) ([]byte, bool) {
	all := h.PeekAll(fasthttp.HeaderAuthorization)
	if len(all) != 1 {
		return nil, false
	}
	return bearerCandidate(all[0], maxLen)
}

func bearerCandidate(v []byte, maxLen int) ([]byte, bool) {
	const scheme = "bearer "
	// Longer than the scheme: a word to read. equalFold's '_' for '-'
	// does not matter: the scheme has neither.
	if len(v) <= len(scheme) || len(v)-len(scheme) > maxLen || !bearerScheme(v) {
		return nil, false
	}
	return v[len(scheme):], true
}

// AnyCredential reports whether any Authorization field carries
// credentials for which is returns true, however the field is spelled:
// with any scheme or none, any run of spaces and tabs around them, among
// several fields, and anywhere in a field (AnyToken's tokens): after
// another scheme's credentials ("Basic ..., Bearer <key>"), quoted, or as
// a parameter's value ("Bearer token=<jwt>"). A public route forwards a
// client's Authorization as it came, but must still find an API key or a
// token of its own in a field the strict parser would refuse. is learns
// whether the token leads its field (lead): its first or second token,
// where the field's credentials are (with no scheme, or after it); a
// later one is another scheme's parameter or value (Digest's
// username="...", a Custom scheme's client=...), which is reads for a
// whole credential only.
func AnyCredential(h *fasthttp.RequestHeader, is func(cred []byte, lead bool) bool) bool {
	for _, v := range h.PeekAll(fasthttp.HeaderAuthorization) {
		for n := 0; len(v) > 0; n++ {
			var tok []byte
			if tok, v = nextToken(v); len(tok) > 0 && is(tok, n < 2) {
				return true
			}
		}
	}
	return false
}

// AnyToken reports whether is returns true for any token of v: a run of
// RFC 6750 b64token characters (letters, digits, "-._~+/"), which holds
// an API key or a JWS whole, between any other bytes (a comma, a space or
// a tab, '=', a quote). is may see a token that goes on past the
// credential's end (a JWS's dots are token characters).
func AnyToken(v []byte, is func(cred []byte) bool) bool {
	for len(v) > 0 {
		var tok []byte
		if tok, v = nextToken(v); len(tok) > 0 && is(tok) {
			return true
		}
	}
	return false
}

// nextToken splits v's first token (AnyToken's: a run of b64token
// characters after any other bytes) from the rest; tok is empty when v
// holds none.
func nextToken(v []byte) (tok, rest []byte) {
	i := 0
	for i < len(v) && !b64token[v[i]] {
		i++
	}
	v = v[i:]
	j := 0
	for j < len(v) && b64token[v[j]] {
		j++
	}
	return v[:j], v[j:]
}

// ParseBearer parses one Authorization header value.
func ParseBearer(v []byte, maxLen int) ([]byte, error) {
	const scheme = "bearer "
	if len(v) < len(scheme) || !equalFold(v[:len(scheme)], scheme) {
		switch {
		case len(v) == 0:
			return nil, ErrNoToken
		case equalFold(v, "bearer"):
			return nil, ErrMalform
		}
		return nil, ErrScheme
	}
	tok := v[len(scheme):]
	if len(tok) == 0 {
		return nil, ErrMalform
	}
	if len(tok) > maxLen {
		return nil, ErrTooLarge
	}
	i := 0
	for i < len(tok) && b64token[tok[i]] {
		i++
	}
	if i == 0 {
		return nil, ErrMalform
	}
	for ; i < len(tok); i++ {
		if tok[i] != '=' {
			return nil, ErrMalform
		}
	}
	return tok, nil
}

// b2s views b as a string without copying; the result must not outlive b.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// b64token marks the RFC 6750 b64token characters (before any '=').
var b64token = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/'
	}
	return t
}()

// asciiFold reports whether a is s (lower case) in any ASCII case.
func asciiFold(a []byte, s string) bool {
	if len(a) != len(s) {
		return false
	}
	if len(a) >= 8 {
		// Eight bytes at a time (a client's X-Request-Id, and any
		// name of eight bytes or more), the last eight overlapping bytes
		// already compared: no byte-by-byte tail (TestFoldWord).
		sb := unsafe.Slice(unsafe.StringData(s), len(s))
		for i := 0; i < len(a); i += 8 {
			j := min(i, len(a)-8)
			if foldWord(binary.LittleEndian.Uint64(a[j:])) != binary.LittleEndian.Uint64(sb[j:]) {
				return false
			}
		}
		return true
	}
	for i := range len(a) {
		c := a[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// foldWord lower-cases the ASCII capital letters among the eight bytes of
// x, and no other byte: UpperBytes flags them, and each flag (0x80)
// shifted down is the letter's case bit (0x20).
func foldWord(x uint64) uint64 {
	return x | UpperBytes(x)>>2
}

// UpperBytes has the high bit set in each byte of x (little-endian) that
// is 'A' to 'Z', and no other bit: "Determine if a word has a byte between
// m and n" (Sean Eron Anderson, Bit Twiddling Hacks) for m = 'A'-1 and
// n = 'Z'+1, exact for every byte (one of 0x80 or more is never flagged),
// and no carry crosses from one byte to the next, so the lowest flag is
// the first such byte.
func UpperBytes(x uint64) uint64 {
	const (
		ones = 0x0101010101010101
		low7 = 0x7f * ones
	)
	y := x & low7
	return ((127+'Z'+1)*ones - y) & ^x & (y + (127-('A'-1))*ones) & (0x80 * ones)
}

// authorizationName reports whether k is "Authorization" in any ASCII
// case, as asciiFold(k, "authorization") does: two words compared, the
// second overlapping the first, in Scan's loop itself.
func authorizationName(k []byte) bool {
	const (
		authoriz = 0x7a69726f68747561 // "authoriz", little-endian
		rization = 0x6e6f6974617a6972 // "rization"
	)
	return len(k) == len("Authorization") && foldWord(binary.LittleEndian.Uint64(k)) == authoriz &&
		foldWord(binary.LittleEndian.Uint64(k[5:])) == rization
}

// bearerWord is "bearer " as the first seven bytes of a little-endian word.
const bearerWord = uint64('b') | uint64('e')<<8 | uint64('a')<<16 | uint64('r')<<24 | uint64('e')<<32 | uint64('r')<<40 | uint64(' ')<<48

// bearerScheme reports whether v, at least 8 bytes long, starts with
// "bearer " in any case: one word compared, for every bearer request.
func bearerScheme(v []byte) bool {
	return foldWord(binary.LittleEndian.Uint64(v))&(1<<56-1) == bearerWord
}

// equalFold compares ASCII case-insensitively and reads '_' as '-', the way
// CGI-style upstreams map header names, so "X_Forwarded_For" or
// "Transfer_Encoding" cannot slip past a check for the dashed name.
func equalFold(a []byte, s string) bool {
	if len(a) != len(s) {
		return false
	}
	for i := 0; i < len(a); i++ {
		c, d := a[i], s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if d >= 'A' && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c == '_' {
			c = '-'
		}
		if d == '_' {
			d = '-'
		}
		if c != d {
			return false
		}
	}
	return true
}

// RawCookie appends to dst the values of the request's Cookie fields as
// fasthttp read them, joined by "; " (RFC 9113 section 8.2.3), and reports
// whether there was one. It must run before anything iterates the fields
// (All, Scan): fasthttp then parses the cookies, and writes the parsed
// ones back when the request is forwarded, which drops a cookie whose
// value holds '"' or '\' (Python's http.cookies writes a value with a
// comma or a space as "a\054b"), unquotes a quoted value and trims spaces.
// SetRawCookie puts the field back as it came.
func RawCookie(dst []byte, h *fasthttp.RequestHeader) ([]byte, bool) {
	// The name is in canonical form, as fasthttp stored the client's: it
	// is looked up as it is, not re-cased letter by letter on every
	// request (TestRawCookieKeepsNormalizing).
	renorm := !h.DisableNormalizing()
	all := h.PeekAll(fasthttp.HeaderCookie)
	if renorm {
		h.EnableNormalizing()
	}
	for i, v := range all {
		if i > 0 {
			dst = append(dst, "; "...)
		}
		dst = append(dst, v...)
	}
	return dst, len(all) > 0
}

// SetRawCookie makes raw (from RawCookie) the request's one Cookie field,
// as it is. fasthttp would parse a Cookie field set the usual way (and
// drop the ';' of a cookie it sets alone): it is set as a plain field,
// which fasthttp writes as it is, once the parsed cookies are removed.
func SetRawCookie(h *fasthttp.RequestHeader, raw []byte) {
	h.DelAllCookies()
	if len(raw) == 0 {
		return
	}
	special := !h.DisableSpecialHeader()
	h.SetCanonical(cookieName, raw)
	if special {
		h.EnableSpecialHeader()
	}
}

var cookieName = []byte(fasthttp.HeaderCookie)

// Upgrade is what a request's Upgrade header asks for.
type Upgrade uint8

// Upgrades.
const (
	UpgradeNone      Upgrade = iota
	UpgradeWebSocket         // Upgrade: websocket with Connection: upgrade
	UpgradeH2C               // Upgrade lists h2c: always refused
	UpgradeOther             // anything else: stripped like any hop-by-hop header
)

// Seen is what Scan found among the client's header fields.
type Seen struct {
	RequestID []byte // the first X-Request-Id value (aliasing the header)
	// Authorization is the first Authorization value (aliasing the
	// header) and Authorizations how many there are: what BearerCandidate
	// reads, while no stage has changed the fields since Scan.
	Authorization  []byte
	Authorizations int
	// Upgrade, WSProtocol and APIKey: an Upgrade, Sec-WebSocket-Protocol
	// or X-API-Key field (any spelling APIKey accepts) is present;
	// UpgradeOf, TakeProtocolBearer and APIKey need not run without one.
	Upgrade, WSProtocol, APIKey bool
	// Hops: how many fields Sanitize removes from every peer (a
	// hop-by-hop one, Connection and a trailer announcement included, an
	// identity header (another auth layer's too), a method override, Expect, an X-Request-Id or
	// a field Forwardeds counts spelled with '_', or any of these named as
	// CGI files it: HTTP_REMOTE_USER); Forwardeds: how many
	// it removes from an untrusted peer only (X-Forwarded-*, Forwarded,
	// trace context, x-envoy-*). With neither, Sanitize would remove
	// nothing and HasTrailers is false; their sum bounds the removals
	// (TooManyRemovals).
	Hops, Forwardeds int
	// SpaceInName: a field name holds a space ("Transfer-Encoding x").
	// fasthttp accepts such a name, which is no token (RFC 9110 section
	// 5.1), and would forward it as it came; an upstream that ends a name
	// at its first space reads it as the name before the space, which
	// the clean-up, comparing whole names, does not remove (a framing
	// field, a method override, a client address). The request is
	// refused.
	SpaceInName bool
	// Fields: how many fields there are (at most MaxFields are served).
	Fields int
}

// MaxRemoved bounds the fields Sanitize removes from one request, and the
// names its Connection fields may list: fasthttp deletes a name by walking
// every field, so a header block of removable fields of distinct names
// (X-Auth-1, X-Auth-2, ... or a Connection listing thousands of names)
// cost milliseconds of CPU per request, thousands of times a plain one's,
// from anyone on any route. No client needs more than a few.
const MaxRemoved = 64

// MaxFields bounds the fields of a request (Seen.Fields): fasthttp keeps
// an entry of 56 bytes (and the name's own allocation) per field in the
// connection's context, and reuses that table at its largest for every
// request after, so 16 KiB of tiny fields ("a:", thousands of them) held
// over ten times their size per connection. Envoy and Apache refuse more
// than 100 by default.
const MaxFields = 200

// TooManyRemovals reports whether Sanitize, for a peer trusted or not,
// would remove more than MaxRemoved fields from the fields s was scanned
// from, or their Connection fields list more than MaxRemoved names.
func (s *Seen) TooManyRemovals(h *fasthttp.RequestHeader, trustForwarded bool) bool {
	n := s.Hops
	if !trustForwarded {
		n += s.Forwardeds
	}
	if n > MaxRemoved {
		return true
	}
	if s.Hops == 0 { // Connection is a hop-by-hop field
		return false
	}
	names := 0
	for _, v := range h.PeekAll(fasthttp.HeaderConnection) {
		forEachToken(v, func([]byte) { names++ })
	}
	return names > MaxRemoved
}

// NeedsSanitize reports whether Sanitize, for a peer trusted or not, has
// anything to remove from the fields s was scanned from.
func (s *Seen) NeedsSanitize(trustForwarded bool) bool {
	return s.Hops > 0 || !trustForwarded && s.Forwardeds > 0
}

// BearerCandidate is BearerCandidate of the fields s was scanned from
// (which must not have changed since).
func (s *Seen) BearerCandidate(maxLen int) ([]byte, bool) {
	if s.Authorizations != 1 {
		return nil, false
	}
	return bearerCandidate(s.Authorization, maxLen)
}

// Scan reads, in one pass over the client's header fields, what the
// request path would otherwise look up one name at a time (each lookup
// re-validates and re-cases its name, or walks every field). Names match
// in any case. A field's first letter (and for some, its length) decides
// which names it is compared with: every name Sanitize removes starts with
// one of b, c, d, e, f, g, h, j, k, n, o, p, r, s, t, u, v, w or x, so most
// fields (Host, Accept, User-Agent...) cost one switch.
func Scan(h *fasthttp.RequestHeader) Seen {
	var s Seen
	seenID := false
	for k, v := range h.All() {
		s.Fields++
		if len(k) == 0 {
			continue
		}
		if bytes.IndexByte(k, ' ') >= 0 {
			s.SpaceInName = true
		}
		c := k[0] | 0x20 // ASCII lower case for letters
		switch c {
		case 'a':
			if authorizationName(k) { // exactly PeekAll's match
				if s.Authorizations == 0 {
					s.Authorization = v
				}
				s.Authorizations++
			}
			continue
		case 's': // Sec-WebSocket-Protocol; sw8, sw8-*; sentry-trace; ssl-client-*
			s.WSProtocol = s.WSProtocol || len(k) == len("Sec-WebSocket-Protocol") && equalFold(k, "sec-websocket-protocol")
			if len(k) != len("sentry-trace") && (len(k) < len("sw8") || k[1]|0x20 != 'w' && k[1]|0x20 != 's') {
				continue
			}
		case 'u': // Upgrade, uber-trace-id, uberctx-*; not User-Agent
			if len(k) != len("Upgrade") && (len(k) < 2 || k[1]|0x20 != 'b') {
				continue
			}
		case 'c', 'k': // Connection, Keep-Alive; Client-IP, Client-Cert, Client-Cert-Chain, CloudFront-Forwarded-Proto;
			// and every CF-* name (CF-Connecting-IP, Cf-Pseudo-IPv4, CF-Visitor, Cf-Access-*, cf-cert-*)
			if len(k) >= len("cf") && k[1]|0x20 == 'f' {
				break
			}
			if len(k) != len("Connection") && len(k) != len("Client-IP") && len(k) != len("Client-Cert") &&
				len(k) != len("Client-Cert-Chain") && len(k) != len("CloudFront-Forwarded-Proto") {
				continue
			}
		case 'r': // Remote-User, Remote-Name, Remote-Email, Remote-Groups; not Referer, Range
			if len(k) < len("Remote-User") || len(k) > len("Remote-Groups") {
				continue
			}
		case 'd': // Do-Connecting-Ip
			if len(k) != len("Do-Connecting-Ip") {
				continue
			}
		case 'e': // Expect, elastic-apm-traceparent
			if len(k) != len("Expect") && len(k) != len("elastic-apm-traceparent") {
				continue
			}
		case 'n': // newrelic
			if len(k) != len("newrelic") {
				continue
			}
		case 'b': // baggage, b3
			if len(k) != len("baggage") && len(k) != len("b3") {
				continue
			}
		case 'g', 'j', 'o': // grpc-trace-bin, jaeger-*, ot-tracer-*, ot-baggage-*; not Origin
			if len(k) < len("ot-tracer-") {
				continue
			}
		case 'p': // Proxy-Connection, Proxy-Authenticate, Proxy-Authorization, Proxy-Client-IP
			if len(k) < len("Proxy-Client-IP") {
				continue
			}
		case 'h': // HTTP_X_FORWARDED_FOR, HTTP_CLIENT_IP (isCGIName); not Host
			if len(k) <= len("HTTP_") {
				continue
			}
		case 'w': // WL-Proxy-Client-IP
			if len(k) != len("WL-Proxy-Client-IP") {
				continue
			}
		case 'v': // Via
			if len(k) != len("Via") {
				continue
			}
		case 't', 'x', 'f': // also True-Client-IP, X-Real-IP, Fastly-Client-IP, Fly-Client-IP...
		default:
			continue
		}
		if removedAlways(k) {
			s.Hops++
		} else if removedUntrusted(k) {
			s.Forwardeds++
		}
		switch len(k) {
		case len("Upgrade"):
			s.Upgrade = s.Upgrade || equalFold(k, "upgrade")
		case len(APIKeyHeader):
			s.APIKey = s.APIKey || equalFold(k, APIKeyHeader)
		case len("X-Request-Id"):
			if !seenID && asciiFold(k, "x-request-id") { // exactly Peek's match: no '_' for '-'
				s.RequestID, seenID = v, true
			}
		}
	}
	return s
}

// UpgradeOf reads the upgrade a request asks for; call it before Sanitize,
// which removes the headers it reads.
func UpgradeOf(h *fasthttp.RequestHeader) Upgrade {
	var ws, h2c, any bool
	for _, v := range h.PeekAll("Upgrade") {
		forEachToken(v, func(tok []byte) {
			any = true
			if i := bytes.IndexByte(tok, '/'); i >= 0 { // protocol/version
				tok = tok[:i]
			}
			switch {
			case equalFold(tok, "websocket"):
				ws = true
			case equalFold(tok, "h2c"):
				h2c = true
			}
		})
	}
	if h2c {
		return UpgradeH2C
	}
	if !any {
		return UpgradeNone
	}
	if ws {
		conn := false
		for _, v := range h.PeekAll(fasthttp.HeaderConnection) {
			forEachToken(v, func(tok []byte) {
				if equalFold(tok, "upgrade") {
					conn = true
				}
			})
		}
		if conn {
			return UpgradeWebSocket
		}
	}
	return UpgradeOther
}

// ProtocolBearerPrefix marks the access token among the offered WebSocket
// subprotocols, for browsers that cannot set Authorization on a
// WebSocket: "Sec-WebSocket-Protocol: chat, bearer.<token>".
const ProtocolBearerPrefix = "bearer."

// TakeProtocolBearer removes every "bearer.<token>" element from the
// request's Sec-WebSocket-Protocol (the header goes when nothing else is
// left) and returns the first token, copied; nil when there was none.
// differ reports that another element named another token (the caller
// refuses an upgrade that offers two credentials). A
// field of the name spelled with '_' (Sec_WebSocket_Protocol) is no
// WebSocket header and gives no token, but an app that reads '_' as '-'
// (CGI's HTTP_SEC_WEBSOCKET_PROTOCOL) would find the token in it: such a
// field that holds a bearer element is removed.
func TakeProtocolBearer(h *fasthttp.RequestHeader) (tok []byte, differ bool) {
	const name = "Sec-WebSocket-Protocol"
	delUnderscoreBearers(h, name)
	all := h.PeekAll(name)
	if len(all) == 0 {
		return nil, false
	}
	found := false
	kept := make([]byte, 0, 64)
	for _, v := range all {
		forEachToken(v, func(p []byte) {
			if len(p) >= len(ProtocolBearerPrefix) && equalFold(p[:len(ProtocolBearerPrefix)], ProtocolBearerPrefix) {
				if !found {
					tok = append([]byte(nil), p[len(ProtocolBearerPrefix):]...)
				} else if !bytes.Equal(tok, p[len(ProtocolBearerPrefix):]) {
					differ = true
				}
				found = true
				return
			}
			if len(kept) > 0 {
				kept = append(kept, ", "...)
			}
			kept = append(kept, p...)
		})
	}
	if !found {
		return nil, false
	}
	h.Del(name)
	if len(kept) > 0 {
		h.SetBytesV(name, kept)
	}
	if tok == nil {
		tok = []byte{}
	}
	return tok, differ
}

// delUnderscoreBearers removes the fields named name spelled with '_' for
// '-' (any case) whose value holds a "bearer." element.
func delUnderscoreBearers(h *fasthttp.RequestHeader, name string) {
	delFields(h, func(k, v []byte) bool {
		return len(k) == len(name) && bytes.IndexByte(k, '_') >= 0 && equalFold(k, name) && hasBearerElement(v)
	})
}

// delFields removes every field whose name and value match says: each
// pass deletes one name as it is stored (every field of that spelling).
// Names are header names of at most 64 bytes.
func delFields(h *fasthttp.RequestHeader, match func(k, v []byte) bool) {
	for range 64 { // bounded: each pass deletes one spelling's fields
		var spelled [64]byte
		n := 0
		for k, v := range h.All() {
			if match(k, v) {
				n = copy(spelled[:], k)
				break
			}
		}
		if n == 0 {
			return
		}
		keep := h.DisableNormalizing() // the name as stored
		h.DelBytes(spelled[:n])
		if !keep {
			h.EnableNormalizing()
		}
	}
}

// hasBearerElement reports whether a Sec-WebSocket-Protocol value holds a
// "bearer." element, or an element that is no token and holds "bearer."
// (strayBearer).
func hasBearerElement(v []byte) bool {
	found := false
	forEachToken(v, func(p []byte) {
		found = found || len(p) >= len(ProtocolBearerPrefix) && equalFold(p[:len(ProtocolBearerPrefix)], ProtocolBearerPrefix) ||
			strayBearer(p)
	})
	return found
}

// ProtocolBearerMalformed reports whether the request's
// Sec-WebSocket-Protocol holds an element that is no token and holds
// "bearer." in any case (strayBearer): "chat bearer.<token>",
// "chat;bearer.<token>", a quoted "bearer.<token>". RFC 6455 makes the
// field a comma list of tokens, and TakeProtocolBearer takes out the
// elements that are "bearer.<token>" whole; the token of such an element
// would reach the app in the field it forwards (and the app's logs). The
// request is refused rather than guessed at: a browser sends each
// subprotocol as a token of its own.
func ProtocolBearerMalformed(h *fasthttp.RequestHeader) bool {
	bad := false
	for _, v := range h.PeekAll("Sec-WebSocket-Protocol") {
		forEachToken(v, func(p []byte) { bad = bad || strayBearer(p) })
	}
	return bad
}

// strayBearer reports whether a Sec-WebSocket-Protocol element is no
// token (RFC 9110 section 5.6.2) and holds "bearer." in any case.
func strayBearer(p []byte) bool {
	token := true
	for _, c := range p {
		token = token && tchar[c]
	}
	if token {
		return false
	}
	for i := 0; i+len(ProtocolBearerPrefix) <= len(p); i++ {
		if asciiFold(p[i:i+len(ProtocolBearerPrefix)], ProtocolBearerPrefix) {
			return true
		}
	}
	return false
}

// tchar marks the bytes of an RFC 9110 token.
var tchar = func() (t [256]bool) {
	for _, b := range []byte("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
		t[b] = true
	}
	return t
}()

// IsToken reports whether s is an RFC 9110 token (section 5.6.2): what a
// method or a field name is.
func IsToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if !tchar[s[i]] {
			return false
		}
	}
	return s != ""
}

// APIKeyHeader is the header an API key may be sent in (besides
// Authorization: Bearer).
const APIKeyHeader = "X-Api-Key"

// APIKey reports the X-API-Key headers of the request, under any spelling
// of the name ('_' read as '-', any case): how many there are and the
// first one's value (aliasing h).
func APIKey(h *fasthttp.RequestHeader) (v []byte, n int) {
	for k, val := range h.All() {
		if len(k) == len(APIKeyHeader) && equalFold(k, APIKeyHeader) {
			if n == 0 {
				v = val
			}
			n++
		}
	}
	return v, n
}

// DelAPIKey removes every X-API-Key header (any spelling of the name).
func DelAPIKey(h *fasthttp.RequestHeader) {
	delFields(h, func(k, _ []byte) bool { return len(k) == len(APIKeyHeader) && equalFold(k, APIKeyHeader) })
}

// hostBytes are the bytes a Host value may hold (RFC 9110 section 7.2:
// uri-host [":" port], RFC 3986 section 3.2.2): a reg-name's unreserved
// letters, digits and "-._~", its percent-encoding and sub-delims but the
// comma, an IP literal's brackets and the port's colon. Host is one
// uri-host, never a list, but the proxy forwards it as X-Forwarded-Host
// too, a list field whose elements apps split at commas and of which
// they take one (the first, or the last): "evil.example,app.example"
// was one host to the proxy and a front that matched it whole, and
// either of two to the app. No host name holds a comma.
var hostBytes = func() (t [256]bool) {
	for _, b := range []byte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+;=:[]") {
		t[b] = true
	}
	return t
}()

// ValidHost reports whether host holds only the bytes a Host value may:
// no userinfo ("u:p@a", which fasthttp reads as the target's and its
// client writes to the upstream as "Authorization: Basic"), no quote,
// angle bracket, backslash, space, control or non-ASCII byte, which an app
// that builds links or redirects from Host or X-Forwarded-Host would
// write into its pages, no "/", "?" or "#", which end a host in a URL, and
// no ",", which makes it a list in X-Forwarded-Host.
func ValidHost(host []byte) bool {
	for _, b := range host {
		if !hostBytes[b] {
			return false
		}
	}
	return true
}
