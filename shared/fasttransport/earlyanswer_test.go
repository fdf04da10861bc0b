package fasttransport

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// resettingUpstream reads a request's header, writes answer (when not
// empty) and resets the connection, the body unread.
func resettingUpstream(t *testing.T, answer string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				_, _ = io.WriteString(c, answer)
				_ = c.(*net.TCPConn).SetLinger(0)
			}()
		}
	}()
	return ln.Addr().String()
}

// An upload the upstream answers and resets while it is being written
// (more than the socket buffers hold): RoundTrip returns the answer with
// ErrAnsweredEarly, and asks for no retry; with no answer, a
// PartlySentError that wraps the write's failure.
func TestAnswerAfterFailedWrite(t *testing.T) {
	for _, tc := range []struct {
		name, answer string
	}{
		{"answered", "HTTP/1.1 415 Unsupported Media Type\r\nContent-Length: 4\r\n\r\nnope"},
		{"no answer", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hc := client(resettingUpstream(t, tc.answer))
			attempts := 0
			hc.RetryIfErr = func(*fasthttp.Request, int, error) (bool, bool) { attempts++; return false, true }
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://" + hc.Addr + "/up")
			req.Header.SetMethod("PUT")
			req.SetBody(make([]byte, 32<<20))
			err := hc.Do(req, resp)
			if attempts != 0 {
				t.Errorf("the client was asked to retry %d times", attempts)
			}
			if tc.answer != "" {
				if !errors.Is(err, ErrAnsweredEarly) || resp.StatusCode() != 415 || string(resp.Body()) != "nope" {
					t.Fatalf("err %v, answer %d %q; want ErrAnsweredEarly with the 415", err, resp.StatusCode(), resp.Body())
				}
				return
			}
			var partly *PartlySentError
			if !errors.As(err, &partly) {
				t.Fatalf("err %v, want a PartlySentError", err)
			}
		})
	}
}
