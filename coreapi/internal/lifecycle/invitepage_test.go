package lifecycle_test

import (
	"html"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
)

// wantPageHeaders checks a page's private headers and its CSP.
func wantPageHeaders(t *testing.T, r apitest.Response) {
	t.Helper()
	for h, want := range map[string]string{"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
		"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"} {
		if got := r.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
}

// TestInvitationPageNamesTheInvitation: the page an invitation link opens
// says which tenant invites, who sent the invitation and to which
// address, with that address in a read-only username field for password
// managers, and asks for what accepting takes: the password of the
// account that has the address, or a new one. Names are escaped and
// shown without bidirectional controls, as the mail shows them.
func TestInvitationPageNamesTheInvitation(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@acme.test")
	x.exec(t, `UPDATE tenants SET name = $2 WHERE id = $1`, owner.c.Tid, "Acme <b>&</b> \"Co\"\u202emoc.live")
	x.exec(t, `UPDATE users SET display_name = $2 WHERE id = $1`, owner.c.Sub, "Ada <i>L</i>\u2067")
	x.invite(t, owner.id, "newbie@example.com")
	x.signup(t, "known@example.com")
	x.invite(t, owner.id, "known@example.com")
	newTok := x.mail(t, "newbie@example.com", "Acme").Token()
	knownTok := x.mail(t, "known@example.com", "Acme").Token()
	bidi := func(r rune) bool { return r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 }

	for _, tt := range []struct {
		name, token, email string
		want               []string
	}{
		{"new address", newTok, "newbie@example.com", []string{`autocomplete="new-password"`, `name="display_name"`, "No account has this address yet"}},
		{"existing account", knownTok, "known@example.com", []string{`autocomplete="current-password"`, "An account has this address"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := x.Get(t, nil, "/accept-invitation?token="+tt.token)
			wantStatus(t, r, http.StatusOK)
			wantPageHeaders(t, r)
			body := string(r.Body)
			for _, want := range append(tt.want,
				`Ada &lt;i&gt;L&lt;/i&gt;</bdi> invites you to join <strong><bdi>Acme &lt;b&gt;&amp;&lt;/b&gt; &#34;Co&#34;moc.live</bdi></strong> as <bdi>`+tt.email+`</bdi>.`,
				`<input id="username" name="username" type="email" autocomplete="username" value="`+tt.email+`" readonly>`,
				`action="/api/v1/invitations/accept"`, `name="token" value="`+tt.token+`"`) {
				if !strings.Contains(body, want) {
					t.Errorf("the page lacks %s:\n%s", want, body)
				}
			}
			if strings.Contains(body, "<b>") || strings.Contains(body, "<i>") {
				t.Errorf("a stored name's markup reached the page unescaped:\n%s", body)
			}
			if i := strings.IndexFunc(body, bidi); i >= 0 {
				t.Errorf("a bidirectional control (%U) of a stored name reached the page:\n%s", []rune(body[i:])[0], body)
			}
		})
	}

	// A refused post that keeps the link shows its error above the
	// invitation, whose form stays.
	r := x.Get(t, nil, "/accept-invitation?error=invalid_grant&token="+knownTok)
	if body := string(r.Body); !strings.Contains(body, "The password is wrong.") || !strings.Contains(body, "<form") || !strings.Contains(body, "known@example.com") {
		t.Errorf("the page after a wrong password:\n%s", body)
	}

	// An inviter without a name: the page says who is invited where.
	x.exec(t, `UPDATE users SET display_name = '' WHERE id = $1`, owner.c.Sub)
	if body := string(x.Get(t, nil, "/accept-invitation?token="+newTok).Body); !strings.Contains(body, "You are invited to join <strong>") {
		t.Errorf("the page of an invitation whose sender has no name:\n%s", body)
	}

	// The form as a browser posts it, the read-only address included,
	// accepts.
	r = postForm(t, x, "/api/v1/invitations/accept", form("token", newTok, "username", "newbie%40example.com", "password", "a+long+password", "display_name", "Newbie"))
	if loc := r.Header.Get("Location"); r.Status != http.StatusSeeOther || loc != "/accept-invitation?done=1" {
		t.Errorf("the page's form: %d Location %q", r.Status, loc)
	}
	if !x.isMember(t, owner.c.Tid, "newbie@example.com") {
		t.Error("accepted through the page's form, but not a member")
	}
}

// TestInvitationPageOfAnUnusableLink: a link whose invitation cannot be
// accepted (unknown, withdrawn, expired, used, its tenant suspended)
// opens a page with the accept's refusal, in the words the page has for
// it after a refused post, and no form; nor does it name the tenant or
// the address, except an expired invitation's, which names both as its
// pending page did, with the way to a new one.
func TestInvitationPageOfAnUnusableLink(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@acme.test")
	suspended := x.signup(t, "owner@paused.test")
	token := func(as account, email string) string {
		x.invite(t, as.id, email)
		return x.mail(t, email, "You are invited").Token()
	}
	withdrawn := token(owner, "withdrawn@example.com")
	wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/invitations/"+x.invitationID(t, "withdrawn@example.com"), nil), http.StatusNoContent)
	expired := token(owner, "expired@example.com")
	x.exec(t, `UPDATE invitations SET expires_at = now() - interval '1 second' WHERE email = 'expired@example.com'`)
	used := token(owner, "used@example.com")
	if _, st, code := x.accept(t, nil, map[string]string{"token": used, "password": pw}); st != http.StatusOK {
		t.Fatalf("accept: %d %s", st, code)
	}
	paused := token(suspended, "paused@example.com")
	x.exec(t, `UPDATE tenants SET status = 'suspended' WHERE id = $1`, suspended.c.Tid)

	const (
		invalid    = "This link is not valid"
		notActive  = "This invitation was withdrawn or already used."
		linkExpird = "This link has expired."
		forbidden  = "This invitation can no longer be accepted."
	)
	for _, tt := range []struct{ name, query, want string }{
		{"unknown", "token=nope", invalid},
		{"too long", "token=" + strings.Repeat("x", 300), invalid},
		{"no token", "", invalid},
		{"no token after a refused post", "error=link_expired", linkExpird},
		{"withdrawn", "token=" + withdrawn, notActive},
		// An expired one names its invitation as its pending page did,
		// and who can send it again (TestExpiredInvitationPageNamesTheInvitation).
		{"expired", "token=" + expired, "This invitation to join T of owner@acme.test as expired@example.com has expired. Ask D owner@acme.test to send it again."},
		{"used", "token=" + used, notActive},
		{"tenant suspended", "token=" + paused, forbidden},
		// A link's own error= does not hide what the page found.
		{"withdrawn, with a link's error", "error=invalid_grant&token=" + withdrawn, notActive},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := x.Get(t, nil, "/accept-invitation?"+tt.query)
			wantStatus(t, r, http.StatusOK)
			wantPageHeaders(t, r)
			body := string(r.Body)
			if !strings.Contains(body, `<p class="error">`+html.EscapeString(tt.want)) {
				t.Errorf("the page does not say %q:\n%s", tt.want, body)
			}
			nots := []string{"<form", "<input", "@example.com", "T of owner", "invites you", "You are invited"}
			if tt.name == "expired" {
				nots = []string{"<form", "<input", "invites you", "You are invited"}
			}
			for _, not := range nots {
				if strings.Contains(body, not) {
					t.Errorf("the page of an unusable link shows %q:\n%s", not, body)
				}
			}
		})
	}
}

