package streams

import (
	"bytes"
	"crypto/sha1" // RFC 6455 defines Sec-WebSocket-Accept with SHA-1
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/headers"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
	"github.com/tollgate-auth/tollgate/shared/fasttransport"
	"github.com/tollgate-auth/tollgate/shared/requestid"
	"github.com/valyala/fasthttp"
)

// Request is an authorized request to carry as a stream. Its headers are
// final (identity headers signed, client credentials removed) and its
// request URI is what the upstream gets.
type Request struct {
	Ctx  *fasthttp.RequestCtx
	Addr string // upstream host:port
	// TLS, when set, is the client configuration of an https:// upstream
	// (its ServerName empty: the host of Addr).
	TLS       *tls.Config
	Route     *rules.Route
	Claims    *tokens.Claims // nil: anonymous (never re-evaluated)
	RequestID string
	// TraceID is the request's trace id ("" untraced), for the logs.
	TraceID string
	// ClientIP is the client's address as the proxy resolved it (the
	// peer's, or from a trusted proxy its X-Forwarded-For client: the
	// address signed as X-Auth-Client-Ip). An anonymous stream counts
	// against Options.MaxPerIP under it.
	ClientIP string
	// Path (normalized) and Method route the stream again after a rules
	// reload; Table is the route table that routed the request (nil: the
	// stream is not routed again as it registers).
	Path, Method string
	Table        *rules.Table
	// Timeout bounds the upstream's answer to the upgrade or the headers
	// of a streamed response: its upstream's request timeout (timeout in
	// the rules file, else UPSTREAM_TIMEOUT). 0: Options.HandshakeTimeout.
	Timeout time.Duration
	// Head, if set, runs on the response headers of a stream just before
	// they are written (the proxy's CORS headers); the usual last touches
	// of a response never see a stream's headers.
	Head func()
	// Ended, if set, is told how the stream ended, once, if it opened
	// (the proxy's access log); it runs on the stream's own goroutine.
	Ended func(End)
}

// maxRefusalBody bounds the body of an upstream's refusal of an upgrade.
const maxRefusalBody = 1 << 20

// ServeWebSocket sends the upgrade request to the upstream. If it answers
// 101, the answer goes to the client and the two connections are spliced
// (after the handler returns, through fasthttp's hijack); any other answer
// is passed through as is. Errors are returned only when nothing was
// answered.
//
// The splice copies bytes, it does not decode messages: client to upstream
// verbatim, upstream to client verbatim but with the frame boundaries
// tracked, so that the proxy can put its own close frame (1008 when
// access is withdrawn or the token expires, 1001 on shutdown or idleness)
// between two frames. Closed in the middle of a frame, or after the
// upstream's own close frame, the client's connection ends without one.
func (m *Manager) ServeWebSocket(r Request) error {
	accept, ok := clientHandshake(&r.Ctx.Request.Header)
	if !ok {
		return ErrHandshake
	}
	c, err := m.reserveAt("websocket", r.Route.Prefix, r.Claims, r.Route, r.RequestID, originOf(&r))
	if err != nil {
		return err
	}
	if c.Reason() != "" { // closed as it registered
		return m.refuse(c, nil)
	}
	up, br, err := m.handshake(c, r)
	ctx := r.Ctx
	if err == nil {
		m.admit(c)
	}
	if c.Reason() != "" {
		// Closed before the upstream answered (the handshake was woken),
		// or as it did: nothing went to the client yet, which is refused
		// as a new request would be, not given the upstream's answer.
		ctx.Response.Reset()
		return m.refuse(c, up)
	}
	if err != nil {
		m.release(c, ReasonError)
		return err
	}
	if s := ctx.Response.StatusCode(); s < 100 || s > 599 {
		ctx.Response.Reset()
		up.Close()
		m.release(c, ReasonError)
		return errors.Join(ErrUpstream, errStatus)
	}
	if ctx.Response.StatusCode() != fasthttp.StatusSwitchingProtocols {
		// The upstream refused: its answer (already in ctx.Response) goes
		// back as any other response would.
		headers.SanitizeResponse(&ctx.Response.Header)
		up.Close()
		m.release(c, ReasonRefused)
		return nil
	}
	if !upstreamHandshake(&ctx.Response.Header, &accept) {
		// Not the WebSocket the client asked for: spliced, the client's
		// connection would carry whatever it sends next to the upstream
		// as it is, HTTP requests past the proxy included.
		ctx.Response.Reset()
		up.Close()
		m.release(c, ReasonError)
		return errors.Join(ErrUpstream, errHandshake)
	}
	raw := ctx.Conn()
	s := &splice{m: m, c: c, up: up, upr: br, raw: raw}
	s.last.Store(m.o.Now().UnixNano())
	// The splice writes the 101 itself, first thing on the hijacked
	// connection: fasthttp would not run the hijack handler after an
	// answer it marks as closing the connection (a client's
	// "Connection: close, Upgrade", a draining server), which left the
	// upstream's WebSocket open, and the stream counted, without a client.
	h := &ctx.Response.Header
	switched(h)
	h.Set(requestid.Header, r.RequestID)
	if r.Head != nil {
		r.Head()
	}
	s.head = h.AppendBytes(nil)
	c.setRetime(s.retime)
	if !m.start(c, s.shutdown) {
		// Closed since it was admitted: its upstream connection is
		// closed (shutdown), nothing went to the client.
		ctx.Response.Reset()
		return m.refuse(c, nil)
	}
	ctx.HijackSetNoResponse(true)
	m.watchHijack(c, &s.started, up)
	ctx.Hijack(s.run)
	return nil
}

