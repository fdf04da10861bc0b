// Package forward builds the proxy's fasthttp clients: the streaming
// HostClient of each upstream (coreapi or an app) that forwarded requests
// go through, with paths sent verbatim and timeouts never retried, and the
// buffered client of the proxy's own calls; and it classifies a client's
// errors into the answer and metric label of a failed forward. The
// forwarding itself is the server package's (server.forward).
package forward

import (
	"crypto/tls"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tollgate-auth/tollgate/shared/fasttransport"

	"github.com/valyala/fasthttp"
)

// Options configure the upstream client.
type Options struct {
	Addr        string // host:port of coreapi
	MaxConns    int
	MaxConnWait time.Duration
	IdleTimeout time.Duration // keep below coreapi's idle timeout
	Timeout     time.Duration // read and write timeout per request
	// TLS, when set, makes the client speak TLS (an https:// upstream),
	// the server's name taken from Addr.
	TLS *tls.Config
	// Stray, when set, is told of each upstream connection closed because
	// the upstream sent bytes outside an answer (NewHostClient only).
	Stray func(fasttransport.Stray)
}

// ResponseHeaderBytes is the largest upstream answer header a forwarded
// request takes (a larger one is 502).
const ResponseHeaderBytes = 16 << 10

// NewHostClient returns the client used for forwarded requests: responses
// are streamed, paths are sent verbatim (they are already normalized), and
// every wait is bounded. Its transport (shared/fasttransport) forwards an
// answer without allocating: one whose body arrived with its header is
// read from the connection's buffer, any other is streamed through a
// pooled reader, where fasthttp's own transport allocates four objects per
// request for a streamed answer. Its connections are dialled by newDial:
// an IPv6 upstream is reached, an IPv4 address preferred.
func NewHostClient(o Options) *fasthttp.HostClient {
	hc := &fasthttp.HostClient{
		Addr: o.Addr,
		// No Name: fasthttp writes it as the User-Agent of a request
		// without one, and the app would take the proxy for its client.
		NoDefaultUserAgentHeader:      true,
		MaxConns:                      o.MaxConns,
		MaxConnWaitTimeout:            o.MaxConnWait,
		MaxIdleConnDuration:           o.IdleTimeout,
		ReadTimeout:                   o.Timeout,
		WriteTimeout:                  o.Timeout,
		DisablePathNormalizing:        true,
		DisableHeaderNamesNormalizing: false,
		StreamResponseBody:            true,
		MaxResponseBodySize:           0, // streamed: no limit on what coreapi sends
		// An answer's header may be as large as a request's (16 KiB, the
		// listener's ReadBufferSize: a large Set-Cookie or
		// Content-Security-Policy); fasthttp's default of 4 KiB made such
		// an answer a 502. The buffers are pooled per request in flight,
		// not per connection.
		ReadBufferSize: ResponseHeaderBytes,
		// An answer fasthttp cannot read is not quoted in its error (a
		// cookie the upstream set would reach the proxy's log).
		SecureErrorLogMessage: true,
	}
	if o.TLS != nil {
		hc.IsTLS, hc.TLSConfig = true, o.TLS.Clone()
	}
	hc.DialTimeout = newDial(hc.IsTLS, net.DefaultResolver)
	hc.RetryIfErr = noRetry
	hc.Transport = fasttransport.New(hc, o.Stray)
	return hc
}

// noRetry is the retry policy of a client for forwarded requests: fasthttp
// never sends one again itself. The request is signed, and a retry is
// signed anew: the server retries (see Retry).
func noRetry(*fasthttp.Request, int, error) (resetTimeout, retry bool) { return false, false }

// retryOnFresh is the retry policy of the proxy's own client: fasthttp
// asks it after a failed attempt, and retries once as Retry allows.
func retryOnFresh(hc *fasthttp.HostClient) fasthttp.RetryIfErrFunc {
	return func(req *fasthttp.Request, attempts int, err error) (resetTimeout, retry bool) {
		return false, attempts == 1 && Retry(hc, req, err)
	}
}

// Retry reports whether a request whose first upstream call failed with
// err is to be sent once more. It is when the request is idempotent (GET,
// HEAD, PUT: the methods fasthttp calls idempotent), its body is not
// streamed, and its connection was closed or reset before a byte of the
// answer came back (Stale): a pooled keep-alive connection the upstream
// has closed, because it restarted, died or timed the connection out. The
// client's other idle connections are then closed, since when one is
// stale they usually all are: the retry dials afresh, and an upstream that
// is gone is answered as refused (503) instead of each stale connection
// failing a request in turn. Timeouts are never retried: fasthttp's
// default retried them up to five times, so a hung upstream held a GET for
// five times UPSTREAM_TIMEOUT. Nor is a request whose write failed after
// part of it went out (fasttransport.PartlySentError, an upload the
// upstream reset in the middle): the upstream may have read part of its
// body and acted on it, and would get it twice; only a write that failed
// before a byte of the request went out (a stale pooled connection) is
// known to have left it nothing.
func Retry(hc *fasthttp.HostClient, req *fasthttp.Request, err error) bool {
	var partly *fasttransport.PartlySentError
	if !Stale(err) || req.IsBodyStream() || errors.As(err, &partly) {
		return false
	}
	h := &req.Header
	if !h.IsGet() && !h.IsHead() && !h.IsPut() {
		return false
	}
	hc.CloseIdleConnections()
	return true
}

