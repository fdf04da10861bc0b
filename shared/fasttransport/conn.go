package fasttransport

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// Stray says when an upstream sent bytes that belong to no answer; the
// connection they came on is closed.
type Stray uint8

// When stray bytes were found.
const (
	// StrayAfterAnswer: read with an answer, past its end (a body with an
	// answer to HEAD, with a 204 or a 304, more than a Content-Length,
	// a second answer), or announced by a 204 that has a length.
	StrayAfterAnswer Stray = iota + 1
	// StrayWhileIdle: arrived while the connection was idle in the pool,
	// found before the next request was written on it.
	StrayWhileIdle
)

// String is the metric label of s: "after_answer" or "idle".
func (s Stray) String() string {
	if s == StrayWhileIdle {
		return "idle"
	}
	return "after_answer"
}

// idleState is what was found on a pooled connection before a request was
// written on it.
type idleState uint8

const (
	idleClean idleState = iota // nothing: the request went out
	idleStray                  // bytes arrived while it was idle
	idleGone                   // the upstream closed or reset it
)

// dialer dials hc's connections as fasthttp would with hc's own dial
// settings (read when New ran), and wraps each socket in an upstreamConn.
type dialer struct {
	hc          *fasthttp.HostClient
	dial        fasthttp.DialFunc
	dialTimeout fasthttp.DialFuncWithTimeout
}

func (d *dialer) dialConn(addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	var err error
	switch hc := d.hc; {
	case d.dialTimeout != nil:
		c, err = d.dialTimeout(addr, timeout)
	case d.dial != nil:
		c, err = d.dial(addr)
	default: // fasthttp's own choice (its callDialFunc)
		addr = fasthttp.AddMissingPort(addr, hc.IsTLS)
		switch {
		case timeout > 0 && hc.DialDualStack:
			c, err = fasthttp.DialDualStackTimeout(addr, timeout)
		case timeout > 0:
			c, err = fasthttp.DialTimeout(addr, timeout)
		case hc.DialDualStack:
			c, err = fasthttp.DialDualStack(addr)
		default:
			c, err = fasthttp.Dial(addr)
		}
	}
	if err != nil {
		return nil, err
	}
	return wrap(c, d.hc.IsTLS), nil
}

// upstreamConn is a socket the transport dialed. Before a request is
// written on it after an earlier exchange, the transport looks, without
// blocking, for anything that arrived while it was idle (send): bytes no
// request asked for, which the request would read as its answer, or the
// upstream's close. For a TLS upstream (fasthttp runs the TLS client over
// this socket) the look goes through the TLS client, so that what it
// holds already decrypted or not yet decrypted counts too, and a record of
// the TLS layer's own (a session ticket) does not.
type upstreamConn struct {
	net.Conn
	raw   syscall.RawConn
	isTLS bool
	tls   *tls.Conn // the TLS client over it, once seen by send
	used  bool      // a request was written on it
	rec   records   // the TLS record framing of what was read (isTLS)
	// sent counts the bytes written on the socket since send began the
	// request being sent (TLS records included): none, and a failed
	// write left the upstream nothing of the request (partlySent).
	sent int64

	// The request being sent, for sendFn (u.sendStep, bound once): set
	// by send for one raw read.
	sendFn  func(fd uintptr) bool
	hc      *fasthttp.HostClient
	out     net.Conn // where the request is written: u, or its TLS client
	req     *fasthttp.Request
	written bool
	idle    idleState
	err     error
	probing bool    // Read reads fd without blocking (a look through tls)
	fd      uintptr // while probing
	one     [1]byte
}

func newUpstreamConn(c net.Conn, raw syscall.RawConn, isTLS bool) *upstreamConn {
	u := &upstreamConn{Conn: c, raw: raw, isTLS: isTLS}
	u.sendFn = u.sendStep
	return u
}

// errNothing is what Read returns to the TLS client while probing when the
// socket has nothing: a temporary error, which leaves the TLS client usable.
var errNothing net.Error = nothingYet{}

type nothingYet struct{}

func (nothingYet) Error() string   { return "fasttransport: nothing to read" }
func (nothingYet) Timeout() bool   { return true }
func (nothingYet) Temporary() bool { return true }