// ErrHandshake: the client's upgrade is no WebSocket opening handshake
// the proxy can check the upstream's answer to (400): it needs one
// Sec-WebSocket-Key of 16 bytes in base64 and one Sec-WebSocket-Version,
// 13 (RFC 6455 section 4.1).
var ErrHandshake = errors.New("streams: not a WebSocket opening handshake")

// errHandshake: the upstream's 101 does not complete the client's
// WebSocket handshake (RFC 6455 section 4.2.2).
var errHandshake = errors.New("upstream 101 is no WebSocket handshake: Upgrade or Sec-WebSocket-Accept missing or wrong")

// websocketGUID is the value a Sec-WebSocket-Accept hashes with the
// client's key (RFC 6455 section 1.3).
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// acceptLen is the length of a Sec-WebSocket-Accept: a SHA-1 in base64.
const acceptLen = 28

// clientHandshake checks the WebSocket fields of the client's upgrade and
// returns the Sec-WebSocket-Accept its key calls for.
func clientHandshake(h *fasthttp.RequestHeader) (accept [acceptLen]byte, ok bool) {
	// One PeekAll at a time: each reuses the slice of the one before.
	if v := h.PeekAll("Sec-WebSocket-Version"); len(v) != 1 || string(v[0]) != "13" {
		return accept, false
	}
	keys := h.PeekAll("Sec-WebSocket-Key")
	// A key is 16 bytes, 24 characters in base64: the length is checked
	// before decoding, which writes past the end of raw (a panic) for a
	// longer text.
	if len(keys) != 1 || len(keys[0]) != base64.StdEncoding.EncodedLen(16) {
		return accept, false
	}
	var raw [18]byte // what 24 characters decode to at most
	if n, err := base64.StdEncoding.Decode(raw[:], keys[0]); err != nil || n != 16 {
		return accept, false
	}
	d := sha1.New()
	d.Write(keys[0])
	d.Write([]byte(websocketGUID))
	base64.StdEncoding.Encode(accept[:], d.Sum(nil))
	return accept, true
}

