package app

import (
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// BenchmarkWebSocketEcho is one 64-byte message's round trip to an echoing
// upstream: direct, through the proxy (authorized once at the upgrade,
// then spliced: bytes copied, frame boundaries tracked), and through a
// relay that decodes and re-encodes every message (what a proxy built on a
// WebSocket library would do), which is why the proxy splices.
func BenchmarkWebSocketEcho(b *testing.B) {
	e, a := startStreamsB(b, nil)
	relay := startDecodingRelay(b, "ws://"+a.addr+"/notes/open-ws")
	for _, tc := range []struct {
		name, url string
		hdr       http.Header
	}{
		{"direct", "ws://" + a.addr + "/notes/open-ws", nil},
		{"authproxy", "ws://" + e.addr + "/notes/ws", bearer(e.token(nil))},
		{"decoding_relay", "ws://" + relay + "/", nil},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c, _, err := websocket.DefaultDialer.Dial(tc.url, tc.hdr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg := make([]byte, 64)
			b.ReportAllocs()
			for b.Loop() {
				if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
					b.Fatal(err)
				}
				if _, _, err := c.ReadMessage(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIdleWebSockets holds idleConns idle WebSockets open, direct and
// through the proxy, and reports the heap and stack in use per connection
// (client, proxy and upstream share this process: the proxy's own cost is
// the difference). The process may hold 20 000 descriptors here and a
// proxied connection takes four, hence 4 000 rather than 10 000.
func BenchmarkIdleWebSockets(b *testing.B) {
	const idleConns = 4000
	e, a := startStreamsB(b, map[string]string{"STREAM_MAX_CONNS": "0", "STREAM_MAX_PER_USER": "0"})
	tok := e.token(nil)
	for range b.N {
		direct := idleMemory(b, idleConns, "ws://"+a.addr+"/notes/open-ws", nil)
		proxied := idleMemory(b, idleConns, "ws://"+e.addr+"/notes/ws", bearer(tok))
		b.ReportMetric(direct, "direct-B/conn")
		b.ReportMetric(proxied, "proxied-B/conn")
		b.ReportMetric(proxied-direct, "proxy-B/conn")
	}
}

// idleMemory opens n connections to url and returns the heap and stack in
// use per connection, then closes them.
func idleMemory(b *testing.B, n int, url string, hdr http.Header) float64 {
	b.Helper()
	before := inUse()
	conns := make([]*websocket.Conn, 0, n)
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
	for range n {
		c, _, err := d.Dial(url, hdr)
		if err != nil {
			b.Fatalf("after %d connections: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	after := inUse()
	for _, c := range conns {
		c.Close()
	}
	return float64(after-before) / float64(n)
}

func inUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

func startStreamsB(b *testing.B, vars map[string]string) (*env, *streamApp) {
	b.Helper()
	a := newStreamApp(b)
	e := start(b, envOpt{rules: a.rules(""), vars: vars})
	e.core.SetProjection(notesProjection())
	return e, a
}

// startDecodingRelay is a message-level WebSocket relay to upstream.
func startDecodingRelay(b *testing.B, upstream string) string {
	b.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up, _, err := websocket.DefaultDialer.Dial(upstream, nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer up.Close()
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		go pump(up, c)
		pump(c, up)
	})}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func pump(dst, src *websocket.Conn) {
	for {
		mt, p, err := src.ReadMessage()
		if err != nil {
			dst.Close()
			return
		}
		if err := dst.WriteMessage(mt, p); err != nil {
			return
		}
	}
}
