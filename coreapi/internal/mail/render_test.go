package mail_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
)

// TestSignupVerificationWarnsBeforeTheLink: the verification mail of a
// sign-up tells whoever did not create the account, before its link, not
// to open it (confirming would vouch for the password's holder) and to take
// the address back with a password reset; an email change's does not.
// Both say, before the link, that confirming asks for the account's
// password (or is done signed in).
func TestSignupVerificationWarnsBeforeTheLink(t *testing.T) {
	links := mail.DefaultLinks("https://auth.example.test")
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	signup, err := links.Render(mail.KindVerifyEmail, "a@example.com", "tok", mail.Data{ExpiresAt: at})
	if err != nil {
		t.Fatal(err)
	}
	link := "https://auth.example.test/verify-email?token=tok"
	for name, body := range map[string]string{"text": signup.Text, "html": signup.HTML} {
		warn, open := strings.Index(body, "do not open the link"), strings.Index(body, link)
		if warn < 0 || open < 0 || warn > open {
			t.Errorf("sign-up %s: the warning (at %d) must come before the link (at %d):\n%s", name, warn, open, body)
		}
		if !strings.Contains(body, "password reset") {
			t.Errorf("sign-up %s: no word of the password reset that takes the address back:\n%s", name, body)
		}
		if asks := strings.Index(body, "confirming asks for"); asks < 0 || asks > open {
			t.Errorf("sign-up %s: does not say, before the link, that confirming asks for the password:\n%s", name, body)
		}
	}
	change, err := links.Render(mail.KindVerifyEmail, "a@example.com", "tok", mail.Data{ExpiresAt: at, EmailChange: true})
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"text": change.Text, "html": change.HTML} {
		if strings.Contains(body, "do not open") || !strings.Contains(body, link) || !strings.Contains(body, "ignore this mail") {
			t.Errorf("email change %s:\n%s", name, body)
		}
		if asks := strings.Index(body, "confirming asks for"); asks < 0 || asks > strings.Index(body, link) {
			t.Errorf("email change %s: does not say, before the link, that confirming asks for the password:\n%s", name, body)
		}
	}
}

// TestSecurityNotices: each security notice says when the change was
// made and points at the forgot page, which mails a reset link to the
// account's address; it carries no token.
func TestSecurityNotices(t *testing.T) {
	at := time.Date(2026, 12, 6, 10, 4, 0, 0, time.FixedZone("CET", 3600))
	const when = "6 December 2026 09:04 UTC"
	for _, c := range []struct {
		kind          mail.Kind
		subject, says string
	}{
		{mail.KindPasswordChanged, "The password of your account was changed", "password of the Tollgate account of a@example.com was changed"},
		{mail.KindMFAEnabled, "A second factor was set up for your account", "was set up for the Tollgate account of\na@example.com"},
		{mail.KindMFADisabled, "The second factor of your account was turned off", "second factor of the Tollgate account of a@example.com was turned off"},
		{mail.KindMFAReset, "The second factor of your account was removed by an administrator", "An administrator removed the second factor of the Tollgate account of a@example.com"},
		{mail.KindRecoveryCodes, "New recovery codes were made for your account", "New recovery codes for the second factor of the Tollgate account of a@example.com\nwere made on"},
		{mail.KindIdentityLinked, "A sign-in provider was linked to your account", "An account at the sign-in provider google was linked to the Tollgate\naccount of a@example.com"},
		{mail.KindIdentityUnlinked, "A sign-in provider was removed from your account", "The account at the sign-in provider google was unlinked from the\nTollgate account of a@example.com"},
	} {
		got, err := mail.DefaultLinks("https://auth.example.test/").Render(c.kind, "a@example.com", "", mail.Data{At: at, Provider: "google"})
		if err != nil {
			t.Fatalf("%s: %v", c.kind, err)
		}
		if got.Subject != c.subject {
			t.Errorf("%s: subject %q, want %q", c.kind, got.Subject, c.subject)
		}
		if !strings.Contains(got.Text, c.says) {
			t.Errorf("%s: the text does not say %q:\n%s", c.kind, c.says, got.Text)
		}
		for name, body := range map[string]string{"text": got.Text, "html": got.HTML} {
			if !strings.Contains(body, when) {
				t.Errorf("%s %s: does not say when (%s):\n%s", c.kind, name, when, body)
			}
			if !strings.Contains(body, "https://auth.example.test/reset-password") || strings.Contains(body, "token") {
				t.Errorf("%s %s: want the forgot page's link and no token:\n%s", c.kind, name, body)
			}
		}
	}
}

// TestStoredNameWithC1ControlsOnOneLine: a name stored before the API
// refused control characters (the first release took any text) may hold
// C1 controls, NEL (U+0085) among them, which Unicode and many mail
// clients take as a line break: "Acme" + NEL + "To accept, open this
// link: https://…" forged a line of the service's own mail, in the
// subject and in both parts. They are shown as spaces, as CR and LF are.
func TestStoredNameWithC1ControlsOnOneLine(t *testing.T) {
	const forged = "To accept, open this link: https://evil.example/"
	d := mail.Data{TenantName: "Acme\u0085" + forged, InviterName: "Ann\u0085" + forged + "\u009b", ExpiresAt: time.Now().Add(time.Hour)}
	got, err := mail.DefaultLinks("https://auth.example.test").Render(mail.KindInvitation, "bob@example.com", "tok", d)
	if err != nil {
		t.Fatal(err)
	}
	reset, err := mail.DefaultLinks("https://auth.example.test").Render(mail.KindPasswordReset, "bob@example.com", "tok",
		mail.Data{DisplayName: "Bob\u0085" + forged, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]string{"subject": got.Subject, "text": got.Text, "html": got.HTML,
		"reset text": reset.Text, "reset html": reset.HTML, "shown name": mail.ShownName("a\u0085b\u0080c\u009fd")} {
		if i := strings.IndexFunc(s, func(r rune) bool { return r >= 0x80 && r <= 0x9f }); i >= 0 {
			t.Errorf("%s holds the C1 control %U:\n%q", name, []rune(s[i:])[0], s)
		}
	}
	if want := "You are invited to join Acme " + forged; got.Subject != want {
		t.Errorf("subject %q, want %q", got.Subject, want)
	}
}
