package lifecycle_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestInviteAcceptChargesItsHash: the password of the account an
// invitation's acceptance makes is an argon2 hash, counted against the
// client's PASSWORD_CHECKS_PER_HOUR before it is made, as a reset's and a
// member's made with a password are: past the budget the acceptance is
// 429 with Retry-After, unhashed, and the invitation stays pending. An
// invitation the accept refuses (here: a role of which was deleted) is
// refused before any hash: it stays pending, so its link could be sent
// again and again, a hash each.
func TestInviteAcceptChargesItsHash(t *testing.T) {
	t.Parallel()
	const budget = 2
	h := password.New(cheap, 0)
	x := startOpts(t, startOptions{hasher: h, checks: budget})
	owner := x.signup(t, "hash-owner@acme.test")
	const addr = "hash-loop@example.com"
	id := x.createRole(t, owner, "temp", "audit:read")
	x.invite(t, owner.id, addr, "temp")
	tok := x.mail(t, addr, "invited").Token()
	wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/roles/"+id, nil), http.StatusNoContent)

	before := h.Made()
	for range 2 * budget {
		wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/invitations/accept", map[string]string{"token": tok, "password": pw}),
			http.StatusConflict, problem.CodeConflict)
	}
	if n := h.Made() - before; n != 0 {
		t.Fatalf("%d acceptances of a link refused made %d hashes, want none", 2*budget, n)
	}

	for i := range budget + 1 {
		inv := fmt.Sprintf("hash-new-%d@example.com", i)
		x.invite(t, owner.id, inv)
		r := x.Send(t, nil, http.MethodPost, "/api/v1/invitations/accept",
			map[string]string{"token": x.mail(t, inv, "invited").Token(), "password": pw})
		if i < budget {
			wantStatus(t, r, http.StatusOK)
			continue
		}
		wantProblem(t, r, http.StatusTooManyRequests, problem.CodeTooManyRequests)
		if r.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
	}
	if n := h.Made() - before; n != budget {
		t.Fatalf("%d acceptances made %d hashes, want %d (PASSWORD_CHECKS_PER_HOUR)", budget+1, n, budget)
	}
	if n := x.count(t, `SELECT coalesce((SELECT hits FROM rate_limits WHERE key = $1), 0)`,
		ratelimit.PasswordChecksKey(apitest.DefaultClientIP)); n < budget {
		t.Errorf("charged %d hashes, want the %d made", n, budget)
	}
	if n := x.count(t, `SELECT count(*) FROM invitations WHERE tenant_id = $1 AND status = 'pending'`, owner.c.Tid); n != 2 {
		t.Errorf("%d pending invitations, want the refused one and the one past the budget (2)", n)
	}
}
