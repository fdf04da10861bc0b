package mail_test

import (
	"strconv"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
)

// TestInbox: the spellings of one inbox (letter case, a subaddress, the
// decomposed form of a letter) have one key; other inboxes do not share it.
func TestInbox(t *testing.T) {
	for _, c := range []struct{ addr, want string }{
		{"victim@example.org", "victim@example.org"},
		{"Victim@Example.ORG", "victim@example.org"},
		{"victim+1@example.org", "victim@example.org"},
		{"VICTIM+news+x@example.org", "victim@example.org"},
		{" jose\u0301+a@example.org ", "jos\u00e9@example.org"},
		{"+only@example.org", "@example.org"},
		{"a-b@example.org", "a-b@example.org"},
		{"victim@ex+ample.org", "victim@ex+ample.org"},
		{"no-at-sign+x", "no-at-sign+x"},
	} {
		if got := mail.Inbox(c.addr); got != c.want {
			t.Errorf("Inbox(%q) = %q, want %q", c.addr, got, c.want)
		}
	}
	if mail.Inbox("victim1@example.org") == mail.Inbox("victim@example.org") {
		t.Error("two local parts share an inbox")
	}
}

// TestInboxDomain: one domain in its spellings (Unicode or Punycode, any
// letter case, a trailing dot, an ideographic full stop or fullwidth
// letters, which IDNA maps) is one inbox's; the local part keeps its dots
// (what a provider makes of them is its own) and other domains stay
// apart. Each spelling was an inbox of its own, so the limits on mails
// to one mailbox gave it a budget per spelling.
func TestInboxDomain(t *testing.T) {
	const want = "user@xn--bcher-kva.example"
	for _, addr := range []string{
		"user@bücher.example",
		"user@xn--bcher-kva.example",
		"User+tag@XN--BCHER-KVA.Example",
		"user@BÜCHER.EXAMPLE",
		"user@bu\u0308cher.example",
		"user@bücher.example.",
		"user@xn--bcher-kva.example.",
		"user@bücher\u3002example",
		"user@\uff42\u00fc\uff43\uff48\uff45\uff52.example",
	} {
		addr = unescape(addr)
		if got := mail.Inbox(addr); got != want {
			t.Errorf("Inbox(%q) = %q, want %q", addr, got, want)
		}
	}
	for _, c := range []struct{ addr, want string }{
		{"first.last@example.org.", "first.last@example.org"},
		{"First.Last@Example.ORG", "first.last@example.org"},
		{"firstlast@example.org", "firstlast@example.org"},
		{"user@stra\u00dfe.example", "user@xn--strae-oqa.example"},
		{"user@strasse.example", "user@strasse.example"},
		{"user@ex_ample.org", "user@ex_ample.org"},
		{"user@XN--ZZ.example", "user@xn--zz.example"},
		{"user@[192.0.2.1]", "user@[192.0.2.1]"},
		{"user@", "user@"},
	} {
		if got := mail.Inbox(unescape(c.addr)); got != c.want {
			t.Errorf("Inbox(%q) = %q, want %q", c.addr, got, c.want)
		}
	}
}

// unescape reads the \uXXXX escapes of s.
func unescape(s string) string {
	out, err := strconv.Unquote(`"` + s + `"`)
	if err != nil {
		panic(err)
	}
	return out
}