// Read reads from the socket (without blocking while probing), following
// the TLS record framing of what it reads.
func (u *upstreamConn) Read(p []byte) (int, error) {
	var n int
	var err error
	if u.probing {
		n, err = readNow(u.fd, p)
		switch {
		case err == errAgain:
			return 0, errNothing
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
	} else {
		n, err = u.Conn.Read(p)
	}
	if u.isTLS && n > 0 {
		u.rec.track(p[:n])
	}
	return n, err
}

// Write writes to the socket, counting what it took.
func (u *upstreamConn) Write(p []byte) (int, error) {
	n, err := u.Conn.Write(p)
	u.sent += int64(n)
	return n, err
}

// partlySent reports whether any byte of the request send wrote last on
// conn went out (true when conn's writes are not counted: it may have).
func partlySent(conn net.Conn) bool {
	u := upstreamOf(conn)
	return u == nil || u.sent > 0
}

// upstreamOf is the upstreamConn under conn, or nil.
func upstreamOf(conn net.Conn) *upstreamConn {
	switch c := conn.(type) {
	case *upstreamConn:
		return c
	case *tls.Conn:
		if u, ok := c.NetConn().(*upstreamConn); ok {
			u.tls = c
			return u
		}
	}
	return nil
}

// send writes req on conn and sets its read deadline for the answer. On a
// connection that had an exchange before, it first looks for what arrived
// while it was idle: anything but nothing (idleStray, idleGone) and req is
// not written. An error is the write's (req may be partly written).
//
// It runs in one raw read of the socket (syscall.RawConn.Read): the look
// is the read system call that finds nothing, then req is written, and the
// raw read waits until the socket is readable. The read of the answer's
// first bytes then finds them without a read that finds nothing first, so
// the look costs no system call on a request whose answer is not already
// there when the write returns.
//
// The first request on a TLS connection is written as fasthttp would:
// its handshake may still be due, and it reads the socket.
func send(hc *fasthttp.HostClient, conn net.Conn, req *fasthttp.Request) (idleState, error) {
	u := upstreamOf(conn)
	if u != nil {
		u.sent = 0
	}
	if u == nil || u.isTLS && !u.used {
		err := write(hc, conn, req)
		if err == nil {
			if u != nil {
				u.used = true
			}
			err = conn.SetReadDeadline(deadline(hc.ReadTimeout))
		}
		return idleClean, err
	}
	u.hc, u.out, u.req, u.written, u.idle, u.err = hc, conn, req, false, idleClean, nil
	err := u.raw.Read(u.sendFn)
	if err != nil && !u.written && u.idle == idleClean && u.err == nil {
		// The raw read did not start: the read deadline of the last
		// exchange passed while the connection was idle, or it is
		// closed.
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && conn.SetReadDeadline(time.Time{}) == nil {
			err = u.raw.Read(u.sendFn)
		}
		if err != nil && !u.written && u.idle == idleClean && u.err == nil {
			u.idle = idleGone
		}
	}
	// An error of the raw read after the write (the answer's deadline, a
	// close) is the answer's read's to report.
	idle, werr := u.idle, u.err
	u.hc, u.out, u.req, u.err = nil, nil, nil, nil
	return idle, werr
}

// sendStep is send's raw read function: the look and the write on its first
// call (false: wait until readable), true on the next.
func (u *upstreamConn) sendStep(fd uintptr) bool {
	if u.written {
		return true // readable: the answer is arriving
	}
	if u.used {
		if u.idle = u.look(fd); u.idle != idleClean {
			return true
		}
	}
	if u.err = write(u.hc, u.out, u.req); u.err != nil {
		return true
	}
	u.used = true
	if u.err = u.out.SetReadDeadline(deadline(u.hc.ReadTimeout)); u.err != nil {
		return true
	}
	u.written = true
	return false
}

// look reads fd without blocking: what arrived since the last exchange.
func (u *upstreamConn) look(fd uintptr) idleState {
	if u.tls == nil {
		return idleOf(readNow(fd, u.one[:]))
	}
	u.fd, u.probing = fd, true
	n, err := u.tls.Read(u.one[:])
	u.probing = false
	switch {
	case n > 0:
		return idleStray // application data
	case errors.Is(err, errNothing):
		// Records the TLS client read whole were its own (a session
		// ticket); part of a record waits in its buffer.
		if u.rec.partial() {
			return idleStray
		}
		return idleClean
	}
	return idleGone // closed (close_notify, EOF) or broken
}

// idleOf reads the result of a read that does not block.
func idleOf(n int, err error) idleState {
	switch {
	case n > 0:
		return idleStray
	case err == errAgain:
		return idleClean
	}
	return idleGone // 0: the upstream closed it; or an error (reset)
}

// write writes req to conn through a pooled writer of hc.
func write(hc *fasthttp.HostClient, conn net.Conn, req *fasthttp.Request) error {
	bw := hc.AcquireWriter(conn)
	err := req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	return err
}

// records follows TLS record framing (a 5-byte header whose last two bytes
// are the length of the body that follows) over the bytes read from a
// socket: partial says whether they end inside a record.
type records struct {
	hdr  int // header bytes read of the record being started (0-4)
	size int // its length, from the header's bytes 3 and 4
	left int // body bytes still to come
}

func (r *records) track(b []byte) {
	for len(b) > 0 {
		if r.left > 0 {
			k := min(r.left, len(b))
			r.left -= k
			b = b[k:]
			continue
		}
		switch r.hdr {
		case 3:
			r.size = int(b[0]) << 8
		case 4:
			r.left = r.size | int(b[0])
		}
		r.hdr = (r.hdr + 1) % 5
		b = b[1:]
	}
}

func (r *records) partial() bool { return r.hdr != 0 || r.left != 0 }