// upstreamHandshake reports whether the upstream's 101 completes the
// client's handshake: Upgrade: websocket, and the Sec-WebSocket-Accept
// of the client's key. Anything else (a 101 without them, from a handler
// that answers a status the request chose, or a server that wrote one and
// went on speaking HTTP) is no WebSocket, and the client's connection
// must not be handed to it.
func upstreamHandshake(h *fasthttp.ResponseHeader, accept *[acceptLen]byte) bool {
	ws := false
	for _, v := range h.PeekAll("Upgrade") {
		for tok := range bytes.SplitSeq(v, []byte(",")) {
			if bytes.EqualFold(bytes.TrimSpace(tok), []byte("websocket")) {
				ws = true
			}
		}
	}
	got := h.PeekAll("Sec-WebSocket-Accept")
	return ws && len(got) == 1 && string(bytes.TrimSpace(got[0])) == string(accept[:])
}

// switched cleans an upstream's 101 as any other answer is cleaned
// (headers.SanitizeResponse: its hop-by-hop fields and those its
// Connection names, its status line, its wish to close its connection),
// then has it say again what a 101 must: the connection is upgraded, to
// the protocol the upstream named. The upstream's fields reached the
// client as it wrote them: an internal field its Connection named, a
// Keep-Alive, an "HTTP/1.0" status line, a reason phrase's control bytes,
// and, from an upstream that closes its connections, a second Connection
// field, "close".
func switched(h *fasthttp.ResponseHeader) {
	proto := bytes.Clone(h.Peek("Upgrade"))
	headers.SanitizeResponse(h)
	h.ResetConnectionClose()
	h.Set(fasthttp.HeaderConnection, "Upgrade")
	if len(proto) > 0 {
		h.SetBytesV("Upgrade", proto)
	}
}

// handshake dials the upstream for the stream c, writes the upgrade
// request and reads its answer into r.Ctx.Response (the body too, unless
// it is a 101). It returns the connection and the reader of what follows
// a 101. A Close of c wakes it (Conn.handshaking).
func (m *Manager) handshake(c *Conn, r Request) (net.Conn, io.Reader, error) {
	up, err := m.dial(c, r.Addr, r.TLS, m.handshakeTimeout(&r))
	if err != nil {
		return nil, nil, err
	}
	h := &r.Ctx.Request.Header
	// Hygiene removed the client's hop-by-hop headers; the upgrade is the
	// proxy's own to this upstream connection.
	h.Set(fasthttp.HeaderConnection, "Upgrade")
	h.Set("Upgrade", "websocket")
	if _, err := up.Write(h.Header()); err != nil {
		fasttransport.Abandon(up)
		return nil, nil, errors.Join(ErrUpstream, err)
	}
	br := headerReader(up)
	resp := &r.Ctx.Response
	resp.Reset()
	// A status of 000, which fasthttp would read as 200, is refused in
	// every status line, an interim answer's too.
	if err = fasttransport.SkipInterim(&resp.Header, br); err == nil {
		err = resp.ReadLimitBody(br, maxRefusalBody)
	}
	// Frames the upstream sent right after its 101 were read with it: the
	// splice reads them first, then the connection.
	rest := releaseHeader(br)
	if err != nil {
		fasttransport.Abandon(up)
		resp.Reset()
		return nil, nil, errors.Join(ErrUpstream, err)
	}
	_ = up.SetDeadline(time.Time{})
	return up, after(rest, up), nil
}

// handshakeTimeout is how long r's upstream may take to answer.
func (m *Manager) handshakeTimeout(r *Request) time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return m.o.HandshakeTimeout
}

// splice is one spliced WebSocket.
type splice struct {
	m    *Manager
	c    *Conn
	up   net.Conn
	head []byte       // the 101, as the client gets it
	upr  io.Reader    // the upstream's bytes, some maybe read with its 101
	raw  net.Conn     // the client's TCP connection (for half-close)
	cli  net.Conn     // the hijacked client connection (reads buffered bytes first)
	last atomic.Int64 // unix nanos of the last byte either way
	// started is set when the hijack handler runs.
	started atomic.Bool
	// dropped: a write to the client failed (run's goroutine only).
	dropped bool
	mu      sync.Mutex // cli, set once run starts
}

