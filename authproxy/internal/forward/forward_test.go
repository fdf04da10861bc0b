package forward

import (
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// A hung upstream (connections accepted, nothing answered) must cost one
// timeout, not one per retry attempt.
func TestHungUpstreamTimesOutOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conns = append(conns, c) // read nothing, answer nothing
		}
	}()
	const timeout = 300 * time.Millisecond
	hc := NewHostClient(Options{Addr: ln.Addr().String(), MaxConns: 4, MaxConnWait: time.Second, IdleTimeout: time.Second, Timeout: timeout})
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + ln.Addr().String() + "/api/v1/users/me")
	req.Header.SetMethod(fasthttp.MethodGet)

	err = hc.Do(req, resp)
	if !errors.Is(err, fasthttp.ErrTimeout) {
		t.Fatalf("Do = %v, want ErrTimeout", err)
	}
	if f, _ := Classify(err); f != Timeout {
		t.Errorf("Classify(%v) = %v, want Timeout", err, f)
	}
	// A retry would need a new connection (the timed-out one is closed).
	if n := accepted.Load(); n != 1 {
		t.Errorf("connections to the hung upstream = %d, want 1: the GET was retried after its timeout", n)
	}
}
