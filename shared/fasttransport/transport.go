// Package fasttransport is the fasthttp.RoundTripper of a reverse proxy's
// upstream client (HostClient.Transport), for a client with
// StreamResponseBody set: it forwards a response without allocating. A
// client that buffers answers goes through fasthttp's own transport, which
// allocates nothing for them.
//
// fasthttp's own transport, for a streamed response, wraps the body in a
// new reader and three closures on every request (about 210 bytes in four
// objects), and the proxy's collector has to find and free them. This
// transport answers most responses, whose whole body has arrived with their
// header, from the connection's read buffer: the body is copied into the
// response's pooled buffer and the connection goes back to the pool before
// RoundTrip returns. Any other body (larger than what has arrived, chunked,
// or delimited by the connection's end) is streamed through a pooled
// reader, as fasthttp does: it gives the connection back once the server
// has written the body out and closes it instead when the body was not read
// to its end. Its Await waits for the body's first bytes, so that a body
// that fails before them can still be answered with an error.
//
// It keeps everything else of fasthttp's transport: the HostClient's
// connection pool, its read and write timeouts (a timeout is
// fasthttp.ErrTimeout), MaxConnDuration, informational (1xx) answers
// skipped, no body for HEAD, 204 and 304, and the retry of a request whose
// connection failed before an answer (RoundTrip's retry result). Unlike it,
// it closes the connection after a 101 (Switching Protocols): the
// connection no longer speaks HTTP; and after an answer followed by bytes
// that belong to none (a body sent with an answer to HEAD, with a 204 or a
// 304, or past a body's Content-Length), or a 204 that announces a body:
// pooled, the connection would hand them to the next request as its
// answer. Bytes that arrive once the connection is back in the pool are
// found before the next request is written on it, as Go's net/http and
// Envoy find them: New installs a dialer of its own, and a pooled
// connection is read without waiting first (conn.go: in the raw read that
// then waits for the answer, so at no cost in system calls when the
// answer is not there yet). A connection with such bytes, or that the
// upstream has closed, is closed and the request, not yet written, goes on
// another connection. Each connection closed for stray bytes is told to
// New's stray function. An answer whose status code is outside 100–599
// ("000" included) is an error (ErrStatus) and its connection is closed.
// And where fasthttp's transport gives up on a connection whose write
// failed, this one, when part of the request went out (the dialer counts
// what is written), reads the answer an upstream may have sent before
// resetting or closing the connection on a body it did not take:
// ErrAnsweredEarly with that answer, or PartlySentError, never retried.
//
// Per-request timeouts (HostClient.DoTimeout, DoDeadline, Request.SetTimeout)
// are not applied: fasthttp keeps them in an unexported field. Use the
// client's ReadTimeout and WriteTimeout.
//
// A streamed body is read and closed by one goroutine at a time, as
// fasthttp's server does when it writes a response out; a reference to it
// must not be used after it was closed (it goes back to a pool).
package fasttransport

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http/httputil"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// New returns the transport of hc, to be set as hc.Transport: it takes
// connections from hc's pool and gives them back to it. It also sets
// hc.DialTimeout to a dialer of its own, which dials as hc's own settings
// say (Dial, DialTimeout, DialDualStack: set them before New) and lets the
// transport look at a pooled connection before a request is written on it.
// stray, when not nil, is told of each connection closed for stray bytes.
func New(hc *fasthttp.HostClient, stray func(Stray)) fasthttp.RoundTripper {
	d := &dialer{hc: hc, dial: hc.Dial, dialTimeout: hc.DialTimeout}
	hc.DialTimeout = d.dialConn
	t := newTransport(hc, hc.AcquireConn, hc.CloseConn, hc.ReleaseConn)
	t.stray = stray
	return t
}

// conn is fasthttp's pooled connection (an unexported type, named here by
// inference only).
type conn interface {
	Conn() net.Conn
	CreatedTime() time.Time
}