// shutdown wakes both copy loops: the upstream connection is closed at
// once (nothing more is relayed either way once the stream is closed: the
// relay's read returns and it writes the close frame), the client read
// returns within CloseWait. A write to the client in progress gets
// CloseWait to finish, not WriteTimeout: a client that stopped reading
// held the stream (its slot under the caps, a drain) that long after its
// close. The upstream connection is not held for that wait: it was
// closed only once the relay's write gave up, so a client that stopped
// reading kept the upstream's WebSocket open past the stream's end (an
// event stream's upstream connection is closed at once too). Unless the
// upstream ended the stream, it is closed without TLS's close_notify
// (closeUpstream), whose write waited 5 s on an upstream that stopped reading.
func (s *splice) shutdown(reason string) {
	closeUpstream(s.up, reason)
	s.mu.Lock()
	if s.cli != nil {
		_ = s.cli.SetReadDeadline(s.m.o.Now().Add(s.m.o.CloseWait))
		_ = s.cli.SetWriteDeadline(s.m.o.Now().Add(s.m.o.CloseWait))
	}
	s.mu.Unlock()
}

// writeDeadline bounds the next write to the client: WriteTimeout, or once
// the stream is closed CloseWait. The deadline is set before the closed
// check: a Close in between sees a deadline shutdown shortens, or is seen.
func (s *splice) writeDeadline() {
	_ = s.cli.SetWriteDeadline(s.m.o.Now().Add(s.m.o.WriteTimeout))
	if s.closed() {
		_ = s.cli.SetWriteDeadline(s.m.o.Now().Add(s.m.o.CloseWait))
	}
}

// idle is the stream_timeout of the stream's route, as the rules now have
// it (a reload's Reroute gives the stream its new route): the longest
// silence both ways; 0 none.
func (s *splice) idle() time.Duration { return s.c.rt.Load().StreamTimeout }

// armIdle sets conn's read deadline to idle after the last byte either
// way (none: left as it is; a deadline left from a longer one is cleared
// when it passes). The silence is counted from that byte, not from the
// moment the read waits: after a reload's retime, which wakes both reads,
// a deadline set from then gave a stream silent for most of the new
// stream_timeout the whole of it again, and each reload (every one that
// changes the value wakes them) did so anew. One already past returns at
// once: the stream ends idle. A retime between the read of idle and the
// deadline is seen: the deadline is set again.
func (s *splice) armIdle(conn net.Conn) {
	for {
		idle := s.idle()
		if idle > 0 {
			_ = conn.SetReadDeadline(time.Unix(0, s.last.Load()).Add(idle))
		}
		if s.idle() == idle {
			return
		}
	}
}

// retime wakes both reads after a reload changed the route's
// stream_timeout: each then waits for what is left of the new one after
// the silence so far (or closes the stream idle if that silence already
// exceeds it).
func (s *splice) retime() {
	_ = s.up.SetReadDeadline(time.Unix(1, 0))
	s.mu.Lock()
	if s.cli != nil && !s.closed() {
		_ = s.cli.SetReadDeadline(time.Unix(1, 0))
	}
	s.mu.Unlock()
}

// silence is how long nothing went either way.
func (s *splice) silence() time.Duration {
	return time.Duration(s.m.o.Now().UnixNano() - s.last.Load())
}

func (s *splice) closed() bool {
	select {
	case <-s.c.closed:
		return true
	default:
		return false
	}
}

