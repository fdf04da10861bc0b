package app

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestProtocolBearerNotAnElementRefused: a bearer is offered as a
// WebSocket subprotocol as an element of its own ("chat, bearer.<token>":
// RFC 6455's Sec-WebSocket-Protocol is a comma list of tokens). An
// element that is no token and holds "bearer." (in any case) is not one
// the proxy can take the bearer out of: "chat bearer.<token>" went to the
// app, token and all, in Sec-WebSocket-Protocol (and to its logs). Such a
// request is refused with 400 bad_request and nothing is forwarded, on an
// upgrade and a plain request, protected or public; a field without a
// bearer goes on as it came, and one spelled with '_' is removed.
func TestProtocolBearerNotAnElementRefused(t *testing.T) {
	e, a := startStreams(t, nil)
	tok := e.token(nil)
	for _, v := range []string{"chat bearer." + tok, "chat\tbearer." + tok, "chat;bearer." + tok, `"bearer.` + tok + `"`,
		"chat BEARER." + tok, "bearer." + tok + " chat", "chat/bearer." + tok} {
		for _, path := range []string{"/notes/ws", "/notes/open-ws", "/notes", "/notes/events"} {
			for _, upgrade := range []bool{true, false} {
				name := fmt.Sprintf("%q on %s, upgrade %v", strings.ReplaceAll(v, tok, "<token>"), path, upgrade)
				n := a.count()
				req := "GET " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nSec-WebSocket-Protocol: " + v + "\r\n"
				if upgrade {
					req += "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
				}
				r := e.raw(req + "\r\n")
				if r.status != http.StatusBadRequest || r.prob.Code != problem.CodeBadRequest {
					t.Errorf("%s: %d %q, want 400 %s", name, r.status, r.prob.Code, problem.CodeBadRequest)
				}
				if strings.Contains(string(r.body), tok[:20]) {
					t.Errorf("%s: the answer quotes the token: %s", name, r.body)
				}
				if a.count() != n {
					t.Errorf("%s: reached the app", name)
				}
			}
		}
	}
	// No bearer: the field goes on as the client wrote it.
	e.wantStatus(e.raw("GET /notes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+tok+"\r\nSec-WebSocket-Protocol: chat superchat\r\n\r\n"), 200)
	if got := a.last(t).header.Values("Sec-WebSocket-Protocol"); len(got) != 1 || got[0] != "chat superchat" {
		t.Fatalf("Sec-WebSocket-Protocol without a bearer reached the app as %q, want it as it came", got)
	}
	// Spelled with '_', it is no WebSocket field: removed, as one whose
	// bearer is an element of its own is.
	e.wantStatus(e.raw("GET /notes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+tok+"\r\nSec_WebSocket_Protocol: chat bearer."+tok+"\r\n\r\n"), 200)
	for k := range a.last(t).header {
		if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), "Sec-WebSocket-Protocol") {
			t.Fatalf("%s reached the app", k)
		}
	}
}