// transport is the RoundTripper of one HostClient. Its functions are that
// client's methods, bound once: a pooled body holds the connection in a
// field of its own type, without a closure per request.
type transport[C conn] struct {
	hc          *fasthttp.HostClient
	acquire     func(time.Duration, bool) (C, error)
	closeConn   func(C)
	releaseConn func(C)
	stray       func(Stray) // nil: not told
	bodies      sync.Pool   // of *body[C]
}

func newTransport[C conn](hc *fasthttp.HostClient, acquire func(time.Duration, bool) (C, error), closeConn, releaseConn func(C)) *transport[C] {
	t := &transport[C]{hc: hc, acquire: acquire, closeConn: closeConn, releaseConn: releaseConn}
	t.bodies.New = func() any { return &body[C]{t: t} }
	return t
}

// maxInterim is how many informational answers may precede the final one
// (fasthttp's limit).
const maxInterim = 100

// ErrTooManyInterim is returned for an upstream that keeps sending
// informational (1xx) answers.
var ErrTooManyInterim = errors.New("fasttransport: too many 1xx informational responses")

// ErrStatus is returned for an answer whose status code is outside
// 100–599 (fasthttp reads any three digits): below 100 no status, and no
// telling how the answer is framed; above 599 a code of no class (RFC 9110
// section 15), which no client can interpret.
var ErrStatus = errors.New("fasttransport: status code outside 100-599")

