package streams

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"github.com/valyala/fasthttp"
)

// ServeStream forwards a request of a route with a stream_timeout over a
// connection of its own and streams the answer: every read from the
// upstream is flushed to the client at once (server-sent events are never
// held back), a silence longer than stream_timeout ends it, and the
// proxy's request and write timeouts do not apply once the headers have
// arrived. Closing it (revocation, token expiry, shutdown) ends the
// response cleanly (the last chunk), which an EventSource sees as the end
// of the stream.
func (m *Manager) ServeStream(r Request) error {
	c, err := m.reserve("sse", r.Route.Prefix, r.Claims, r.Route, r.RequestID)
	if err != nil {
		return err
	}
	up, err := m.dial(r.Addr)
	if err != nil {
		m.release(c, ReasonError)
		return err
	}
	ctx := r.Ctx
	_ = up.SetDeadline(m.o.Now().Add(m.o.HandshakeTimeout))
	// One request per connection: the stream owns it to the end.
	ctx.Request.Header.SetConnectionClose()
	bw := bufio.NewWriterSize(up, 4<<10)
	if err := ctx.Request.Write(bw); err == nil {
		err = bw.Flush()
	}
	if err != nil {
		up.Close()
		m.release(c, ReasonError)
		return errors.Join(ErrUpstream, err)
	}
	ic := &idleConn{Conn: up}
	resp := fasthttp.AcquireResponse()
	resp.StreamBody = true
	resp.SkipBody = ctx.IsHead()
	if err := resp.Read(bufio.NewReaderSize(ic, 4<<10)); err != nil {
		fasthttp.ReleaseResponse(resp)
		up.Close()
		m.release(c, ReasonError)
		return errors.Join(ErrUpstream, err)
	}
	resp.Header.CopyTo(&ctx.Response.Header)
	ctx.Response.Header.ResetConnectionClose()
	if resp.SkipBody {
		fasthttp.ReleaseResponse(resp)
		up.Close()
		m.release(c, ReasonUpstream)
		return nil
	}
	_ = up.SetDeadline(time.Time{})
	ic.idle = r.Route.StreamTimeout
	raw := ctx.Conn()
	// Closing the connection ends the blocked read at once.
	m.start(c, func(string) { up.Close() })
	body := resp.BodyStream()
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		reason := ReasonUpstream
		defer func() {
			up.Close()
			_ = resp.CloseBodyStream()
			fasthttp.ReleaseResponse(resp)
			m.release(c, reason)
		}()
		bp := m.buf()
		defer m.put(bp)
		buf := *bp
		for {
			if c.Reason() != "" {
				return
			}
			n, err := body.Read(buf)
			if n > 0 {
				_ = raw.SetWriteDeadline(m.o.Now().Add(m.o.WriteTimeout))
				if _, werr := w.Write(buf[:n]); werr != nil {
					reason = ReasonClient
					return
				}
				if werr := w.Flush(); werr != nil {
					reason = ReasonClient
					return
				}
				m.m.down.Add(float64(n))
			}
			if err == nil {
				continue
			}
			switch {
			case c.Reason() != "":
			case errors.Is(err, os.ErrDeadlineExceeded):
				reason = ReasonIdle
			case errors.Is(err, io.EOF):
			default:
				reason = ReasonError
			}
			return
		}
	})
	return nil
}

// idleConn sets a read deadline of idle before each read once idle is set,
// so only a silence longer than idle times out.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	if c.idle > 0 {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	}
	return c.Conn.Read(p)
}
