package lifecycle_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestExpiredLinkPagesNameTheAddress: the page an expired link opens says
// that it expired, whose it was (the address masked, as the page of a live
// link names it) and how to get a new one, however often it is opened or
// its form posted: the expired token is never used, and stays known as
// expired until the sweep deletes it. A token that is no link names
// nothing, as before.
func TestExpiredLinkPagesNameTheAddress(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "eve.expired@example.com")
	verify := x.mail(t, "eve.expired@example.com", "Confirm").Token()
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "eve.expired@example.com"}), 202)
	reset := x.mail(t, "eve.expired@example.com", "Reset").Token()
	const shown = "e***@example.com"
	page := func(path string) string {
		t.Helper()
		r := x.Get(t, nil, path)
		wantStatus(t, r, http.StatusOK)
		return string(r.Body)
	}
	wantIn := func(what, body string, wants ...string) {
		t.Helper()
		for _, w := range wants {
			if !strings.Contains(body, w) {
				t.Errorf("%s lacks %q:\n%s", what, w, body)
			}
		}
	}

	// Live links name their address the same way.
	wantIn("a live reset link's page", page("/reset-password?token="+reset), "Choose a new password for "+shown, `name="token" value="`+reset+`"`)
	wantIn("a live verification link's page", page("/verify-email?token="+verify), "This link confirms "+shown)

	x.exec(t, `UPDATE action_tokens SET expires_at = now() - interval '1 second' WHERE user_id = $1`, a.c.Sub)
	resetExpired := func(what, body string) {
		t.Helper()
		wantIn(what, body, "This link to reset the password of "+shown+" has expired", `action="/api/v1/auth/password/forgot"`, `name="email"`)
		if strings.Contains(body, `name="token"`) || strings.Contains(body, `name="new_password"`) {
			t.Errorf("%s offers the expired link's form:\n%s", what, body)
		}
	}
	resetExpired("an expired reset link's page", page("/reset-password?token="+reset))
	for i := range 2 {
		r := postForm(t, x, "/api/v1/auth/password/reset", form("token", reset, "new_password", "long enough pw"))
		wantStatus(t, r, http.StatusSeeOther)
		loc := r.Header.Get("Location")
		if u, err := url.Parse(loc); err != nil || u.Query().Get("error") != problem.CodeLinkExpired {
			t.Fatalf("post %d of the expired link: redirected to %q, want error=link_expired", i+1, loc)
		}
		resetExpired("the page after a post of the expired link", page(loc))
	}
	wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": reset, "new_password": "long enough pw"}), 400, problem.CodeLinkExpired)

	verifyExpired := page("/verify-email?token=" + verify)
	wantIn("an expired verification link's page", verifyExpired, "This link to confirm "+shown+" has expired", "ask for a new one")
	if strings.Contains(verifyExpired, "<form") {
		t.Errorf("the expired verification link's page has a form:\n%s", verifyExpired)
	}
	r := postForm(t, x, "/api/v1/auth/verify-email", form("token", verify, "password", pw))
	wantStatus(t, r, http.StatusSeeOther)
	wantIn("the page after a post of the expired verification link", page(r.Header.Get("Location")), "This link to confirm "+shown+" has expired")
	if n := x.count(t, `SELECT count(*) FROM users WHERE id = $1 AND email_verified_at IS NOT NULL`, a.c.Sub); n != 0 {
		t.Error("the expired verification link verified the address")
	}

	// The sweep keeps them for ExpiredLinksKept: an old mail opened days
	// later still names its address.
	if _, err := x.lc.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	resetExpired("an expired reset link's page after a sweep", page("/reset-password?token="+reset))
	wantIn("an expired verification link's page after a sweep", page("/verify-email?token="+verify), "This link to confirm "+shown+" has expired")

	// Past it, the sweep deletes them; then they are links of nobody's.
	x.exec(t, `UPDATE action_tokens SET expires_at = now() - make_interval(secs => $2) - interval '1 second' WHERE user_id = $1`,
		a.c.Sub, lifecycle.ExpiredLinksKept.Seconds())
	if _, err := x.lc.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := x.liveLinks(t, a.c.Sub, string(onetime.PasswordReset)) + x.count(t, `SELECT count(*) FROM action_tokens WHERE user_id = $1`, a.c.Sub); n != 0 {
		t.Fatalf("%d links left after the sweep", n)
	}
	forged, _, err := onetime.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{reset, forged} {
		body := page("/reset-password?token=" + tok)
		if strings.Contains(body, "@") || strings.Contains(body, "expired") || !strings.Contains(body, `name="new_password"`) {
			t.Errorf("the page of a token that is no link says more than the form:\n%s", body)
		}
		body = page("/verify-email?token=" + tok)
		if strings.Contains(body, "@") || strings.Contains(body, "expired") || !strings.Contains(body, `name="password"`) {
			t.Errorf("the verification page of a token that is no link says more than the form:\n%s", body)
		}
	}
}

// TestExpiredInvitationPageNamesTheInvitation: an expired invitation's
// link says which invitation expired (tenant and address, as its page
// said while it was pending) and who can send it again.
func TestExpiredInvitationPageNamesTheInvitation(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@acme.test")
	x.exec(t, `UPDATE tenants SET name = 'Acme' WHERE id = $1`, owner.c.Tid)
	x.exec(t, `UPDATE users SET display_name = 'Ada' WHERE id = $1`, owner.c.Sub)
	x.invite(t, owner.id, "late@example.com")
	tok := x.mail(t, "late@example.com", "Acme").Token()
	x.exec(t, `UPDATE invitations SET expires_at = now() - interval '1 second'`)
	want := "This invitation to join Acme as late@example.com has expired. Ask Ada to send it again."
	body := string(x.Get(t, nil, "/accept-invitation?token="+tok).Body)
	if !strings.Contains(body, want) || strings.Contains(body, "<form") {
		t.Errorf("the expired invitation's page:\n%s", body)
	}
	r := postForm(t, x, "/api/v1/invitations/accept", form("token", tok, "password", "long enough pw"))
	wantStatus(t, r, http.StatusSeeOther)
	if body := string(x.Get(t, nil, r.Header.Get("Location")).Body); !strings.Contains(body, want) {
		t.Errorf("the page after a post of the expired invitation:\n%s", body)
	}
}
