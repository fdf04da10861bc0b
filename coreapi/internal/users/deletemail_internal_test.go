package users

import (
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
)

// TestDeleteMailUsesIndexes: an account's deletion finds its queued mails
// through indexes (by account, by address, by one-time token), never by
// reading the whole queue, which during an SMTP backlog would make every
// deletion cost as much as the backlog is long.
func TestDeleteMailUsesIndexes(t *testing.T) {
	db := dbtest.New(t)
	// A backlog: 20,000 mails still to go, each with its link's token.
	db.SeedMailBacklog(t, 20000)
	plan := db.Plan(t, qDeleteMail, "Someone@Example.com", "6f1c7c55-7f0b-4a43-9d59-4b8f8a0c2f11")
	if strings.Contains(plan, "Seq Scan on mail_queue") {
		t.Errorf("the queue is read whole:\n%s", plan)
	}
	for _, idx := range []string{"mail_queue_user_id_idx", "mail_queue_to_address_lower_idx", "mail_queue_token_digest_idx"} {
		if !strings.Contains(plan, idx) {
			t.Errorf("plan does not use %s:\n%s", idx, plan)
		}
	}
}
