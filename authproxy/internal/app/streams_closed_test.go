package app

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// gatedUpstream answers each request, its header read, only once gate is
// closed: with answer, written at once (the header and the first bytes of
// the body in one write), then it holds the connection open until the
// proxy closes it. asked gets a value for each request read.
func gatedUpstream(t *testing.T, answer string) (url string, asked <-chan struct{}, gate chan struct{}) {
	t.Helper()
	a, g := make(chan struct{}, 16), make(chan struct{})
	addr := serveRaw(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		a <- struct{}{}
		<-g
		_, _ = io.WriteString(c, answer)
		_, _ = io.Copy(io.Discard, c)
	})
	return "http://" + addr, a, g
}

// An event stream closed while its upstream had not answered yet (here:
// its member disabled meanwhile) relays nothing of the upstream's answer:
// the events that came along with the answer's header, read with it, were
// relayed after the close all the same (and so, on a stream closed later,
// was whatever the relay had read ahead), to a member who no longer had
// access. Nothing having gone to the client yet, it gets what a request of
// the member gets now: 401 invalid_token.
func TestEventStreamClosedBeforeItsAnswerRelaysNothing(t *testing.T) {
	url, asked, gate := gatedUpstream(t, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"15\r\nevent: note\ndata: x\n\n\r\n")
	e := start(t, envOpt{vars: map[string]string{"LOG_LEVEL": "info"}, rules: "upstreams:\n  notes:\n    url: " + url + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /events, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], stream_timeout: 10s}\n"})
	e.core.SetProjection(notesProjection())
	type answer struct {
		status int
		body   string
		err    error
	}
	got := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+e.addr+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+e.token(nil))
		resp, err := e.client.Do(req)
		if err != nil {
			got <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- answer{status: resp.StatusCode, body: string(b), err: err}
	}()
	select {
	case <-asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the upstream")
	}
	p := notesProjection()
	p.MembershipStatus = "disabled"
	e.core.SetProjection(p)
	e.publish("auth.invalidate.user." + userID)
	testenv.Eventually(t, func() error {
		if !strings.Contains(e.logs.String(), "stream closed: access withdrawn") {
			return errors.New("not closed yet")
		}
		return nil
	})
	close(gate)
	select {
	case a := <-got:
		if a.err != nil || a.status != 401 || !strings.Contains(a.body, `"code":"`+problem.CodeInvalidToken+`"`) || strings.Contains(a.body, "note") {
			t.Fatalf("client got %d %q (%v); want 401 invalid_token, no event", a.status, a.body, a.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not end")
	}
	testenv.Eventually(t, func() error { return testenv.Want("open streams", e.app.Streams.Open(), 0) })
}
