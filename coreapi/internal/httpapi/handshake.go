package httpapi

import (
	"context"
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/valyala/fasthttp"
)

// HandshakeLogsPerSecond bounds the warnings about failed TLS handshakes
// a second (handshakeFailed): a client that does not trust the
// certificate retries as fast as it likes.
const HandshakeLogsPerSecond = 10

// handshakeFailed reports whether err, an error reading a request on ctx's
// connection, is the TLS handshake of that connection failing (a client
// that does not trust the certificate and says so with an alert, plain
// HTTP sent to the TLS port, a client that sent nothing before the read
// timeout): no request was read, so none is answered, logged or counted
// (Fiber's error handler made it a 502 "Bad Gateway", handleEarly an
// "unmatched" 500 with a "request failed" error). It is counted in
// HandshakeFailures and logged as a warning naming the peer and the
// handshake's error, at most HandshakeLogsPerSecond a second.
func (s *Server) handshakeFailed(ctx *fasthttp.RequestCtx, err error) bool {
	tc, ok := ctx.Conn().(*tls.Conn)
	if !ok || tc.ConnectionState().HandshakeComplete {
		return false
	}
	s.handshakeFailures.Add(1)
	// The read's error is the handshake's: tls.Conn.Read returns it as
	// Handshake does, which keeps it (a second call returns it again).
	if s.log.Enabled(context.Background(), slog.LevelWarn) && s.handshakeLogs.Allow(time.Now(), slog.LevelWarn) {
		s.log.LogAttrs(context.Background(), slog.LevelWarn, "TLS handshake failed",
			slog.String("peer", ctx.RemoteAddr().String()), slog.String("err", err.Error()))
	}
	return true
}

// HandshakeFailures is the number of TLS handshakes that failed on the
// API listener (when it serves TLS): coreapi_tls_handshake_failures_total.
func (s *Server) HandshakeFailures() int64 { return s.handshakeFailures.Load() }
