package app

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
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
	t.Parallel()
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

// TestProtocolBearerBesideAuthorization: a WebSocket upgrade names one
// credential. A bearer offered as a subprotocol beside an Authorization
// field that is not "Bearer" with that same token (another user's token,
// one that does not verify, another scheme, an empty field), or two
// bearer elements with different tokens, is refused with 400
// ambiguous_credentials, as X-API-Key beside Authorization is: the proxy
// took Authorization (or the first element) and dropped the other
// unread, so which identity the WebSocket got depended on a precedence
// no client, and no log, showed. Nothing is forwarded. Where they agree
// the upgrade goes on, the bearer out of Sec-WebSocket-Protocol; a
// request that asks for no upgrade reads no credential in the field and
// only loses its bearer elements, as before.
func TestProtocolBearerBesideAuthorization(t *testing.T) {
	t.Parallel()
	e, a := startStreams(t, nil)
	tok := e.token(nil)
	other := e.token(func(c testenv.Claims) { c["sub"] = "22222222-2222-4222-8222-222222222222" })
	const upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	for _, c := range []struct{ name, fields string }{
		{"another user's token in Authorization", "Authorization: Bearer " + other + "\r\nSec-WebSocket-Protocol: chat, bearer." + tok},
		{"a token that does not verify in Authorization", "Authorization: Bearer garbage\r\nSec-WebSocket-Protocol: chat, bearer." + tok},
		{"another scheme in Authorization", "Authorization: Basic dTpw\r\nSec-WebSocket-Protocol: chat, bearer." + tok},
		{"an empty Authorization", "Authorization: \r\nSec-WebSocket-Protocol: chat, bearer." + tok},
		{"two Authorization fields", "Authorization: Bearer " + tok + "\r\nAuthorization: Bearer " + tok + "\r\nSec-WebSocket-Protocol: bearer." + tok},
		{"two bearer elements", "Sec-WebSocket-Protocol: chat, bearer." + tok + ", bearer." + other},
		{"two bearer elements, the bad one first", "Sec-WebSocket-Protocol: chat, bearer.garbage, bearer." + tok},
		{"two bearer elements in two fields", "Sec-WebSocket-Protocol: bearer." + other + "\r\nSec-WebSocket-Protocol: chat, bearer." + tok},
	} {
		for _, path := range []string{"/notes/ws", "/notes/open-ws"} {
			n := a.count()
			r := e.raw("GET " + path + " HTTP/1.1\r\nHost: x\r\n" + upgrade + c.fields + "\r\n\r\n")
			if r.status != http.StatusBadRequest || r.prob.Code != problem.CodeAmbiguousCredentials {
				t.Errorf("%s on %s: %d %q, want 400 %s", c.name, path, r.status, r.prob.Code, problem.CodeAmbiguousCredentials)
			}
			if a.count() != n {
				t.Errorf("%s on %s: reached the app", c.name, path)
			}
		}
	}
	// The same token twice: one credential.
	for _, h := range []http.Header{
		{"Authorization": {"Bearer " + tok}, "Sec-WebSocket-Protocol": {"chat, bearer." + tok}},
		{"Authorization": {"bearer " + tok}, "Sec-WebSocket-Protocol": {"chat, BEARER." + tok}},
		{"Sec-WebSocket-Protocol": {"bearer." + tok + ", chat, bearer." + tok}},
	} {
		c, resp, err := e.dialWS("/notes/ws", h)
		if err != nil {
			t.Fatalf("%v: dial = %v (%v)", h, err, resp)
		}
		echo(t, c, "one")
		c.Close()
		got := a.last(t)
		if got.verifyErr != nil || got.identity.UserID != userID {
			t.Fatalf("%v: app saw %+v, %v", h, got.identity, got.verifyErr)
		}
		if p := got.header.Values("Sec-WebSocket-Protocol"); len(p) != 1 || p[0] != "chat" || got.header.Get("Authorization") != "" {
			t.Fatalf("%v: app got Sec-WebSocket-Protocol %q, Authorization %q", h, p, got.header.Get("Authorization"))
		}
	}
	// No upgrade: the field is no credential; its bearers are taken out.
	e.wantStatus(e.raw("GET /notes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+tok+"\r\nSec-WebSocket-Protocol: chat, bearer."+other+"\r\n\r\n"), 200)
	if got := a.last(t); got.identity.UserID != userID || strings.Contains(fmt.Sprint(got.header), other) {
		t.Fatalf("app saw %s, %v", got.identity.UserID, got.header)
	}
}
