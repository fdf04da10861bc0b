package app

import (
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

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
