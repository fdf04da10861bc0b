package server

import (
	"bufio"
	"cmp"
	"errors"
	"io"
	"net"
	"slices"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/tollgate-auth/tollgate/authproxy/internal/headers"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/valyala/fasthttp"
)

// Request bodies are read after authorization, not before.
//
// The listener streams bodies (StreamRequestBody): fasthttp reads a
// request's headers and at most the first 8 KiB of its body before the
// handler runs, and leaves the rest on the connection. A body is read
// whole only once the request is allowed, by forward (readBody), growing
// its buffer as the bytes arrive. Before, fasthttp allocated a buffer of
// the declared Content-Length as soon as the headers were read, so a
// client that sent headers alone held MAX_BODY_BYTES (or a route's
// max_body_bytes) of the proxy's memory per connection for READ_TIMEOUT,
// without a credential. A request refused before forwarding has its body
// read and dropped (discardBody), up to its limit, so that the client
// reads its answer (a 401 to an upload with an expired token) and the
// connection stays usable, as when the body was read first.

// maxKeptBody is the largest body buffer a request's pooled state keeps
// for the next request; a larger one is left to the collector.
const maxKeptBody = 64 << 10

// readAhead is how much of a body fasthttp reads with its headers, before
// the handler runs (capped by MAX_BODY_BYTES, the listener's limit).
const readAhead = 8 << 10

var (
	errBodyTimeout   = &httpError{status: 408, code: problem.CodeBadRequest, detail: "request timed out"}
	errBodyMalformed = &httpError{status: 400, code: problem.CodeBadRequest, detail: "malformed request body"}
	// errBodyMemory: the bodies being read at once hold BODY_MEMORY_MB.
	errBodyMemory = &httpError{status: 503, code: problem.CodeUnavailable, retryAfter: true,
		detail: "too many request bodies are being read at once: retry"}
)

// bodyOver reports whether a request's body is longer than limit, as far
// as is known before it is read: a streamed body by its Content-Length (a
// chunked one is counted as it is read, by readBody).
func bodyOver(req *fasthttp.Request, limit int) bool {
	if req.IsBodyStream() {
		return req.Header.ContentLength() > limit
	}
	return len(req.Body()) > limit
}

// readBody reads the body of an allowed request from the connection, up
// to limit bytes (the route's, or MAX_BODY_BYTES), into the request's
// state, so that it is hashed for the signature and forwarded as any body
// read by fasthttp. The buffer grows with the bytes received (doubling,
// never past the declared length), so a client that declares a large
// body and sends little holds little. A failure ends the connection,
// whose position in the body is then unknown.
//
//go:noinline
func (s *Server) readBody(c *fiber.Ctx, st *state, limit int) error {
	req := c.Request()
	h := &req.Header
	n := h.ContentLength() // -1: chunked
	if n >= 0 && n <= min(readAhead, s.o.MaxBodyBytes) {
		// fasthttp read the whole body ahead (up to 8 KiB and
		// MAX_BODY_BYTES, before the handler): it is in memory, and Body
		// takes it from the stream within its own buffer, with no read
		// from the connection that could fail.
		req.Body()
		return nil
	}
	bs := req.BodyStream()
	want := limit + 1 // chunked: a byte over the limit tells it is over
	if n >= 0 {
		want = n // not over limit: authorize checked
	}
	b := st.body[:0]
	// The buffer a previous request left in the state counts too.
	if cap(b) > 0 && !s.holdBody(st, int64(cap(b))) {
		return overMemory(st, b)
	}
	for len(b) < want {
		if len(b) == cap(b) {
			k := min(max(cap(b), 4<<10), want-len(b))
			if !s.holdBody(st, int64(k)) {
				return overMemory(st, b)
			}
			old := cap(b)
			b = slices.Grow(b, k)
			s.countBody(st, int64(cap(b)-old-k)) // the allocator's rounding, counted whatever the bound
		}
		m, err := bs.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if err == io.EOF {
			break
		}
		if err != nil {
			st.body = keepBody(b)
			return s.bodyFailed(st, err)
		}
	}
	st.body = keepBody(b)
	switch {
	case len(b) > limit:
		st.outcome, st.linger = "refused", true // the rest is still coming
		return errTooLarge
	case n >= 0 && len(b) < n:
		st.outcome, st.closeConn = "refused", true
		return errBodyMalformed // the client ended its side early
	case n < 0 && headers.HasTrailers(h):
		// Trailer fields arrive after a chunked body: read now, they
		// would reach the upstream among the headers Sanitize cleaned.
		st.outcome = "trailers"
		return errTrailers
	}
	req.SetBodyRaw(b)
	h.SetContentLength(len(b)) // forwarded with its length, not chunked
	// Signed as of now: the body took its time to arrive after the
	// decision, and the signature's window counts from its timestamp.
	st.authAt = s.d.Now()
	return nil
}

