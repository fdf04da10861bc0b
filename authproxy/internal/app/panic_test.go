package app

import (
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/tollgate-auth/tollgate/shared/logging/logtest"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// panicTransport panics in the upstream round trip: a fault deep inside a
// request's stages (forwarding), where no error return reaches it.
type panicTransport struct{}

func (panicTransport) RoundTrip(*fasthttp.HostClient, *fasthttp.Request, *fasthttp.Response) (bool, error) {
	panic("upstream transport fault")
}

// A panic while a request is handled is answered 500 with the usual problem
// body and request id, is logged with that id, and the proxy goes on
// serving the next request.
func TestPanicInAStageAnswers500AndServesOn(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	tok := e.token(nil)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)

	hcs := e.app.Server.Router().Clients
	saved := make([]fasthttp.RoundTripper, len(hcs))
	for i, hc := range hcs {
		saved[i], hc.Transport = hc.Transport, panicTransport{}
	}
	r := e.do("GET", "/api/v1/users/me", tok, nil)
	e.wantProblem(r, 500, problem.CodeInternal)
	if strings.Contains(string(r.body), "transport fault") {
		t.Fatalf("the panic reached the client: %s", r.body)
	}
	logged := false
	for _, line := range strings.Split(e.logs.String(), "\n") {
		logged = logged || strings.Contains(line, `"msg":"panic"`) && strings.Contains(line, `"request_id":"`+r.prob.RequestID+`"`) &&
			strings.Contains(line, "upstream transport fault")
	}
	if !logged {
		t.Fatalf("the panic was not logged with request id %s: %s", r.prob.RequestID, e.logs.String())
	}

	for i, hc := range hcs {
		hc.Transport = saved[i]
	}
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
}

// A panic while the expectation hook judges a request's credential (here
// in the call that resolves an API key) is answered 500 as in the handler,
// before the body, and the proxy goes on serving.
func TestPanicInExpectHookAnswers500(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: uploadRules})
	secret, _ := e.newAPIKey("tenant:read")
	saved := e.app.internal.Transport
	e.app.internal.Transport = panicTransport{}
	conn, br := dialProxy(t, e.addr)
	expectHeaders(conn, "/uploads/a", "X-API-Key: "+secret+"\r\n", 50_000)
	readAnswers(t, br, []string{"POST"}, []int{500})
	if !strings.Contains(e.logs.String(), "upstream transport fault") {
		t.Fatal("the panic was not logged")
	}
	e.app.internal.Transport = saved
	conn, br = dialProxy(t, e.addr)
	expectHeaders(conn, "/uploads/a", "X-API-Key: "+secret+"\r\n", 5)
	readAnswers(t, br, []string{"POST"}, []int{100})
	_, _ = conn.Write([]byte("hello"))
	readAnswers(t, br, []string{"POST"}, []int{200})
}

// panicValueTransport panics with v in the upstream round trip.
type panicValueTransport struct{ v string }

func (p panicValueTransport) RoundTrip(*fasthttp.HostClient, *fasthttp.Request, *fasthttp.Response) (bool, error) {
	deep(200, func() { panic(p.v) })
	return false, nil
}

// deep calls f n calls down: a panic there has a stack of n more frames.
//
//go:noinline
func deep(n int, f func()) {
	if n == 0 {
		f()
		return
	}
	deep(n-1, f)
}

// A panic's value may hold the request's own bytes (a credential in a
// formatted error) and be of any size: it is logged redacted and cut, as
// an error is, with its stack (cut to logging.MaxStackBytes: a panic deep
// in a recursion has one of any size).
func TestPanicValueIsRedactedAndCut(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	tok := e.token(nil)
	hcs := e.app.Server.Router().Clients
	saved := make([]fasthttp.RoundTripper, len(hcs))
	for i, hc := range hcs {
		saved[i], hc.Transport = hc.Transport, panicValueTransport{
			v: "upstream fault for Authorization: Bearer " + tok + " " + strings.Repeat("x", 10<<10)}
	}
	t.Cleanup(func() {
		for i, hc := range hcs {
			hc.Transport = saved[i]
		}
	})
	r := e.do("GET", "/api/v1/users/me", tok, nil)
	e.wantProblem(r, 500, problem.CodeInternal)
	if strings.Contains(e.logs.String(), tok) {
		t.Fatal("the bearer token in the panic value was logged")
	}
	// 200 frames deep: the stack is cut to its first frames.
	logtest.WantPanicLine(t, e.logs.String(), "", "upstream fault for Authorization: Bearer [redacted] xxx")
}
