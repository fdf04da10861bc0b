package lifecycle_test

import (
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail/mailtest"
)

// textParts are the decoded text/plain and text/html parts of m.
func textParts(t *testing.T, m mailtest.Message) map[string]string {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(m.Raw))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var walk func(h map[string][]string, body io.Reader)
	walk = func(h map[string][]string, body io.Reader) {
		get := func(k string) string {
			if v := h[k]; len(v) > 0 {
				return v[0]
			}
			return ""
		}
		mt, params, err := mime.ParseMediaType(get("Content-Type"))
		if err != nil {
			t.Fatalf("content type %q: %v", get("Content-Type"), err)
		}
		if strings.HasPrefix(mt, "multipart/") {
			r := multipart.NewReader(body, params["boundary"])
			for {
				p, err := r.NextRawPart()
				if err == io.EOF {
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				walk(p.Header, p)
			}
		}
		if strings.EqualFold(get("Content-Transfer-Encoding"), "quoted-printable") {
			body = quotedprintable.NewReader(body)
		}
		b, err := io.ReadAll(body)
		if err != nil {
			t.Fatal(err)
		}
		out[mt] = string(b)
	}
	walk(msg.Header, msg.Body)
	if out["text/plain"] == "" || out["text/html"] == "" {
		t.Fatalf("want a text and an HTML part, got %v:\n%s", out, m.Raw)
	}
	return out
}

// TestStoredNameWithBidiControlsShownInOrder: a tenant or display name
// stored before the name checks refused bidirectional controls (the first
// release took any text) reaches the invitation mail without them, so
// "Acme" + U+202E + "moc.live" reads as stored, not as "Acmeevil.com", in
// the subject and in both parts, as a line break in such a name is no
// line break there (TestInvitationHeaderInjection).
func TestStoredNameWithBidiControlsShownInOrder(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "bidi@example.com")
	x.exec(t, `UPDATE tenants SET name = $2 WHERE id = $1`, owner.c.Tid, "Acme\u202emoc.live")
	x.exec(t, `UPDATE users SET display_name = $2 WHERE id = $1`, owner.c.Sub, "Ann\u2067\u202bni\u2069\u202a")
	x.invite(t, owner.id, "bidi-target@example.com")
	m := x.mail(t, "bidi-target@example.com", "Acme")
	bidi := func(r rune) bool { return r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 }
	parts := textParts(t, m)
	for name, s := range map[string]string{"subject": m.Subject, "text": parts["text/plain"], "html": parts["text/html"]} {
		if i := strings.IndexFunc(s, bidi); i >= 0 {
			t.Errorf("%s: a bidirectional control (%U) of a stored name reached the mail:\n%s", name, []rune(s[i:])[0], s)
		}
		if !strings.Contains(s, "Acmemoc.live") {
			t.Errorf("%s: the tenant's name is not shown as stored, without its controls:\n%s", name, s)
		}
	}
	for name, s := range map[string]string{"text": parts["text/plain"], "html": parts["text/html"]} {
		if !strings.Contains(s, "Annni invites you") {
			t.Errorf("%s: the inviter's name is not shown as stored, without its controls:\n%s", name, s)
		}
	}
}
