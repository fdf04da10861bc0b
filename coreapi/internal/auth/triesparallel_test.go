package auth_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
)

// TestMFATokenTriesAreTheCodesLookedAt: whatever arrives at once on one
// mfa_token (wrong codes, codes refused unread by the account's lock,
// malformed requests), the tries it has spent are exactly the codes
// looked at: a try given back for a code the lock refused never lets
// more than auth.ChallengeAttempts codes be checked, and none is lost,
// so the owner finishes the sign-in with the tries left once the lock
// has passed.
func TestMFATokenTriesAreTheCodesLookedAt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, cheap)
	const email = "tries-parallel@example.com"
	_, secret, _ := e.mfaUser(t, email)
	const qFailed = `SELECT count(*) FROM audit_events WHERE action = 'user.mfa_code_failed'`
	// Another mfa_token brings the account's lock near: a few more wrong
	// codes lock it while this one still has tries.
	first := e.challenge(t, email)
	for i := range auth.DefaultLockout().Threshold - 2 {
		wantStatus(t, "wrong code on the first token "+strconv.Itoa(i+1), e.mfaOTP(t, first, "000000"), http.StatusBadRequest, "invalid_grant")
	}
	before := e.count(t, qFailed)
	mt := e.challenge(t, email)
	var sends []func() apitest.Response
	for i := range 12 {
		sends = append(sends, func() apitest.Response { return e.mfaOTP(t, mt, strconv.Itoa(100000+i)) })
		sends = append(sends, func() apitest.Response { return e.mfaOTP(t, mt, strings.Repeat("9", 65)) })
	}
	var wg sync.WaitGroup
	answers := make([]apitest.Response, len(sends))
	for i, send := range sends {
		wg.Go(func() { answers[i] = send() })
	}
	wg.Wait()
	for i, r := range answers {
		if r.Status != http.StatusBadRequest && r.Status != http.StatusTooManyRequests {
			t.Errorf("answer %d: %d %s; want 400 or 429", i, r.Status, r.Body)
		}
	}
	looked := e.count(t, qFailed) - before
	tries := e.count(t, `SELECT attempts FROM mfa_challenges WHERE token_hash = $1`, mfa.HashToken(mt))
	if tries != looked || looked > auth.ChallengeAttempts {
		t.Fatalf("the token spent %d tries for %d codes looked at; want them equal, at most %d", tries, looked, auth.ChallengeAttempts)
	}
	if looked >= auth.ChallengeAttempts {
		t.Fatalf("%d codes looked at before the lock; the test needs tries left", looked)
	}
	if _, err := e.DB.Pool.Exec(ctx, `UPDATE login_attempts SET locked_until = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "the owner's code after the lock", e.mfaOTP(t, mt, codeAt(t, secret, time.Now().Add(30*time.Second))), http.StatusOK, "")
}
