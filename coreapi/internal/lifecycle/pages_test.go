package lifecycle_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// postForm posts a page's form. Every 303 it gets back, whose Location
// can hold the link's token, must have the page's own Referrer-Policy,
// Cache-Control and X-Content-Type-Options.
func postForm(t *testing.T, x *env, path, body string) apitest.Response {
	t.Helper()
	r := x.Do(t, apitest.Request{Method: http.MethodPost, Path: path, Body: body, ContentType: "application/x-www-form-urlencoded"})
	if r.Status == http.StatusSeeOther {
		wantRedirectHeaders(t, r)
	}
	return r
}

func wantRedirectHeaders(t *testing.T, r apitest.Response) {
	t.Helper()
	for h, want := range map[string]string{"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
		if got := r.Header.Get(h); got != want {
			t.Errorf("303 to %q: %s = %q, want %q", r.Header.Get("Location"), h, got, want)
		}
	}
}

func TestPages(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	for _, tt := range []struct{ path, action string }{
		{"/verify-email?token=abc", `action="/api/v1/auth/verify-email"`},
		{"/reset-password?token=abc", `action="/api/v1/auth/password/reset"`},
		{"/reset-password", `action="/api/v1/auth/password/forgot"`},
		// The invitation's page looks its token up first: no form for
		// one no invitation has (TestInvitationPageOfAnUnusableLink; a
		// pending one's, TestInvitationPageNamesTheInvitation).
		{"/accept-invitation?token=abc", ""},
	} {
		t.Run(tt.path, func(t *testing.T) {
			r := x.Get(t, nil, tt.path)
			wantStatus(t, r, 200)
			body := string(r.Body)
			if tt.action == "" {
				if strings.Contains(body, "<form") || !strings.Contains(body, "This link is not valid") {
					t.Errorf("a form, or no error, for a link that cannot be used:\n%s", body)
				}
			} else if !strings.Contains(body, tt.action) || !strings.Contains(body, `method="post"`) {
				t.Errorf("no form posting to the API:\n%s", body)
			}
			if tt.action != "" && strings.Contains(tt.path, "token=abc") && !strings.Contains(body, `name="token" value="abc"`) {
				t.Errorf("the token is not carried by the form:\n%s", body)
			}
			if strings.Contains(strings.ToLower(body), "<script") {
				t.Error("the page has a script")
			}
			for h, want := range map[string]string{"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"} {
				if got := r.Header.Get(h); got != want {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
			if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "form-action 'self'") || !strings.Contains(csp, "base-uri 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("CSP = %q", csp)
			}
		})
	}
	// Only the forgot form says that a link is on its way.
	for path, want := range map[string]bool{"/reset-password?sent=1": true, "/reset-password?token=abc&sent=1": false,
		"/verify-email?token=abc&sent=1": false, "/accept-invitation?token=abc&sent=1": false} {
		if got := strings.Contains(string(x.Get(t, nil, path).Body), "is on its way"); got != want {
			t.Errorf("%s says a link is on its way: %v, want %v", path, got, want)
		}
	}
	t.Run("token is escaped", func(t *testing.T) {
		r := x.Get(t, nil, `/verify-email?token=%22%3E%3Cscript%3Ealert(1)%3C/script%3E`)
		if strings.Contains(string(r.Body), "<script>") {
			t.Errorf("token echoed unescaped:\n%s", r.Body)
		}
	})
	// A link to the page with words of its own in error= must not have
	// the page say them (a phishing mail pointing at the real site): a
	// code the page has no text for is shown only when it is shaped like
	// one.
	t.Run("error text of the link's choosing is not shown", func(t *testing.T) {
		r := x.Get(t, nil, `/reset-password?error=Your+account+is+locked.+Call+support+at+%2B1+555+0100`)
		wantStatus(t, r, http.StatusOK)
		if strings.Contains(string(r.Body), "locked") {
			t.Errorf("the page shows the link's words:\n%s", r.Body)
		}
		r = x.Get(t, nil, `/reset-password?error=`+problem.CodeNotImplemented)
		if !strings.Contains(string(r.Body), problem.CodeNotImplemented) {
			t.Errorf("a code the page has no text for is not shown:\n%s", r.Body)
		}
		// Words shaped like a code are still the link's: only a code
		// the API answers is shown as one.
		for _, words := range []string{"your_account_is_locked_call_5550100", "some_new_code"} {
			r = x.Get(t, nil, `/reset-password?error=`+words)
			wantStatus(t, r, http.StatusOK)
			if strings.Contains(string(r.Body), words) || !strings.Contains(string(r.Body), "Something went wrong.") {
				t.Errorf("error=%s: the page shows the link's words, or no error:\n%s", words, r.Body)
			}
		}
	})
	t.Run("unknown error code is shown as text", func(t *testing.T) {
		r := x.Get(t, nil, `/verify-email?error=%3Cb%3E`)
		if strings.Contains(string(r.Body), "<b>") {
			t.Errorf("error code echoed unescaped:\n%s", r.Body)
		}
	})
}

// The pages' forms work without JavaScript: a form post answers 303 back
// to the page with the outcome, never cached nor sent on as a Referer
// (postForm checks each 303's headers), as the page itself is not.
func TestPageForms(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	x.signup(t, "ivy@example.com")
	tok := x.mail(t, "ivy@example.com", "Confirm").Token()

	r := postForm(t, x, "/api/v1/auth/verify-email", form("token", "nope"))
	if r.Status != http.StatusSeeOther || r.Header.Get("Location") != "/verify-email?error=link_invalid" {
		t.Errorf("bad token form: %d Location %q", r.Status, r.Header.Get("Location"))
	}
	// Without the password: back to the page, which keeps the link.
	r = postForm(t, x, "/api/v1/auth/verify-email", form("token", tok))
	if loc := r.Header.Get("Location"); r.Status != http.StatusSeeOther || loc != "/verify-email?error=account_proof_required&token="+tok {
		t.Errorf("verify form without the password: %d Location %q", r.Status, loc)
	}
	if page := x.Get(t, nil, "/verify-email?error=account_proof_required&token="+tok); !strings.Contains(string(page.Body), "Enter the account&#39;s password") ||
		!strings.Contains(string(page.Body), `name="token" value="`+tok+`"`) {
		t.Errorf("the page after a post without the password:\n%s", page.Body)
	}
	r = postForm(t, x, "/api/v1/auth/verify-email", form("token", tok, "password", "wrong+password"))
	if loc := r.Header.Get("Location"); r.Status != http.StatusSeeOther || loc != "/verify-email?error=invalid_grant&token="+tok {
		t.Errorf("verify form with a wrong password: %d Location %q", r.Status, loc)
	}
	r = postForm(t, x, "/api/v1/auth/verify-email", form("token", tok, "password", strings.ReplaceAll(pw, " ", "+")))
	if r.Status != http.StatusSeeOther || r.Header.Get("Location") != "/verify-email?done=1" {
		t.Errorf("verify form: %d Location %q", r.Status, r.Header.Get("Location"))
	}
	if page := x.Get(t, nil, "/verify-email?done=1"); !strings.Contains(string(page.Body), "is confirmed") {
		t.Errorf("done page:\n%s", page.Body)
	}

	r = postForm(t, x, "/api/v1/auth/password/forgot", form("email", "ivy%40example.com"))
	if r.Status != http.StatusSeeOther || r.Header.Get("Location") != "/reset-password?sent=1" {
		t.Errorf("forgot form: %d Location %q", r.Status, r.Header.Get("Location"))
	}
	reset := x.mail(t, "ivy@example.com", "Reset").Token()
	r = postForm(t, x, "/api/v1/auth/password/reset", form("token", reset, "new_password", "short"))
	if loc := r.Header.Get("Location"); r.Status != http.StatusSeeOther || loc != "/reset-password?error=validation_failed&token="+reset {
		t.Errorf("weak password form: %d Location %q", r.Status, loc)
	}
	// The token sent back is the one posted, as a query value: what it
	// holds adds no parameter of its own to the page's address.
	r = postForm(t, x, "/api/v1/auth/password/reset", form("token", "x%26done%3D1%23y", "new_password", "short"))
	if loc := r.Header.Get("Location"); r.Status != http.StatusSeeOther || loc != "/reset-password?error=validation_failed&token=x%26done%3D1%23y" {
		t.Errorf("weak password form, token with '&', '=' and '#': %d Location %q", r.Status, loc)
	}
	r = postForm(t, x, "/api/v1/auth/password/reset", form("token", reset, "new_password", "a+much+better+one"))
	if r.Status != http.StatusSeeOther || r.Header.Get("Location") != "/reset-password?done=1" {
		t.Errorf("reset form: %d Location %q", r.Status, r.Header.Get("Location"))
	}
	wantStatus(t, x.token(t, "ivy@example.com", "a much better one"), 200)
}

// Mail server down when the change happens: the request succeeds at once,
// the mail waits in the queue and goes out when the server is back, and
// the change's invalidation does not wait for it.
func TestMailServerDown(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	x.smtp.Stop()
	a := x.signup(t, "jo@example.com")
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "jo@example.com"}), 202)
	x.lc.WaitResets()
	// The first attempt fails to connect: the server's failure, not the
	// mail's, so it ends the batch and the other mail goes back untried.
	// Both rows stay, with their tokens.
	if _, err := x.sender.SendDue(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE status = 'pending' AND attempts = 1 AND token IS NOT NULL AND last_error IS NOT NULL`); n != 1 {
		t.Fatalf("%d mails waiting after a failed attempt, want 1", n)
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE status = 'pending' AND attempts = 0 AND token IS NOT NULL AND last_error IS NULL`); n != 1 {
		t.Fatalf("%d mails given back untried, want 1", n)
	}
	x.smtp.Restart(t)
	x.exec(t, `UPDATE mail_queue SET next_attempt_at = now()`)
	reset := x.mail(t, "jo@example.com", "Reset").Token()
	x.smtp.Stop() // down again: the reset still takes effect at once
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset", map[string]string{"token": reset, "new_password": "a new password"}), 204)
	if n := x.count(t, `SELECT count(*) FROM outbox WHERE payload->>'reason' = 'user.password_reset' AND subject = 'auth.invalidate.user.'||$1`, a.c.Sub); n != 1 {
		t.Errorf("the reset's invalidation is not in the outbox (%d rows)", n)
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE status = 'sent'`); n != 2 {
		t.Errorf("%d mails sent, want both", n)
	}
}