// RoundTrip sends req on a connection of hc and reads the answer into resp.
func (t *transport[C]) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (retry bool, err error) {
	if hc != t.hc || !resp.StreamBody {
		// Set on another client than its own, or a client that buffers
		// answers (fasthttp's transport allocates nothing for those).
		return fasthttp.DefaultTransport.RoundTrip(hc, req, resp)
	}
	var cc C
	var resetClose bool
	for {
		if cc, err = t.acquire(0, req.ConnectionClose()); err != nil {
			return false, err
		}
		conn := cc.Conn()
		if err = conn.SetWriteDeadline(deadline(hc.WriteTimeout)); err != nil {
			t.abandon(cc)
			return true, err
		}
		resetClose = hc.MaxConnDuration > 0 && time.Since(cc.CreatedTime()) > hc.MaxConnDuration && !req.ConnectionClose()
		if resetClose {
			req.SetConnectionClose()
		}
		var idle idleState
		idle, err = send(hc, conn, req)
		if resetClose {
			req.Header.ResetConnectionClose()
		}
		if idle == idleClean {
			break
		}
		// Something arrived on the pooled connection while it was idle
		// (bytes no request asked for, or the upstream's close), and req
		// was not written: it goes on another connection, pooled or new.
		// Each turn closes one that was pooled; a new one is not looked
		// at, so this ends.
		t.closeConn(cc)
		if idle == idleStray {
			t.strayed(StrayWhileIdle)
		}
	}
	conn := cc.Conn()
	// cut is the error of a write that failed after part of req went
	// out: the upstream may have answered without reading the rest (see
	// ErrAnsweredEarly), and its answer is read as any other.
	var cut error
	if err != nil {
		if isTimeout(err) || !partlySent(conn) {
			// Timed out (the upstream may not be reading), or failed
			// before a byte went out (a stale pooled connection): the
			// upstream got nothing of req, which may be sent again.
			t.abandon(cc)
			return true, timeout(err)
		}
		cut = err
		if err = conn.SetReadDeadline(deadline(hc.ReadTimeout)); err != nil {
			t.abandon(cc)
			return false, &PartlySentError{Err: cut}
		}
	}
	resp.ParseNetConn(conn)

	if req.Header.IsHead() {
		resp.SkipBody = true
	}
	if hc.DisableHeaderNamesNormalizing {
		resp.Header.DisableNormalizing()
	}
	br := hc.AcquireReader(conn)
	if err = readHeader(&resp.Header, br); err != nil {
		hc.ReleaseReader(br)
		t.abandon(cc)
		if cut != nil {
			return false, cutFailed(cut, err)
		}
		// Nothing of an answer, or a broken one: the request may be
		// retried on a fresh connection (the client's RetryIfErr decides).
		return true, timeout(err)
	}
	status := resp.StatusCode()
	closeConn := cut != nil || resetClose || req.ConnectionClose() || resp.ConnectionClose() ||
		status == fasthttp.StatusSwitchingProtocols
	var answered error // RoundTrip's error with an answer: nil, or ErrAnsweredEarly
	if cut != nil {
		answered = ErrAnsweredEarly
	}
	if resp.SkipBody || status < 200 || status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified {
		// Bytes after an answer without a body (a HEAD answered with
		// one, a 204 or 304 with a body) belong to no answer: on a
		// pooled connection the next request would read them as its
		// own. So would a body a 204 announces (it may have no
		// Content-Length nor Transfer-Encoding): it follows later.
		// (After a 101, what follows is the other protocol's: the
		// connection is closed in any case.)
		if status != fasthttp.StatusSwitchingProtocols && br.Buffered() > 0 ||
			status == fasthttp.StatusNoContent && resp.Header.ContentLength() != 0 && resp.Header.ContentLength() != -2 {
			closeConn = true
			t.strayed(StrayAfterAnswer)
		}
		hc.ReleaseReader(br)
		t.release(cc, closeConn)
		return false, answered
	}

	size := resp.Header.ContentLength()
	if size >= 0 && size <= br.Buffered() {
		// The whole body has arrived: ReadBody copies it from the read
		// buffer into the response's pooled buffer (not streaming).
		resp.StreamBody = false
		err = resp.ReadBody(br, 0)
		resp.StreamBody = true
		// More than the Content-Length arrived: the rest is no answer's.
		stray := br.Buffered() > 0
		hc.ReleaseReader(br)
		if err != nil {
			t.abandon(cc)
			if cut != nil {
				return false, &PartlySentError{Err: timeout(err)}
			}
			return true, timeout(err)
		}
		if stray {
			closeConn = true
			t.strayed(StrayAfterAnswer)
		}
		t.release(cc, closeConn)
		return false, answered
	}

	b := t.bodies.Get().(*body[C])
	b.cc, b.br, b.closeConn, b.open = cc, br, closeConn, true
	b.remaining, b.chunked, b.eof, b.failed = int64(size), nil, false, false
	switch size {
	case -1: // chunked
		b.chunked = httputil.NewChunkedReader(br)
	case -2: // until the connection ends
		b.closeConn = true
		size = -1
	}
	resp.SetBodyStream(b, size)
	return false, answered
}

// ErrAnsweredEarly is RoundTrip's error when the upstream answered a
// request before it had read it whole, and writing the rest failed: the
// upstream refused it early (a 401, 413, 415 or 422 to an upload it does
// not take) and then reset or closed the connection, as Go's net/http
// server does past 256 KiB of a body it did not read. The answer was read
// from the connection all the same, as nginx and Envoy read one, and is
// in resp as on success (its body, when streamed, to be read and closed
// as any other); the connection is closed after it. The request must not
// be sent again (the upstream answered it), and the client that sent it
// should have its own connection closed after the answer, as the upstream
// closed the proxy's. Without this, fasthttp's transport, which reads
// nothing once a write failed, reported the upstream's answer as a
// connection closed before any answer.
var ErrAnsweredEarly = errors.New("fasttransport: upstream answered before reading the whole request")

// PartlySentError is RoundTrip's error when writing a request failed after
// part of it went out and no answer could be read (Err says why: the
// write's error when nothing of an answer came, else the read's). The
// upstream may have received part of the request, its body, and acted
// on it: it must not be sent again, whatever its method. (A write that
// fails before a byte went out, or that times out, is returned as it is.)
type PartlySentError struct{ Err error }

func (e *PartlySentError) Error() string { return "request partly sent: " + e.Err.Error() }

