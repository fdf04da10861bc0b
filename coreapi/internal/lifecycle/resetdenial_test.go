package lifecycle_test

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail/mailtest"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// forgotFrom asks for a reset link for email from the client ip.
func (x *env) forgotFrom(t *testing.T, ip, email string) []byte {
	t.Helper()
	r := x.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/password/forgot",
		Body: map[string]string{"email": email}, ClientIP: ip})
	wantStatus(t, r, http.StatusAccepted)
	return r.Body
}

// resetMails are the reset mails received so far, oldest first.
func (x *env) resetMails(t *testing.T) []mailtest.Message {
	t.Helper()
	x.flush(t)
	var out []mailtest.Message
	for _, m := range x.smtp.Messages() {
		if m.Subject == "Reset your password" {
			out = append(out, m)
		}
	}
	return out
}

// TestForgotFromElsewhereLeavesTheOwnersReset: someone who knows an
// address and asks for its reset links again and again, from one client
// network, spends only that network's share of the address's reset mails
// (ForgotPerAddress): the owner, asking from their own network, still
// gets a link. And the links mailed are not revoked by the requests that
// follow: the owner's link, in the inbox, cannot be killed by someone
// asking for another one. The answers are all alike.
func TestForgotFromElsewhereLeavesTheOwnersReset(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	x.signup(t, "vic@example.com")
	owner := x.forgotFrom(t, "198.51.100.7", "vic@example.com")
	mine := x.resetMails(t)
	if len(mine) != 1 {
		t.Fatalf("%d reset mails for the owner's request, want 1", len(mine))
	}
	var bodies [][]byte
	for range 5 {
		bodies = append(bodies, x.forgotFrom(t, "203.0.113.9", "vic@example.com"))
	}
	for _, b := range bodies {
		if !bytes.Equal(b, owner) {
			t.Fatalf("forgot answers differ: %s vs %s", b, owner)
		}
	}
	if n := len(x.resetMails(t)); n != 4 {
		t.Errorf("%d reset mails after 5 more requests from another network, want 4 (3 for that network)", n)
	}
	// The owner, an hour's share of mails spent from elsewhere, asks again
	// and gets a link.
	if b := x.forgotFrom(t, "198.51.100.7", "vic@example.com"); !bytes.Equal(b, owner) {
		t.Fatalf("forgot answers differ: %s vs %s", b, owner)
	}
	if n := len(x.resetMails(t)); n != 5 {
		t.Errorf("%d reset mails after the owner asked again, want 5: the owner's request sent nothing", n)
	}
	// The owner's first link still works, after all those requests.
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": mine[0].Token(), "new_password": "the owner's new one"}), http.StatusNoContent)
	// And, used, it ended every other.
	for _, m := range x.resetMails(t)[1:] {
		wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
			map[string]string{"token": m.Token(), "new_password": "someone else's"}), 400, problem.CodeLinkInvalid)
	}
}

// TestForgotInboxCeiling: asked from many networks, an address still gets
// at most ForgotPerInbox reset mails (nobody floods an inbox from a
// botnet); the owner's request above it is answered alike and sends
// nothing, but the links already mailed all work, so the owner can
// still reset the password with one of them.
func TestForgotInboxCeiling(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{ForgotPerAddress: limit(2), ForgotPerInbox: limit(3), ForgotPerIP: limit(100)})
	x.signup(t, "wen@example.com")
	for _, ip := range []string{"203.0.113.1", "203.0.113.1", "203.0.113.2", "203.0.113.2", "203.0.113.3"} {
		x.forgotFrom(t, ip, "wen@example.com")
	}
	x.forgotFrom(t, "198.51.100.7", "wen@example.com")
	got := x.resetMails(t)
	if len(got) != 3 {
		t.Fatalf("%d reset mails, want 3 (ForgotPerInbox)", len(got))
	}
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": got[0].Token(), "new_password": "the owner's new one"}), http.StatusNoContent)
}
