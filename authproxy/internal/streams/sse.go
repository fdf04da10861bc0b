package streams

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/headers"
	"github.com/tollgate-auth/tollgate/shared/fasttransport"
	"github.com/tollgate-auth/tollgate/shared/requestid"

	"github.com/valyala/fasthttp"
)

// ServeStream forwards a request of a route with a stream_timeout over a
// connection of its own and streams the answer: every read from the
// upstream is flushed to the client at once (server-sent events are never
// held back), a silence longer than stream_timeout ends it, and the
// proxy's request and write timeouts do not apply once the headers have
// arrived. Closing it (revocation, token expiry, shutdown, idleness) ends
// an event stream (text/event-stream) cleanly (the last chunk), which an
// EventSource sees as the end of the stream and reconnects after; any
// other answer it cuts short, as the upstream cutting it short would: a
// download ended early must not read as whole.
func (m *Manager) ServeStream(r Request) error {
	c, err := m.reserveAt("sse", r.Route.Prefix, r.Claims, r.Route, r.RequestID, originOf(&r))
	if err != nil {
		return err
	}
	if c.Reason() != "" { // closed as it registered
		return m.refuse(c, nil)
	}
	up, err := m.dial(c, r.Addr, r.TLS, m.handshakeTimeout(&r))
	if err != nil {
		if c.Reason() != "" {
			return m.refuse(c, nil)
		}
		m.release(c, ReasonError)
		return err
	}
	ctx := r.Ctx
	// One request per connection: the stream owns it to the end.
	ctx.Request.Header.SetConnectionClose()
	sent := &countedWriter{w: up}
	bw := bufio.NewWriterSize(sent, 4<<10)
	if err = ctx.Request.Write(bw); err == nil {
		err = bw.Flush()
	}
	// cut is the error of a write that failed after part of the request
	// went out: the upstream may have answered without reading the rest
	// (an upload refused early) and then reset or closed the connection.
	// Its answer is read as any other, and passed on (answeredEarly).
	var cut error
	if err != nil {
		if c.Reason() != "" { // closed: the write was woken
			return m.refuse(c, up)
		}
		if sent.n == 0 || errors.Is(err, os.ErrDeadlineExceeded) {
			// Nothing went out, or the upstream is not reading.
			fasttransport.Abandon(up)
			m.release(c, ReasonError)
			return errors.Join(ErrUpstream, err)
		}
		cut = err
	}
	ic := &idleConn{Conn: up}
	resp := fasthttp.AcquireResponse()
	// The header (after any 1xx) through a pooled reader as large as a
	// forwarded answer's; the body, for as long as the stream lasts,
	// through a small one that starts with what came along with the header.
	resp.SkipBody = true
	br := headerReader(ic)
	// A status of 000, which fasthttp would read as 200, is refused in
	// every status line, an interim answer's too.
	if err = fasttransport.SkipInterim(&resp.Header, br); err == nil {
		err = resp.Read(br)
	}
	rest := releaseHeader(br)
	if cut != nil {
		return m.answeredEarly(c, up, ctx, resp, err, after(rest, ic), cut)
	}
	resp.SkipBody = ctx.IsHead()
	if err == nil && !resp.SkipBody && !noBody(resp.StatusCode()) {
		resp.StreamBody = true // read as it is relayed
		err = resp.ReadBody(bufio.NewReaderSize(after(rest, ic), bodyReaderBytes), 0)
	}
	if err == nil {
		m.admit(c)
	}
	if err != nil || c.Reason() != "" {
		fasthttp.ReleaseResponse(resp)
		if c.Reason() != "" {
			// Closed before the upstream answered (the read was woken),
			// or as it did: nothing went to the client yet, which is
			// refused as a new request would be.
			return m.refuse(c, up)
		}
		fasttransport.Abandon(up)
		m.release(c, ReasonError)
		return errors.Join(ErrUpstream, err)
	}
	if resp.StatusCode() == fasthttp.StatusSwitchingProtocols {
		// The request asked for no upgrade (on a stream route the proxy
		// sends none): the upstream's connection no longer speaks HTTP,
		// and the client's must keep doing so.
		fasthttp.ReleaseResponse(resp)
		up.Close()
		m.release(c, ReasonError)
		return errors.Join(ErrUpstream, errSwitched)
	}
	if s := resp.StatusCode(); s < 100 || s > 599 {
		fasthttp.ReleaseResponse(resp)
		up.Close()
		m.release(c, ReasonError)
		return errors.Join(ErrUpstream, errStatus)
	}
	resp.Header.CopyTo(&ctx.Response.Header)
	headers.SanitizeResponse(&ctx.Response.Header)
	if resp.SkipBody || resp.BodyStream() == nil {
		// A HEAD, or an answer that has no body (204, 304): answered as
		// any other response, there is nothing to stream.
		fasthttp.ReleaseResponse(resp)
		up.Close()
		m.release(c, ReasonUpstream)
		return nil
	}
	_ = up.SetDeadline(time.Time{})
	ic.last = time.Now()
	ic.idle = func() time.Duration { return c.rt.Load().StreamTimeout }
	// A reload that changes the route's stream_timeout (Reroute) wakes the
	// read, which then waits for the new one.
	c.setRetime(func() { _ = up.SetReadDeadline(time.Unix(1, 0)) })
	// The proxy writes the answer itself on the hijacked connection, so
	// that the headers leave at once (fasthttp holds them until the first
	// body bytes) and every read is its own flushed chunk. The connection
	// closes after the stream.
	h := &ctx.Response.Header
	// Chunks, or for an HTTP/1.0 client, which cannot read them, the
	// bytes as they come until the connection closes (RFC 9112 section
	// 6.3): no Transfer-Encoding.
	unchunked := !ctx.Request.Header.IsHTTP11()
	if unchunked {
		h.SetContentLength(-2)
	} else {
		h.SetContentLength(-1)
	}
	h.SetConnectionClose()
	h.Set(requestid.Header, r.RequestID)
	if r.Head != nil {
		r.Head()
	}
	head := h.AppendBytes(nil)
	out := &sseClient{m: m}
	if !m.start(c, func(reason string) {
		// Ends the blocked read at once; without TLS's close_notify
		// unless the upstream ended its answer (closeUpstream).
		closeUpstream(up, reason)
		out.closing()
	}) {
		// Closed since it was admitted: its upstream connection is
		// closed, nothing went to the client.
		_ = resp.CloseBodyStream()
		fasthttp.ReleaseResponse(resp)
		ctx.Response.Reset()
		return m.refuse(c, nil)
	}
	ctx.HijackSetNoResponse(true)
	var started atomic.Bool
	m.watchHijack(c, &started, up)
	ctx.Hijack(func(cli net.Conn) {
		if !started.CompareAndSwap(false, true) {
			cli.Close()
			return
		}
		_ = cli.SetDeadline(time.Time{})
		out.set(cli)
		reason := m.relayStream(c, out, resp.BodyStream(), head, unchunked, eventStream(resp.Header.ContentType()))
		up.Close()
		_ = resp.CloseBodyStream()
		fasthttp.ReleaseResponse(resp)
		cli.Close()
		m.release(c, reason)
	})
	return nil
}

