package e2e

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// capture is a signed request as it travels from a proxy to coreapi: its
// method, target, headers and body, to be sent again as an attacker on the
// pod network would.
type capture struct {
	method, target string
	header         http.Header
	body           []byte
}

// capturedPatch is PATCH /api/v1/users/me for the owner, v2-signed with the
// core key exactly as a proxy signs it (fresh request id and timestamp).
func capturedPatch(t *testing.T, owner account, core *service, body string) capture {
	t.Helper()
	secret, err := base64.StdEncoding.DecodeString(sys.hmacKey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := identity.NewKeySigner(identity.Key{ID: "core", Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	r, err := http.NewRequest("PATCH", core.url("/api/v1/users/me"), bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/json")
	// The owner's live session, as the proxy names it from the token: a
	// display-name change needs one bound to the tenant.
	id := identity.Identity{Principal: identity.PrincipalUser, UserID: owner.UserID, TenantID: owner.TenantID,
		SessionID: claimsOf(t, owner.Tokens.AccessToken).Sid,
		Roles:     []string{"owner"}, Permissions: append([]string(nil), allPermissions...)}
	if err := verify.Sign(r, s, id, time.Now()); err != nil {
		t.Fatal(err)
	}
	return capture{method: r.Method, target: r.URL.String(), header: r.Header.Clone(), body: []byte(body)}
}

// send sends the captured request again, with body instead of the captured
// one when body is non-nil; the headers (signature, timestamp, request id)
// are the captured ones.
func (c capture) send(t *testing.T, body []byte) reply {
	t.Helper()
	if body == nil {
		body = c.body
	}
	r, err := http.NewRequest(c.method, c.target, io.NopCloser(bytes.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	r.ContentLength = int64(len(body))
	r.Header = c.header.Clone()
	return do(t, r)
}

// A signed request captured between a proxy and coreapi
// and replayed directly to that coreapi within the 30 s window is refused,
// as is the same request with a different body; a request whose body was
// swapped before it ever reached coreapi is refused too (the body digest is
// signed). Each refusal leaves the user unchanged. The same holds for an
// app built on the SDK: a POST /notes captured on its way to the example
// app and sent again creates no second note.
func TestCapturedSignedRequestReplayRefused(t *testing.T) {
	owner := signup(t, sys.proxyA)
	for _, core := range []*service{sys.coreA, sys.coreB} {
		t.Run(core.name, func(t *testing.T) {
			first := capturedPatch(t, owner, core, `{"display_name":"first `+core.name+`"}`)
			r := first.send(t, nil)
			expect(t, r, http.StatusOK)
			if got := decode[meBody](t, r).DisplayName; got != "first "+core.name {
				t.Fatalf("display_name %q after the original request", got)
			}

			// The same bytes again, well inside the window: a replay.
			replays := rejected(t, core, "replay")
			expectProblem(t, first.send(t, nil), http.StatusUnauthorized)
			if n := rejected(t, core, "replay"); n != replays+1 {
				t.Fatalf("%s: rejected{reason=replay} went from %v to %v, want +1", core.name, replays, n)
			}
			// The captured headers with another body.
			sigs := rejected(t, core, "signature")
			expectProblem(t, first.send(t, []byte(`{"display_name":"replayed"}`)), http.StatusUnauthorized)

			// A request never sent, its body swapped in transit.
			fresh := capturedPatch(t, owner, core, `{"display_name":"meant"}`)
			expectProblem(t, fresh.send(t, []byte(`{"display_name":"swapped"}`)), http.StatusUnauthorized)
			if n := rejected(t, core, "signature"); n != sigs+2 {
				t.Fatalf("%s: rejected{reason=signature} went from %v to %v, want +2 (two bodies that do not match their signature)", core.name, sigs, n)
			}

			if got := me(t, sys.proxyB, owner.Tokens.AccessToken).DisplayName; got != "first "+core.name {
				t.Fatalf("display_name %q: a refused request changed the user", got)
			}
			// The swapped request's own body still passes once: the refusals
			// were the replay memory's and the digest's, not the key's.
			expect(t, fresh.send(t, nil), http.StatusOK)
		})
	}
	t.Run("notes", func(t *testing.T) {
		text := "only once " + randToken(6)
		body := `{"text":"` + text + `"}`
		user := identity.Identity{Principal: identity.PrincipalUser, UserID: owner.UserID, TenantID: owner.TenantID,
			Roles: []string{"owner"}, Permissions: append([]string(nil), allPermissions...)}
		post := func() capture { // as a proxy forwards it: signed with the app's key
			r := signedRequest(t, "POST", "http://"+sys.notes.addr+"/notes", sys.notesKeys[0], user, body)
			return capture{method: r.Method, target: r.URL.String(), header: r.Header.Clone(), body: []byte(body)}
		}
		stored := func() int { // read through a proxy, as the owner
			n := 0
			for _, nt := range decode[struct{ Data []note }](t, call(t, "GET", sys.proxyA.url("/notes"), owner.Tokens.AccessToken, nil)).Data {
				if nt.Text == text {
					n++
				}
			}
			return n
		}
		captured := post()
		expect(t, captured.send(t, nil), http.StatusCreated)
		if p := expectProblem(t, captured.send(t, nil), http.StatusUnauthorized); p.Code != problem.CodeUnauthenticated {
			t.Fatalf("the replayed POST: code %q, want %q", p.Code, problem.CodeUnauthenticated)
		}
		if n := stored(); n != 1 {
			t.Fatalf("%d notes %q after the replayed POST, want 1", n, text)
		}
		// The same note sent anew (a new request id, as the proxy signs a
		// client's retry) is created.
		expect(t, post().send(t, nil), http.StatusCreated)
		if n := stored(); n != 2 {
			t.Fatalf("%d notes %q after the POST sent anew, want 2", n, text)
		}
	})
}

// rejected reads coreapi_identity_rejected_total{reason} from core's
// metrics (0 while the series does not exist yet).
func rejected(t *testing.T, core *service, reason string) float64 {
	t.Helper()
	resp, err := metricsClient.Get("http://" + core.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	want := fmt.Sprintf(`coreapi_identity_rejected_total{reason=%q} `, reason)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", core.name, sc.Text(), err)
			}
			return f
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return 0
}