// Stale reports whether err says the upstream closed or reset the
// connection before a byte of its answer arrived (fasttransport.Gone, the
// transport's own test of a connection that ended): on a pooled
// connection, that it had gone stale. Nothing of an answer was read, so
// the upstream never answered this request (it may still have processed
// one that is not idempotent).
func Stale(err error) bool { return fasttransport.Gone(err) }

// NewInternalClient returns the buffered client for the proxy's own calls
// (projection fetches, API-key resolution and use reports), over TLS when
// o.TLS is set (an https:// IDENTITY_URL; its requests are then marked
// https: fasthttp refuses a request whose scheme is not its client's),
// its connections dialled by newDial as the forwarding client's.
func NewInternalClient(o Options) *fasthttp.HostClient { return newInternalClient(o, nil) }

// newInternalClient is NewInternalClient, its connections dialed by dial
// (nil: by newDial's dialer, as the forwarding client's).
func newInternalClient(o Options, dial fasthttp.DialFuncWithTimeout) *fasthttp.HostClient {
	hc := &fasthttp.HostClient{
		Addr:                     o.Addr,
		Name:                     "tollgate-authproxy",
		NoDefaultUserAgentHeader: true,
		MaxConns:                 max(o.MaxConns/4, 16),
		MaxConnWaitTimeout:       o.MaxConnWait,
		MaxIdleConnDuration:      o.IdleTimeout,
		ReadTimeout:              o.Timeout,
		WriteTimeout:             o.Timeout,
		DisablePathNormalizing:   true,
		MaxResponseBodySize:      1 << 20,
		SecureErrorLogMessage:    true, // as NewHostClient
	}
	if dial == nil {
		dial = newDial(o.TLS != nil, net.DefaultResolver)
	}
	hc.DialTimeout = dial
	if o.TLS != nil {
		hc.IsTLS, hc.TLSConfig = true, o.TLS.Clone()
		hc.DialTimeout = func(addr string, timeout time.Duration) (net.Conn, error) {
			c, err := dial(addr, timeout)
			if err != nil {
				return nil, err
			}
			return &quietConn{Conn: c}, nil
		}
	}
	hc.RetryIfErr = retryOnFresh(hc)
	return hc
}

// quietConn is the socket under a TLS connection of the internal client:
// once a read or write on it failed (timed out, reset, ended), nothing
// more is written on it, and the next write closes it instead. fasthttp's
// transport closes a connection whose exchange failed, and Go's
// tls.Conn.Close writes TLS's close_notify alert first with a deadline of
// its own, 5 s: to a coreapi that stopped reading (a use report larger
// than the socket buffers hold, to a host gone from the network) that
// write waited all of it before the call's error came back, holding its
// connection slot. The alert is left out as the forwarding transport
// leaves it out after a failed exchange (shared/fasttransport abandon); a
// connection closed after complete exchanges still sends it.
type quietConn struct {
	net.Conn
	failed atomic.Bool
}

func (c *quietConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.failed.Store(true)
	}
	return n, err
}

func (c *quietConn) Write(p []byte) (int, error) {
	if c.failed.Load() {
		_ = c.Conn.Close()
		return 0, net.ErrClosed
	}
	n, err := c.Conn.Write(p)
	if err != nil {
		c.failed.Store(true)
	}
	return n, err
}

// isTLSFailure reports whether err is a failed TLS handshake.
func isTLSFailure(err error) bool {
	var cv *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	var alert tls.AlertError
	return errors.As(err, &cv) || errors.As(err, &rh) || errors.As(err, &alert)
}

// Failure is how a forwarding error is answered.
type Failure int

// Failures.
const (
	// Unavailable: 503 with Retry-After; the upstream is down, unknown,
	// saturated, or closed or reset the connection before answering.
	Unavailable Failure = iota
	Timeout             // 504
	BadGateway          // 502
)

// Classify maps a client error to a failure and a metric label.
func Classify(err error) (Failure, string) {
	var op *net.OpError
	var dns *net.DNSError
	switch {
	case errors.As(err, &dns):
		return Unavailable, "dns"
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return Unavailable, "no_free_conns"
	case errors.Is(err, fasthttp.ErrDialTimeout):
		return Unavailable, "dial_timeout"
	case errors.Is(err, syscall.ECONNREFUSED), errors.As(err, &op) && op.Op == "dial":
		return Unavailable, "connect"
	case isTLSFailure(err):
		// The handshake with an https:// upstream failed (its certificate
		// does not verify, it does not speak TLS): nothing was sent.
		return Unavailable, "tls"
	case errors.Is(err, fasthttp.ErrTimeout):
		return Timeout, "timeout"
	case Stale(err):
		// Closed or reset before the first byte of an answer: the
		// upstream is going or gone (as a proxy reports "reset before
		// headers"); an idempotent request was already retried once on a
		// fresh connection.
		return Unavailable, "closed"
	}
	return BadGateway, "transport"
}
