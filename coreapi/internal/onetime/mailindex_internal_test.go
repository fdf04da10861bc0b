package onetime

import (
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
)

// TestDropUnsentUsesTheTokenIndex: ending a user's one-time tokens finds
// the mails still to go that carry them through the index of the tokens'
// digests, never by hashing every token of the queue, which during an SMTP
// backlog would make every sign-up, password change and revocation cost as
// much as the backlog is long.
func TestDropUnsentUsesTheTokenIndex(t *testing.T) {
	db := dbtest.New(t)
	// A backlog: 20,000 mails still to go, each with its link's token.
	db.SeedMailBacklog(t, 20000)
	q := `
WITH ended AS (DELETE FROM action_tokens WHERE user_id = $1 AND purpose = ANY($2::text[]) RETURNING token_hash)
` + dropUnsent
	plan := db.Plan(t, q, "6f1c7c55-7f0b-4a43-9d59-4b8f8a0c2f11", []string{string(VerifyEmail), string(PasswordReset)})
	if !strings.Contains(plan, "mail_queue_token_digest_idx") {
		t.Errorf("plan does not use mail_queue_token_digest_idx:\n%s", plan)
	}
}
