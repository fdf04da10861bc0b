// Package forward builds the proxy's fasthttp clients: the streaming
// HostClient of each upstream (coreapi or an app) that forwarded requests
// go through, with paths sent verbatim and timeouts never retried, and the
// buffered client of the proxy's own calls; and it classifies a client's
// errors into the answer and metric label of a failed forward. The
// forwarding itself is the server package's (server.forward).
package forward

import (
	"errors"
	"net"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// Options configure the upstream client.
type Options struct {
	Addr        string // host:port of coreapi
	MaxConns    int
	MaxConnWait time.Duration
	IdleTimeout time.Duration // keep below coreapi's idle timeout
	Timeout     time.Duration // read and write timeout per request
}

// NewHostClient returns the client used for forwarded requests: responses
// are streamed, paths are sent verbatim (they are already normalized), and
// every wait is bounded.
func NewHostClient(o Options) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr:                          o.Addr,
		Name:                          "tollgate-authproxy",
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
		RetryIfErr:                    retryIfErr,
	}
}

// retryIfErr keeps fasthttp's retry of idempotent requests (e.g. on a
// keep-alive connection coreapi has just closed) but never retries a
// timeout: by default fasthttp retries those too, up to five attempts, so a
// hung coreapi held a GET for five times UPSTREAM_TIMEOUT.
func retryIfErr(req *fasthttp.Request, _ int, err error) (resetTimeout, retry bool) {
	var ne net.Error
	if errors.Is(err, fasthttp.ErrTimeout) || (errors.As(err, &ne) && ne.Timeout()) {
		return false, false
	}
	h := &req.Header
	return false, h.IsGet() || h.IsHead() || h.IsPut()
}

// NewInternalClient returns the buffered client for the proxy's own calls
// (projection fetches).
func NewInternalClient(o Options) *fasthttp.HostClient {
	return &fasthttp.HostClient{
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
	}
}

// Failure is how a forwarding error is answered.
type Failure int

// Failures.
const (
	Unavailable Failure = iota // 503, upstream down, unknown or saturated
	Timeout                    // 504
	BadGateway                 // 502
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
	case errors.Is(err, fasthttp.ErrTimeout):
		return Timeout, "timeout"
	}
	return BadGateway, "transport"
}
