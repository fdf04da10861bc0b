package server

import (
	"bytes"
	"errors"
	"log/slog"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/tollgate-auth/tollgate/authproxy/internal/decide"
	"github.com/tollgate-auth/tollgate/authproxy/internal/forward"
	"github.com/tollgate-auth/tollgate/authproxy/internal/headers"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/streams"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
	"github.com/tollgate-auth/tollgate/shared/fasttransport"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/valyala/fasthttp"
)

var (
	errH2C            = &httpError{status: 400, code: problem.CodeBadRequest, detail: "Upgrade: h2c is not supported"}
	errUpgradeRequest = &httpError{status: 400, code: problem.CodeBadRequest,
		detail: "a WebSocket upgrade is a GET without a body"}
	errProtocolBearer = &httpError{status: 400, code: problem.CodeBadRequest,
		detail: `a bearer offered in Sec-WebSocket-Protocol must be an element of its own: "chat, bearer.<token>"`}
	errProtocolAmbiguous = &httpError{status: 400, code: problem.CodeAmbiguousCredentials,
		detail: "a bearer offered in Sec-WebSocket-Protocol must be the only credential, or the token of Authorization"}
	errHandshake = &httpError{status: 400, code: problem.CodeBadRequest,
		detail: "a WebSocket upgrade needs one Sec-WebSocket-Key (16 bytes in base64) and Sec-WebSocket-Version: 13"}
	errStreamsProxy = &httpError{status: 503, code: problem.CodeUnavailable, detail: "too many open streams on this proxy", retryAfter: true}
	errStreamsUser  = &httpError{status: 429, code: problem.CodeTooManyRequests, detail: "too many open streams for this user", retryAfter: true}
	errStreamsIP    = &httpError{status: 429, code: problem.CodeTooManyRequests, detail: "too many open streams from this address", retryAfter: true}
)

// upgradeRefused runs before the headers are sanitized (which removes
// Upgrade): it notes a WebSocket upgrade and refuses h2c.
func (s *Server) upgradeRefused(h *fasthttp.RequestHeader, st *state) error {
	// The lookup runs only when the field it reads is present
	// (headers.Scan): most requests have none.
	if st.seen.Upgrade {
		st.upgrade = headers.UpgradeOf(h)
	}
	if st.upgrade == headers.UpgradeH2C {
		st.outcome = "h2c"
		return errH2C
	}
	return nil
}

// protocolBearer takes a bearer offered as a WebSocket subprotocol
// ("bearer.<token>") out of Sec-WebSocket-Protocol, on every request
// that has one, before the headers are sanitized, so that it never
// reaches an upstream; on a WebSocket upgrade without Authorization it
// becomes the request's bearer. An upgrade that offers it beside an
// Authorization that is not one field "Bearer" with the same token, or
// offers two bearer elements with different tokens, names two
// credentials and is refused (errProtocolAmbiguous): one was dropped
// unread, and which identity the WebSocket got depended on a precedence
// the client could not see.
func (s *Server) protocolBearer(h *fasthttp.RequestHeader, st *state) error {
	tok, differ := headers.TakeProtocolBearer(h)
	if tok == nil || st.upgrade != headers.UpgradeWebSocket {
		return nil
	}
	auth := h.PeekAll(fiber.HeaderAuthorization)
	switch {
	case differ:
	case len(auth) == 0:
		h.Set(fiber.HeaderAuthorization, "Bearer "+string(tok))
		st.wsBearer = true
		return nil
	case len(auth) == 1:
		if b, ok := headers.BearerCandidate(h, len(auth[0])); ok && bytes.Equal(b, tok) {
			return nil // the same token: Authorization carries it
		}
	}
	st.outcome = "ambiguous_credentials"
	return errProtocolAmbiguous
}