// holdBody counts n more bytes of body buffer for the request, and
// reports whether they fit within BODY_MEMORY_MB (those that do not are
// not counted). observe gives back what a request held when it ends.
func (s *Server) holdBody(st *state, n int64) bool {
	if s.bodyBytes.Add(n) > s.o.BodyMemory && s.o.BodyMemory > 0 && n > 0 {
		s.bodyBytes.Add(-n)
		return false
	}
	st.bodyHeld += n
	return true
}

// countBody counts n more bytes of body buffer for the request whether or
// not they fit (memory already allocated: the allocator's rounding of a
// buffer holdBody let grow).
func (s *Server) countBody(st *state, n int64) {
	s.bodyBytes.Add(n)
	st.bodyHeld += n
}

// overMemory refuses a body BODY_MEMORY_MB has no room for, read into b
// so far: the rest is still coming (linger).
func overMemory(st *state, b []byte) error {
	st.body = keepBody(b)
	st.outcome, st.linger = "refused", true
	return errBodyMemory
}

// keepBody returns b for the request's state to reuse, or nil when it is
// too large to keep.
func keepBody(b []byte) []byte {
	if cap(b) > maxKeptBody {
		return nil
	}
	return b
}

// bodyFailed answers a body that could not be read.
func (s *Server) bodyFailed(st *state, err error) error {
	st.outcome, st.closeConn = "refused", true
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() || errors.Is(err, fasthttp.ErrTimeout) {
		return errBodyTimeout
	}
	s.d.Log.Info("request refused", st.logArgs("status", 400, "err", logging.Redact(err.Error()))...)
	return errBodyMalformed
}

// discardBody reads and drops the body of a request refused before it
// was forwarded, up to its route's limit (or MAX_BODY_BYTES), so that the
// client, which may send it all before reading an answer, reads its
// refusal, and the connection can serve its next request. A body over
// that limit, declared (not read) or chunked (read up to it), ends the
// connection after the answer (linger), as a 413 does.
//
//go:noinline
func (s *Server) discardBody(c *fiber.Ctx, st *state) {
	req := c.Request()
	limit := cmp.Or(st.bodyLimit, s.o.MaxBodyBytes)
	n := req.Header.ContentLength()
	if n > limit {
		st.linger = true
		return
	}
	got, err := io.Copy(io.Discard, io.LimitReader(req.BodyStream(), int64(limit)+1))
	switch {
	case err != nil || n >= 0 && got != int64(n):
		st.closeConn = true
	case got > int64(limit):
		st.linger = true // the rest is still coming
	}
	_ = req.CloseBodyStream()
}

// A request refused for a body over its limit ends its connection, while
// its client may still be sending that body: closed with unread bytes,
// the connection would be reset, and a client that sends its whole body
// before it reads (most do, and browsers do not wait for "100 Continue")
// would see a reset instead of the 413. So the answer is written, the
// proxy's side shut, and what still arrives read and dropped for up to
// Options.Linger (DefaultLinger: 5 s), before the connection is closed (as
// nginx's lingering close). At most maxLingering connections linger at
// once; past that, one closes at once, as it did before.
const (
	DefaultLinger = 5 * time.Second
	maxLingering  = 512
)

// linger ends the request's connection after its answer, as above.
// observe calls it last, once the answer is complete.
//
//go:noinline
func (s *Server) linger(c *fiber.Ctx) {
	ctx := c.Context()
	// fasthttp writes no answer on a connection it hands over (a
	// connection it is to close is never handed over): lingerClose writes
	// it. (fasthttp may close the connection without calling the handler,
	// when it fails first: lingering is counted inside.)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(conn net.Conn) {
		// Counted only while it lingers: one past the bound gives its
		// place back before its answer goes out, so the gauge never reads
		// more than maxLingering once the answers are out.
		if s.lingering.Add(1) > maxLingering {
			s.lingering.Add(-1)
			lingerClose(ctx, conn, s.o.Linger, false)
			return
		}
		defer s.lingering.Add(-1)
		lingerClose(ctx, conn, s.o.Linger, true)
	})
}

// lingerClose writes ctx's answer on conn and, when linger, shuts the
// writing side and reads what the client still sends, all within d
// (Options.Linger). fasthttp closes conn when it returns.
func lingerClose(ctx *fasthttp.RequestCtx, conn net.Conn, d time.Duration, linger bool) {
	_ = conn.SetDeadline(time.Now().Add(d))
	ctx.Response.SetConnectionClose()
	w := bufio.NewWriterSize(conn, 4<<10)
	if ctx.Response.Write(w) != nil || w.Flush() != nil || !linger {
		return
	}
	raw := conn
	if u, ok := conn.(interface{ UnsafeConn() net.Conn }); ok {
		raw = u.UnsafeConn()
	}
	if cw, ok := raw.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite() // the client reads the answer, then its end
	}
	_, _ = io.Copy(io.Discard, conn)
}