// sseClient is the client connection of an event stream, as its close
// sees it: a write in progress when the stream is closed gets CloseWait to
// finish, not WriteTimeout, so that a client that stopped reading does
// not hold the stream (its slot under the caps, its upstream connection,
// a drain) for WriteTimeout after its close.
type sseClient struct {
	m      *Manager
	mu     sync.Mutex
	cli    net.Conn
	closed bool
}

// set is the client connection, once hijacked (its deadlines cleared).
func (o *sseClient) set(cli net.Conn) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cli = cli
	if o.closed {
		_ = cli.SetWriteDeadline(o.m.o.Now().Add(o.m.o.CloseWait))
	}
}

// closing shortens the deadline of a write in progress, and of those to
// come, to CloseWait.
func (o *sseClient) closing() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	if o.cli != nil {
		_ = o.cli.SetWriteDeadline(o.m.o.Now().Add(o.m.o.CloseWait))
	}
}

// write writes p within WriteTimeout, or CloseWait once the stream is
// closed.
func (o *sseClient) write(p []byte) error {
	o.mu.Lock()
	d := o.m.o.WriteTimeout
	if o.closed {
		d = o.m.o.CloseWait
	}
	_ = o.cli.SetWriteDeadline(o.m.o.Now().Add(d))
	o.mu.Unlock()
	_, err := o.cli.Write(p)
	return err
}