func (e *PartlySentError) Unwrap() error { return e.Err }

// cutFailed is the error of a request whose write failed with werr after
// part of it went out, when reading an answer then failed with rerr: the
// write's error when the connection had ended with no answer at all (as
// when the answer is not looked for), else the read's (a broken answer, a
// timeout).
func cutFailed(werr, rerr error) error {
	err := werr
	if !Gone(rerr) {
		err = timeout(rerr)
	}
	return &PartlySentError{Err: err}
}

// Gone reports whether err says the connection it came from had ended: the
// peer closed it (io.EOF, fasthttp.ErrConnectionClosed: a read found
// nothing more) or reset it (ECONNRESET, on a read or a write), a write
// found it ended (EPIPE), or it had been closed on this side
// (net.ErrClosed). Neither a timeout nor a broken answer is: there the
// peer is slow, or said something wrong. The transport asks it of the read
// after a failed write (cutFailed); the forwarding client, of a failed
// call, to tell a stale pooled connection.
func Gone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// isTimeout reports whether err is a timeout. fasthttp wraps the read's
// error in its own when part of a header had arrived: looked for in the
// chain, not only at its head.
func isTimeout(err error) bool {
	var x interface{ Timeout() bool }
	return errors.As(err, &x) && x.Timeout()
}

// readHeader reads the final answer's header, skipping informational ones
// (but for 101, which is final) as SkipInterim does, which refuses a
// status code of "000" in any of them ("000" would read as 200: the
// upstream's broken answer would reach the client as a success). A status
// outside 100–599 is an error: below 100, written back, it made a status
// line of one or two digits, and the answer was read as one without a
// body, its connection pooled.
func readHeader(h *fasthttp.ResponseHeader, br *bufio.Reader) error {
	if err := SkipInterim(h, br); err != nil {
		return err
	}
	if err := h.Read(br); err != nil {
		return err
	}
	if s := h.StatusCode(); s < 100 || s > 599 {
		return ErrStatus
	}
	return nil
}

// SkipInterim reads the informational (1xx) answers br holds next into h,
// but for a 101, which is final, and refuses (ErrStatus) a status code of
// "000" in any of them and in the answer that follows, which it leaves to
// be read. fasthttp reads "000" as its unset status and reports it as 200,
// so the code is looked for in the status line before the header is read,
// as fasthttp's parser finds it (nextStatus), in any spelling it accepts:
// looking only for "HTTP/1.1 000" at the start let "HTTP/1.1  000" and an
// empty line before the status line through. For readHeader, and for a
// reader that reads the answer with fasthttp's Response.Read, which skips
// interim answers itself: a "000" after a "103 Early Hints" was read as
// 200.
func SkipInterim(h *fasthttp.ResponseHeader, br *bufio.Reader) error {
	for n := 0; ; n++ {
		code, ok := nextStatus(br)
		switch {
		case !ok:
			return nil // the answer's read reports why
		case string(code) == "000":
			return ErrStatus
		case len(code) != 3 || code[0] != '1' || string(code) == "101":
			return nil // final (or no status fasthttp reads: it says so)
		case n >= maxInterim:
			return ErrTooManyInterim
		}
		if err := h.Read(br); err != nil {
			return err
		}
	}
}