// run is the hijack handler: it writes the 101, then splices.
func (s *splice) run(cli net.Conn) {
	if !s.started.CompareAndSwap(false, true) {
		cli.Close() // given up on (watchHijack)
		return
	}
	s.mu.Lock()
	s.cli = cli
	s.mu.Unlock()
	_ = cli.SetDeadline(time.Time{})
	s.writeDeadline()
	if _, err := cli.Write(s.head); err != nil {
		fasttransport.Abandon(s.up)
		cli.Close()
		s.m.release(s.c, ReasonClient)
		s.c.Close(ReasonClient)
		return
	}
	if s.closed() { // closed before the hijack (e.g. already revoked)
		s.shutdown(s.c.Reason())
	}
	done := make(chan struct{})
	go func() {
		s.clientToUpstream()
		close(done)
		// The client is gone or half-closed: the upstream gets CloseWait
		// to send its last frames.
		t := time.AfterFunc(s.m.o.CloseWait, func() { s.c.Close(ReasonClient) })
		<-s.c.closed
		t.Stop()
	}()
	// Closed now, if the upstream ended it (the first reason stands):
	// what the client still sends is only read for its close frame,
	// within CloseWait (shutdown), not taken for a silence that
	// stream_timeout bounds. The goroutine above ends with it.
	s.c.Close(s.upstreamToClient())
	reason := s.c.Reason()
	// Half-close towards the client and let it answer (or go) within
	// CloseWait, so the close frame is read before the connection ends;
	// after a failed write (a client that stopped reading, a frame cut
	// short) there is nothing it could answer, and it is dropped at once.
	if cw, ok := s.raw.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	if s.dropped {
		_ = cli.SetReadDeadline(time.Unix(1, 0))
	} else {
		_ = cli.SetReadDeadline(s.m.o.Now().Add(s.m.o.CloseWait))
	}
	s.up.Close()
	<-done
	cli.Close()
	s.m.release(s.c, reason)
}

// upstreamToClient relays until the upstream ends, the client fails or the
// connection is closed; in that last case it writes the proxy's close
// frame if the relay stands between two frames and the upstream sent no
// close frame of its own. It returns the reason.
func (s *splice) upstreamToClient() string {
	bp := s.m.buf()
	defer s.m.put(bp)
	buf := *bp
	var f frames
	for {
		s.armIdle(s.up)
		if s.closed() {
			break
		}
		n, err := s.upr.Read(buf)
		if n > 0 {
			s.last.Store(s.m.o.Now().UnixNano())
			f.feed(buf[:n])
			s.writeDeadline()
			if _, werr := s.cli.Write(buf[:n]); werr != nil {
				s.dropped = true
				s.c.Close(ReasonClient)
				return ReasonClient
			}
			s.m.m.down.Add(float64(n))
			s.c.toClient += int64(n)
		}
		if err == nil {
			continue
		}
		switch {
		case s.closed():
		case errors.Is(err, os.ErrDeadlineExceeded):
			switch idle := s.idle(); {
			case idle == 0: // a reload dropped stream_timeout (retime)
				_ = s.up.SetReadDeadline(time.Time{})
				continue
			case s.silence() < idle:
				continue // the client side was busy, or a retime
			}
			s.c.Close(ReasonIdle)
		case errors.Is(err, io.EOF):
			return ReasonUpstream
		default:
			return ReasonError
		}
		break
	}
	reason := s.c.Reason()
	// In the middle of a frame, or after the upstream's close frame, the
	// client gets the connection's end alone (run half-closes it): the
	// rest of the frame is not relayed, and no second close is sent.
	if f.closeFits() {
		s.writeDeadline()
		_, _ = s.cli.Write(closeFrame(reason))
	}
	return reason
}

// clientToUpstream relays until the client ends; once the stream is
// closed, or after a failed write to the upstream, it keeps reading (and
// dropping) so that the client's close frame is still read while the proxy
// closes: nothing the client sends after the proxy closed reaches the
// upstream. A write that times out (the
// upstream no longer reads) closes the stream.
func (s *splice) clientToUpstream() {
	bp := s.m.buf()
	defer s.m.put(bp)
	buf := *bp
	upDead := false
	for {
		if !s.closed() {
			s.armIdle(s.cli)
			if s.closed() { // Close set the CloseWait deadline meanwhile
				_ = s.cli.SetReadDeadline(s.m.o.Now().Add(s.m.o.CloseWait))
			}
		}
		n, err := s.cli.Read(buf)
		if n > 0 && !upDead && !s.closed() {
			s.last.Store(s.m.o.Now().UnixNano())
			_ = s.up.SetWriteDeadline(s.m.o.Now().Add(s.m.o.WriteTimeout))
			if _, werr := s.up.Write(buf[:n]); werr != nil {
				upDead = true
				if errors.Is(werr, os.ErrDeadlineExceeded) {
					// The upstream stopped reading: what the client
					// sends from now on would be lost, the stream ends.
					// (A connection reset or closed is seen by the
					// upstream's direction.)
					s.c.Close(ReasonError)
				}
			} else {
				s.m.m.upBytes.Add(float64(n))
				s.c.toUpstream += int64(n)
			}
		}
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && !s.closed() {
			switch idle := s.idle(); {
			case idle == 0: // a reload dropped stream_timeout (retime)
				_ = s.cli.SetReadDeadline(time.Time{})
				if s.closed() {
					_ = s.cli.SetReadDeadline(s.m.o.Now().Add(s.m.o.CloseWait))
				}
			case s.silence() >= idle:
				s.c.Close(ReasonIdle)
			}
			continue
		}
		if errors.Is(err, io.EOF) && !upDead {
			// The client half-closed: pass it on, the upstream may still
			// answer.
			if cw, ok := s.up.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
		}
		return
	}
}