// bodyReaderBytes is the reader of a streamed body: chunk sizes are read
// through it, and a read as large as the relay buffer bypasses it.
const bodyReaderBytes = 4 << 10

// maxEarlyBody bounds the body of an answer an upstream sent before it
// read the whole request (answeredEarly): a refusal's short text. A
// longer one is an upstream failure.
const maxEarlyBody = 64 << 10

// answeredEarly ends the stream of a request whose write failed with cut
// after part of it went out. The answer the upstream sent before it reset
// or closed the connection (an upload refused early: a 401, 413 or 415;
// resp's header read with herr, its body to come from body) goes to the
// client as an ordinary answer, read whole, as the proxy passes one on for
// a route without a stream_timeout, and fasttransport.ErrAnsweredEarly is
// returned: the client's connection is to be closed after it. Without an
// answer (or with a broken one, or a body over maxEarlyBody) it is an
// upstream failure, as before. Nothing is streamed: the stream never
// opened.
func (m *Manager) answeredEarly(c *Conn, up net.Conn, ctx *fasthttp.RequestCtx, resp *fasthttp.Response, herr error, body io.Reader, cut error) error {
	defer fasthttp.ReleaseResponse(resp)
	err, status := herr, resp.StatusCode()
	if err == nil && (status < 100 || status > 599 || status == fasthttp.StatusSwitchingProtocols) {
		err = errStatus
	}
	if err == nil && !ctx.IsHead() && !noBody(status) {
		resp.SkipBody, resp.StreamBody = false, false
		err = resp.ReadBody(bufio.NewReaderSize(body, bodyReaderBytes), maxEarlyBody)
	}
	if c.Reason() != "" {
		return m.refuse(c, up)
	}
	fasttransport.Abandon(up)
	if err != nil {
		m.release(c, ReasonError)
		return errors.Join(ErrUpstream, cut)
	}
	resp.Header.CopyTo(&ctx.Response.Header)
	headers.SanitizeResponse(&ctx.Response.Header)
	ctx.Response.SetBody(resp.Body())
	m.release(c, ReasonUpstream)
	return fasttransport.ErrAnsweredEarly
}

// countedWriter counts the bytes written through it.
type countedWriter struct {
	w io.Writer
	n int64
}