// nextStatus returns the status code of the answer br holds next as
// fasthttp's header parser reads it: in the first line that is not empty,
// after the first space and any spaces that follow it, up to the next
// space. It waits for that line as reading the header would; false when it
// does not come whole (an error, a line longer than br's buffer), which
// the read of the header then reports. It aliases br's buffer.
func nextStatus(br *bufio.Reader) ([]byte, bool) {
	// The usual spelling, "HTTP/1.1 200 OK": 13 bytes, which any status
	// line has (and its CRLF), tell.
	if b, _ := br.Peek(13); len(b) == 13 && string(b[:5]) == "HTTP/" && b[5] != ' ' && b[6] != ' ' && b[7] != ' ' &&
		b[8] == ' ' && isDigit(b[9]) && isDigit(b[10]) && isDigit(b[11]) && b[12] == ' ' {
		return b[9:12], true
	}
	for n := 1; n <= br.Size(); n = br.Buffered() + 1 {
		if _, err := br.Peek(n); err != nil {
			return nil, false
		}
		b, _ := br.Peek(br.Buffered())
		for {
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				break // the line is still coming
			}
			line := bytes.TrimSuffix(b[:i], []byte("\r"))
			if len(line) == 0 { // fasthttp skips empty lines before it
				b = b[i+1:]
				continue
			}
			sp := bytes.IndexByte(line, ' ')
			if sp < 0 {
				return nil, true
			}
			code := bytes.TrimLeft(line[sp+1:], " ")
			if sp = bytes.IndexByte(code, ' '); sp >= 0 {
				code = code[:sp]
			}
			return code, true
		}
	}
	return nil, false
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// deadline is now plus d, or no deadline for d ≤ 0.
func deadline(d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

// timeout makes any timeout error fasthttp.ErrTimeout, as fasthttp's
// transport does.
func timeout(err error) error {
	if isTimeout(err) {
		return fasthttp.ErrTimeout
	}
	return err
}

// strayed tells t.stray, if set, of a connection closed for stray bytes.
func (t *transport[C]) strayed(s Stray) {
	if t.stray != nil {
		t.stray(s)
	}
}

// abandon closes cc after a failed exchange (a write or read that failed
// or timed out, an answer not read to its end) without the TLS
// close_notify alert, as nginx closes an upstream connection after an
// error: its socket is closed first, then cc (the pool's count). Go's
// tls.Conn.Close writes the alert with a deadline of its own, 5 s, and on
// a connection whose upstream stopped reading (a request body it does
// not take) that write waits the whole 5 s, on the request's goroutine,
// before the request's error is answered. Where an exchange failed the
// TLS stream may end in part of a record anyway; the upstream reads the
// end of the connection as such. A connection closed after a complete
// exchange (release) still sends the alert.
func (t *transport[C]) abandon(cc C) {
	closeRaw(cc.Conn())
	t.closeConn(cc)
}

// Abandon closes c without TLS's close_notify alert (see abandon): the
// socket under a tls.Conn first, then c. For connections outside the
// pool, such as a stream's upstream connection that did not end as the
// upstream ended it.
func Abandon(c net.Conn) {
	closeRaw(c)
	_ = c.Close()
}

// closeRaw closes the socket under c when c is a tls.Conn, so that
// closing c then writes nothing.
func closeRaw(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		_ = tc.NetConn().Close()
	}
}

// release gives cc back to the pool, or closes it.
func (t *transport[C]) release(cc C, closeConn bool) {
	if closeConn {
		t.closeConn(cc)
	} else {
		t.releaseConn(cc)
	}
}

// body is a streamed response body: the rest of the answer on cc, read
// through br. remaining counts what is left of a Content-Length body;
// chunked decodes a chunked one; otherwise the body runs until the
// connection ends (closeConn is set).
type body[C conn] struct {
	t         *transport[C]
	cc        C
	br        *bufio.Reader
	chunked   io.Reader
	remaining int64
	closeConn bool
	eof       bool // read to its end
	failed    bool // a read failed: the connection is at an unknown place
	open      bool
}

// Read reads the body.
func (b *body[C]) Read(p []byte) (int, error) {
	if !b.open {
		return 0, io.ErrClosedPipe
	}
	if b.eof {
		return 0, io.EOF
	}
	var n int
	var err error
	switch {
	case b.chunked != nil:
		n, err = b.chunked.Read(p)
		if err == io.EOF {
			// The last chunk: its trailer section ends the answer.
			if terr := skipTrailer(b.br); terr != nil {
				err = terr
			}
		}
	case b.remaining == 0:
		err = io.EOF
	case b.remaining > 0:
		if len(p) == 0 {
			return 0, nil
		}
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining]
		}
		n, err = b.br.Read(p)
		b.remaining -= int64(n)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // shorter than its Content-Length
		} else if err == nil && b.remaining == 0 {
			err = io.EOF
		}
	default:
		n, err = b.br.Read(p)
	}
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil:
		b.failed = true
		err = timeout(err)
	}
	return n, err
}

