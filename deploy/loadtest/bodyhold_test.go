package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// A held request is a POST declaring the whole body and carrying only its
// first bytes, with a bearer token or no credential at all.
func TestRawBodyHead(t *testing.T) {
	for _, tok := range []string{"", "a.b.c"} {
		raw := rawBodyHead("bench", bodyURI, tok, declaredBody, 8<<10)
		br := bufio.NewReader(bytes.NewReader(raw))
		var h fasthttp.RequestHeader
		if err := h.Read(br); err != nil {
			t.Fatalf("token %q: %v", tok, err)
		}
		if string(h.Method()) != "POST" || string(h.RequestURI()) != bodyURI || h.ContentLength() != declaredBody {
			t.Fatalf("token %q: %s %s, Content-Length %d; want POST %s, %d", tok, h.Method(), h.RequestURI(), h.ContentLength(), bodyURI, declaredBody)
		}
		want := ""
		if tok != "" {
			want = "Bearer " + tok
		}
		if got := string(h.Peek("Authorization")); got != want {
			t.Fatalf("Authorization %q, want %q", got, want)
		}
		if rest, _ := io.ReadAll(br); len(rest) != 8<<10 {
			t.Fatalf("token %q: %d body bytes after the headers, want 8192", tok, len(rest))
		}
	}
}

// holdBodies sends each connection's bytes and nothing more, reads the
// memory (sample) only once every connection's bytes have arrived and
// while all are open, counts the ones the server answered or closed by
// then, and closes the rest afterwards. The server is a real listener.
func TestHoldBodies(t *testing.T) {
	const n = 24
	req := rawBodyHead("bench", bodyURI, "", declaredBody, 8<<10)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var (
		whole, extra, open atomic.Int64
		served             sync.WaitGroup
	)
	go func() {
		for k := 0; ; k++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			served.Add(1)
			open.Add(1)
			go func() {
				defer served.Done()
				defer open.Add(-1)
				defer c.Close()
				buf := make([]byte, len(req))
				if _, err := io.ReadFull(c, buf); err != nil || !bytes.Equal(buf, req) {
					return
				}
				whole.Add(1)
				switch k % 4 {
				case 1: // answered, kept open
					_, _ = c.Write([]byte("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"))
				case 2: // answered and closed
					_, _ = c.Write([]byte("HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
					return
				}
				m, _ := io.Copy(io.Discard, c)
				extra.Add(m)
			}()
		}
	}()
	var atSample struct{ whole, open int64 }
	calls := 0
	res := holdBodies(context.Background(), ln.Addr().String(), n, func(int) []byte { return req }, 300*time.Millisecond, func() {
		calls++
		atSample.whole, atSample.open = whole.Load(), open.Load()
	})
	ln.Close()
	served.Wait()
	if calls != 1 || atSample.whole != n || atSample.open != n-n/4 {
		t.Fatalf("sample called %d times, with %d whole requests received and %d connections open; want once, %d and %d", calls, atSample.whole, atSample.open, n, n-n/4)
	}
	if res.established != n || res.target != n || res.answered != n/2 || res.closed != n/4 || res.firstErr != "" {
		t.Fatalf("hold %+v; want %d established, %d answered, %d closed", res, n, n/2, n/4)
	}
	if extra.Load() != 0 {
		t.Fatalf("%d bytes sent after the held request", extra.Load())
	}
	if open.Load() != 0 {
		t.Fatalf("%d connections left open", open.Load())
	}
}

func TestBodyHoldTable(t *testing.T) {
	rows := []bodyHoldRow{
		{binary: "this tree", variant: bodyVariants[0], hold: bodyHold{target: 2000, established: 2000},
			rssBefore: 48 << 10, rssHeld: 96 << 10, heapBefore: 25 << 20, heapHeld: 60 << 20},
		{binary: "/tmp/old", variant: bodyVariants[1], hold: bodyHold{target: 2000, established: 1990, answered: 3, closed: 2, firstErr: "10 failed, first: reset"},
			rssBefore: 48 << 10, rssHeld: -1, heapBefore: 25 << 20, heapHeld: -1, exited: true},
	}
	reportHas(t, bodyHoldTable(rows),
		"| this tree | no credential | 8 KiB of 1024 KiB | 2000/2000 | 0 / 0 | 48 MiB | 96 MiB | 24.6 KiB | 25 MiB | 60 MiB |",
		"| /tmp/old | valid token | 64 KiB of 1024 KiB | 1990/2000 | 3 / 2 | 48 MiB | exited | – | 25 MiB | – |",
		"(/tmp/old, valid token: connections 10 failed, first: reset)",
	)
}
