package mail_test

import (
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