// Await waits until the first bytes of the body have arrived (for a
// chunked body: its first chunk's size line, then the first byte of that
// chunk's data), or until it is known to end there, so that the next Read
// returns bytes or io.EOF without waiting on the upstream. It consumes
// nothing of the body's data. It returns the error that Read would have
// met first: the upstream's connection closed (io.ErrUnexpectedEOF) or
// reset before any of the body, a malformed chunk size line, or
// fasthttp.ErrTimeout past the connection's read deadline (the client's
// ReadTimeout from when the request was sent). After an error the body
// is failed, as after a failed Read.
//
// A server writes an answer's header into its buffer and sends it with
// the first bytes of the body: when the first read of the body fails,
// the client gets nothing at all, where, waited for first, the failure
// can still be answered.
func (b *body[C]) Await() error {
	if !b.open {
		return io.ErrClosedPipe
	}
	if b.eof {
		return nil
	}
	var err error
	switch {
	case b.chunked != nil:
		// An empty read reads the chunk's size line and no data: io.EOF
		// for the last chunk, whose trailer section then ends the body.
		if _, err = b.chunked.Read(nil); err == io.EOF {
			if err = skipTrailer(b.br); err == nil {
				b.eof = true
				return nil
			}
		} else if err == nil {
			_, err = b.br.Peek(1)
		}
	case b.remaining == 0:
		return nil
	default:
		if _, err = b.br.Peek(1); err == io.EOF && b.remaining < 0 {
			// A body delimited by the connection's end: an empty one.
			b.eof = true
			return nil
		}
	}
	if err == nil {
		return nil
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	b.failed = true
	return timeout(err)
}

// CloseWithError ends the body: the connection goes back to the pool when
// the body was read to its end without error, and is closed otherwise.
// fasthttp calls it once the response is written out (err: the write's
// error) or when the response is reset.
func (b *body[C]) CloseWithError(err error) error {
	if !b.open {
		return nil
	}
	t := b.t
	// Bytes after the body (more than its Content-Length, or than its
	// last chunk and trailer) are no answer's: the connection goes.
	ended := err == nil && b.eof && !b.failed
	stray := ended && b.br.Buffered() > 0
	keep := ended && !b.closeConn && !stray
	if stray {
		t.strayed(StrayAfterAnswer)
	}
	switch {
	case !ended:
		t.abandon(b.cc) // closes the socket before br goes back
	case !keep:
		t.closeConn(b.cc)
	}
	t.hc.ReleaseReader(b.br)
	if keep {
		t.releaseConn(b.cc)
	}
	var zero C
	b.cc, b.br, b.chunked, b.open = zero, nil, nil, false
	t.bodies.Put(b)
	return nil
}

// maxTrailer bounds a chunked body's trailer section.
const maxTrailer = 8 << 10

// errTrailer: the trailer section after the last chunk is malformed or too
// long.
var errTrailer = errors.New("fasttransport: malformed or oversized trailer")

// skipTrailer reads the trailer section after the last chunk, up to and
// including the empty line that ends it. The proxy does not forward
// trailers.
func skipTrailer(br *bufio.Reader) error {
	read := 0
	for {
		line, err := br.ReadSlice('\n')
		read += len(line)
		if err != nil {
			if err == bufio.ErrBufferFull {
				return errTrailer
			}
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		if read > maxTrailer {
			return errTrailer
		}
		if len(line) == 2 && line[0] == '\r' || len(line) == 1 {
			return nil
		}
	}
}
