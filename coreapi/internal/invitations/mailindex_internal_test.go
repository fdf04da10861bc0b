package invitations

import (
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
)

// TestDropUnsentUsesTheTokenIndex: ending an invitation's token finds its
// mail still to go through the index of the tokens' digests, never by
// hashing every token of the queue, which during an SMTP backlog would
// make every withdrawal and resend cost as much as the backlog is long.
func TestDropUnsentUsesTheTokenIndex(t *testing.T) {
	db := dbtest.New(t)
	// A backlog: 20,000 mails still to go, each with its link's token.
	db.SeedMailBacklog(t, 20000)
	q := `
WITH ended AS (
    UPDATE invitations SET status = 'revoked', updated_at = now()
    WHERE tenant_id = $1 AND id = $2 AND status = 'pending'
    RETURNING token_hash)
` + dropUnsent
	plan := db.Plan(t, q, "6f1c7c55-7f0b-4a43-9d59-4b8f8a0c2f11", "0b7c3f0e-3c1a-4d4e-8d1e-2f6a9e5b7c21")
	if !strings.Contains(plan, "mail_queue_token_digest_idx") {
		t.Errorf("plan does not use mail_queue_token_digest_idx:\n%s", plan)
	}
}