// stream hands a WebSocket upgrade (on a route with websocket: true) or a
// request of a route with a stream_timeout to the streams manager; the
// request is authorized and signed, routed by rt.
func (s *Server) stream(c *fiber.Ctx, st *state, rt *Router, route *rules.Route, cl *tokens.Claims) error {
	hc := rt.Clients[route.Upstream]
	if st.wsBearer {
		c.Request().Header.Del(fiber.HeaderAuthorization)
	}
	if s.d.Streams == nil {
		return unavailable("streams not enabled")
	}
	// st.ip: the client address forward resolved (and signed), the
	// X-Forwarded-For client of a trusted peer.
	r := streams.Request{Ctx: c.Context(), Addr: hc.Addr, Route: route, Claims: cl, RequestID: string(st.reqID),
		Path: string(st.path), Method: string(c.Request().Header.Method()), Timeout: hc.ReadTimeout, Table: rt.Table,
		ClientIP: string(st.ip)}
	if hc.IsTLS {
		r.TLS = hc.TLSConfig
	}
	if s.o.CORS != nil {
		r.Head = func() { s.corsHeaders(c) }
	}
	if st.trace.on {
		r.TraceID = string(st.trace.id[:])
	}
	if s.o.AccessLog {
		r.Ended = s.streamEnded(c, st)
	}
	var err error
	if st.upgrade == headers.UpgradeWebSocket && route.Websocket {
		req := c.Request()
		// ContentLength: -1 chunked, -2 none (fasthttp's identity body).
		if !req.Header.IsGet() || len(req.Body()) > 0 || req.Header.ContentLength() > 0 || req.Header.ContentLength() == -1 {
			st.outcome = "bad_upgrade"
			return errUpgradeRequest
		}
		err = s.d.Streams.ServeWebSocket(r)
	} else {
		err = s.d.Streams.ServeStream(r)
	}
	var closed *streams.ClosedError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fasttransport.ErrAnsweredEarly):
		// The upstream answered before it read the whole request (an
		// upload refused early), and its answer is in the response, as
		// retry passes one on: the client's connection closes after it.
		st.closeConn = true
		return nil
	case errors.As(err, &closed):
		return s.closedRefusal(c, st, closed)
	case errors.Is(err, streams.ErrHandshake):
		st.outcome = "bad_upgrade"
		return errHandshake
	case errors.Is(err, streams.ErrDraining):
		return unavailable("shutting down")
	case errors.Is(err, streams.ErrProxyLimit):
		return errStreamsProxy
	case errors.Is(err, streams.ErrUserLimit):
		return errStreamsUser
	case errors.Is(err, streams.ErrIPLimit):
		return errStreamsIP
	case errors.Is(err, streams.ErrDial):
		label := "connect"
		if _, l := forward.Classify(err); l == "tls" {
			label = l
		}
		s.d.Metrics.UpstreamErrors.WithLabelValues("stream", label).Inc()
		return unavailable("upstream unavailable")
	}
	kind, label := forward.Classify(err)
	s.d.Metrics.UpstreamErrors.WithLabelValues("stream", label).Inc()
	s.logFailure(st, slog.LevelWarn, "stream", st.logArgs("err", logging.Redact(err.Error()))...)
	if kind == forward.Timeout {
		return &httpError{status: 504, code: problem.CodeUpstreamDown, detail: "upstream timed out"}
	}
	return &httpError{status: 502, code: problem.CodeUpstreamDown, detail: "upstream failed"}
}

// closedRefusal answers a stream closed before its upstream answered
// (streams.ClosedError: revoked, expired, its key removed, shut down),
// to which nothing was sent yet: as a request refused for the same reason
// is answered (authnError, refusal), which the client's next attempt gets
// too. A stream whose route a reload changed is answered 503 with
// Retry-After: its request, sent again, is routed by the new rules.
func (s *Server) closedRefusal(c *fiber.Ctx, st *state, e *streams.ClosedError) error {
	st.outcome = e.Reason
	if out, ok := decide.Named(e.Reason); ok {
		if out == decide.DenyMFAEnrollment || out == decide.DenyStepUp {
			return authnError(out, int64(e.MaxAuthAge/time.Second))
		}
		return s.refusal(c, st, out, errInvalidToken)
	}
	switch e.Reason {
	case streams.ReasonNoMembership, streams.ReasonTokenExpired, streams.ReasonKeyRemoved:
		s.logInvalid(c, st, errors.New("stream closed before its upstream answered: "+e.Reason))
		return errInvalidToken
	case streams.ReasonUnavailable:
		return unavailable("identity service unavailable")
	case streams.ReasonShutdown:
		return unavailable("shutting down")
	}
	return unavailable("route changed")
}
