package server

import (
	"bufio"
	"errors"
	"io"
	"net"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/tollgate-auth/tollgate/authproxy/internal/streams"
	"github.com/valyala/fasthttp"
)

// closeDelimited has the answer of an HTTP/1.0 request whose body comes
// without a length (streamed from the upstream, chunked or until its
// connection's end) written the way HTTP/1.0 reads such a body: no
// Transfer-Encoding, the bytes until the connection closes (RFC 9112
// section 6.3). fasthttp chunks every body of unknown length, whatever the
// request's version, and an HTTP/1.0 client (ApacheBench, an old health
// checker) reads the chunk sizes as part of the body. observe calls it
// last, once the answer is otherwise complete; fasthttp hands the
// connection over without writing the answer, and closes it once
// writeUntilClose returns.
//
//go:noinline
func (s *Server) closeDelimited(c *fiber.Ctx) {
	ctx := c.Context()
	ctx.HijackSetNoResponse(true)
	timeout := s.o.WriteTimeout
	ctx.Hijack(func(conn net.Conn) { writeUntilClose(&ctx.Response, conn, timeout) })
}

// writeUntilClose writes resp's header, without a length or chunks and
// with "Connection: close", then its body stream as it is read, each
// write within timeout (0: none), and closes the body stream. A body the
// upstream cut short ends with the connection reset (streams.Reset).
func writeUntilClose(resp *fasthttp.Response, conn net.Conn, timeout time.Duration) {
	body := resp.BodyStream()
	defer func() { _ = resp.CloseBodyStream() }() // the connection closes either way
	resp.Header.SetContentLength(-2)              // identity: neither Content-Length nor Transfer-Encoding
	resp.Header.SetConnectionClose()
	w := bufio.NewWriterSize(conn, 16<<10)
	setDeadline := func() {
		if timeout > 0 {
			_ = conn.SetWriteDeadline(time.Now().Add(timeout))
		}
	}
	setDeadline()
	if _, err := w.Write(resp.Header.Header()); err != nil || body == nil {
		_ = w.Flush()
		return
	}
	buf := make([]byte, 16<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			setDeadline()
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			// What arrived is sent at once, as the chunked writer does:
			// a slow stream is not held back.
			if w.Flush() != nil {
				return
			}
		}
		if err != nil {
			_ = w.Flush()
			if !errors.Is(err, io.EOF) {
				// The upstream cut its answer short (its connection closed
				// before the last chunk, or failed): the close that follows
				// would end the body as whole for the client.
				streams.Reset(conn)
			}
			return
		}
	}
}