// closeFrame is an unmasked (server to client) close frame for reason.
func closeFrame(reason string) []byte {
	code := uint16(1008) // policy violation: access withdrawn or expired
	switch reason {
	case ReasonShutdown, ReasonIdle:
		code = 1001 // going away
	case ReasonError:
		code = 1011 // internal error: the upstream failed
	case ReasonUnavailable:
		code = 1013 // try again later: access could not be checked
	case ReasonRouteChanged:
		// service restart: a reload moved the route, nothing was
		// withdrawn; a reconnect is routed by the new rules (1008 would
		// tell the client not to come back).
		code = 1012
	}
	if len(reason) > 123 {
		reason = reason[:123]
	}
	b := make([]byte, 4, 4+len(reason))
	b[0], b[1] = 0x88, byte(2+len(reason))
	binary.BigEndian.PutUint16(b[2:], code)
	return append(b, reason...)
}

// frames follows the frame boundaries of a WebSocket byte stream without
// decoding payloads.
type frames struct {
	hdr    [14]byte
	hn     int    // header bytes seen of the current frame
	remain uint64 // payload bytes left of the current frame
	// closed: a close frame has begun (the upstream's own close, which
	// the client may be answering): an endpoint sends one.
	closed bool
}

func (f *frames) feed(p []byte) {
	for len(p) > 0 {
		if f.remain > 0 {
			n := min(uint64(len(p)), f.remain)
			f.remain -= n
			p = p[n:]
			continue
		}
		f.hdr[f.hn] = p[0]
		f.hn++
		p = p[1:]
		if f.hn < 2 {
			continue
		}
		need := 2
		l7 := f.hdr[1] & 0x7f
		switch l7 {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if f.hdr[1]&0x80 != 0 {
			need += 4
		}
		if f.hn < need {
			continue
		}
		switch l7 {
		case 126:
			f.remain = uint64(binary.BigEndian.Uint16(f.hdr[2:4]))
		case 127:
			f.remain = binary.BigEndian.Uint64(f.hdr[2:10])
		default:
			f.remain = uint64(l7)
		}
		if f.hdr[0]&0x0f == 0x8 {
			f.closed = true
		}
		f.hn = 0
	}
}

// boundary reports whether the stream stands between two frames.
func (f *frames) boundary() bool { return f.hn == 0 && f.remain == 0 }

// closeFits reports whether the proxy's close frame may follow what was
// relayed: between two frames (a close inside a frame would be read as
// its payload), and no close frame sent yet (the upstream's).
func (f *frames) closeFits() bool { return f.boundary() && !f.closed }

// watchHijack forgets c (and closes its upstream connection) if fasthttp
// never runs the hijack handler: the answer could not be written to a
// client that went away meanwhile. The stream is released first, so that
// once the upstream sees the close the stream no longer counts.
func (m *Manager) watchHijack(c *Conn, started *atomic.Bool, up net.Conn) {
	time.AfterFunc(m.o.HandshakeTimeout, func() {
		if started.CompareAndSwap(false, true) {
			m.release(c, ReasonClient)
			fasttransport.Abandon(up)
		}
	})
}