func (c *countedWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// noBody reports whether an answer of status has no body (RFC 9110
// section 6.4.1: 1xx, 204, 304).
func noBody(status int) bool {
	return status >= 100 && status < 200 || status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified
}

// errSwitched: the upstream answered 101 (Switching Protocols) to a
// request that asked for no upgrade.
var errSwitched = errors.New("upstream switched protocols on a request without an upgrade")

// errStatus: the upstream's status code is outside 100–599 (fasthttp reads
// any three digits): below 100 the client would get a status line of one
// or two digits, above 599 a code of no class (RFC 9110 section 15).
var errStatus = errors.New("upstream status code outside 100-599")

// eventStream reports whether an answer's Content-Type is an event
// stream (text/event-stream, any case, any parameters).
func eventStream(ct []byte) bool {
	const name = "text/event-stream"
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return bytes.EqualFold(bytes.TrimSpace(ct), []byte(name))
}

// relayStream writes head, then each read of body as a chunk, then the
// last chunk (unchunked: each read as it is, the close ending the body);
// it returns why it ended. An answer the proxy ends before its body did
// (closed, idle) gets the last chunk only when it is an event stream
// (events); otherwise it ends cut short.
func (m *Manager) relayStream(c *Conn, out *sseClient, body io.Reader, head []byte, unchunked, events bool) string {
	cli := out.cli
	// A client that goes away is noticed even while the upstream is
	// silent: it sends nothing else on this connection. The watch ends
	// before this returns: fasthttp takes the hijacked connection's reader
	// back once the handler returns, and a read after that (or during it)
	// would use a reader another connection may hold by then.
	watch := make(chan struct{})
	go func() {
		defer close(watch)
		var b [1]byte
		if _, err := cli.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
			c.Close(ReasonClient)
		}
	}()
	defer func() {
		_ = cli.SetReadDeadline(time.Unix(1, 0)) // in the past: the read returns
		<-watch
	}()
	if err := out.write(head); err != nil {
		return ReasonClient
	}
	bp := m.buf()
	defer m.put(bp)
	buf := *bp
	chunk := make([]byte, 0, 16+len(buf))
	reason := ReasonUpstream
	cut := false // the upstream's body ended before its framing said
	for {
		if r := c.Reason(); r != "" {
			// Closed: nothing more reaches the client, not even what was
			// read before the close and not yet relayed (the events that
			// came along with the header of a stream closed during its
			// handshake, a reader's read-ahead), which the closed
			// upstream connection no longer stops.
			reason = r
			break
		}
		n, err := body.Read(buf)
		if n > 0 {
			p := buf[:n]
			if !unchunked {
				chunk = strconv.AppendInt(chunk[:0], int64(n), 16)
				chunk = append(append(append(chunk, "\r\n"...), buf[:n]...), "\r\n"...)
				p = chunk
			}
			if werr := out.write(p); werr != nil {
				c.Close(ReasonClient)
				return ReasonClient
			}
			m.m.down.Add(float64(n))
			c.toClient += int64(n)
		}
		if err == nil {
			continue
		}
		switch {
		case c.Reason() != "":
			reason = c.Reason()
		case errors.Is(err, os.ErrDeadlineExceeded):
			reason = ReasonIdle
		case errors.Is(err, io.EOF):
		default:
			reason, cut = ReasonError, true
		}
		break
	}
	c.Close(reason) // first: the client's own close after the end is no reason
	// A clean end when the upstream ended its answer, or when the proxy
	// ends an event stream: an EventSource reconnects (and is authorized
	// anew). An answer the upstream cut short (a connection closed before
	// its Content-Length or its last chunk), and any other answer the
	// proxy ends before its body did (revoked, expired, idle, shut down),
	// is cut short for the client too: the connection closes without the
	// last chunk, so that a download is not taken for whole (the last
	// chunk after 10 of a file's 100 bytes made those 10 the file); to an
	// HTTP/1.0 client, which reads the body until the close, the
	// connection is reset instead.
	if reason != ReasonUpstream && !events {
		cut = true
	}
	switch {
	case !cut && !unchunked: // unchunked: the close ends it
		_ = out.write([]byte("0\r\n\r\n"))
	case cut && unchunked:
		// The close would end the body as whole: a reset says it is not.
		Reset(cli)
	}
	return c.Reason()
}

// idleConn, once idle is set, bounds each read by the route's
// stream_timeout as it is when the read waits (a reload may change it),
// so only a silence longer than that times out.
type idleConn struct {
	net.Conn
	idle func() time.Duration // nil: the handshake's deadline stands
	last time.Time            // the last byte read (or the headers)
}

func (c *idleConn) Read(p []byte) (int, error) {
	if c.idle == nil {
		return c.Conn.Read(p)
	}
	for {
		idle := c.idle()
		c.arm(idle)
		if c.idle() != idle { // retimed meanwhile
			continue
		}
		n, err := c.Conn.Read(p)
		if n > 0 {
			c.last = time.Now()
		}
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) && (c.idle() == 0 || time.Since(c.last) < c.idle()) {
			continue // woken by a retime: wait for the new stream_timeout
		}
		return n, err
	}
}

// arm sets the read deadline at idle after the last byte (none for 0).
func (c *idleConn) arm(idle time.Duration) {
	var at time.Time
	if idle > 0 {
		at = c.last.Add(idle)
	}
	_ = c.Conn.SetReadDeadline(at)
}
