package server

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// scheme is "https" on a TLS connection, whatever wraps it, and "http" on
// a TCP one and on any other connection, as fasthttp's IsTLS tells them.
func TestSchemeOfConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tcp, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	pipe, other := net.Pipe()
	defer pipe.Close()
	defer other.Close()
	tlsConn := tls.Client(tcp, &tls.Config{ServerName: "proxy.local"})
	// A type that embeds *tls.Conn (fasthttp's IsTLS counts it as TLS).
	type wrapped struct{ *tls.Conn }
	app := fiber.New()
	for _, tc := range []struct {
		name string
		conn net.Conn
		want string
	}{
		{"tcp", tcp, "http"},
		{"pipe", pipe, "http"},
		{"tls", tlsConn, "https"},
		{"wrapped tls", wrapped{tlsConn}, "https"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fctx fasthttp.RequestCtx
			fctx.Init2(tc.conn, nil, false)
			c := app.AcquireCtx(&fctx)
			defer app.ReleaseCtx(c)
			if got := scheme(c); got != tc.want {
				t.Errorf("scheme = %q, want %q", got, tc.want)
			}
			if got, want := scheme(c) == "https", fctx.IsTLS(); got != want {
				t.Errorf("scheme says TLS %v, fasthttp's IsTLS %v", got, want)
			}
		})
	}
}