// TestInvitationPageWritesNothing: the page reads the invitation without
// locking it (it answers while an accept holds the row) and changes
// nothing: the invitation's row, the audit, the outbox, the mail queue,
// rate-limit counters, accounts and sessions stay as they were.
func TestInvitationPageWritesNothing(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@acme.test")
	x.invite(t, owner.id, "newbie@example.com")
	tok := x.mail(t, "newbie@example.com", "You are invited").Token()
	id := x.invitationID(t, "newbie@example.com")
	const snapshot = `SELECT (SELECT xmin::text FROM invitations WHERE id = $1) || ' ' || concat_ws(' ',
    (SELECT count(*) FROM audit_events), (SELECT count(*) FROM outbox), (SELECT count(*) FROM mail_queue),
    (SELECT count(*) FROM rate_limits), (SELECT coalesce(sum(hits), 0) FROM rate_limits),
    (SELECT count(*) FROM users), (SELECT count(*) FROM sessions), (SELECT count(*) FROM login_attempts))`
	state := func() string {
		t.Helper()
		var s string
		if err := x.DB.Pool.QueryRow(t.Context(), snapshot, id).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := state()

	hold := x.DB.Hold(t, `SELECT 1 FROM invitations WHERE id = $1 FOR UPDATE`, id)
	got := make(chan apitest.Response, 1)
	go func() { got <- x.Get(t, nil, "/accept-invitation?token="+tok) }()
	select {
	case r := <-got:
		if r.Status != http.StatusOK || !strings.Contains(string(r.Body), "newbie@example.com") {
			t.Errorf("the page while the invitation is locked: %d\n%s", r.Status, r.Body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the page waits for the invitation's lock")
	}
	if err := hold.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		wantStatus(t, x.Get(t, nil, "/accept-invitation?token="+tok), http.StatusOK)
	}
	wantStatus(t, x.Get(t, nil, "/accept-invitation?token=nope"), http.StatusOK)
	if after := state(); after != before {
		t.Errorf("the page wrote: %s before, %s after", before, after)
	}
	// The link still accepts.
	if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": pw}); st != http.StatusOK {
		t.Errorf("accept after the page: %d %s", st, code)
	}
}
