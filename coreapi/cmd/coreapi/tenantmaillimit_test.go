package main

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/openapi"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestTenantMailsPerHourIsEachServers: TENANT_MAILS_PER_HOUR bounds the
// mails a tenant causes (invitations, and the verification mails of
// accounts made with POST /users) through the server started with it, and
// no other. It was written into a package variable that every service of
// the process read, so the server started last set the limit of all of
// them: one started with 2 let a tenant mail 5 once another was started
// with 5, and one started with the default kept the limit an earlier one
// had set. The three serve one database and count the tenant's mails in
// the same row.
func TestTenantMailsPerHourIsEachServers(t *testing.T) {
	db := dbtest.New(t)
	v, err := openapi.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	server := func(perHour string) *isolationWalk {
		t.Helper()
		env := serveEnv(t, db.URL)
		if perHour != "" {
			env["TENANT_MAILS_PER_HOUR"] = perHour
		}
		base, signer := startServe(t, env)
		return &isolationWalk{base: base, signer: signer, validator: v, pool: db.Pool}
	}
	strict, lax, byDefault := server("2"), server("5"), server("")

	var su struct {
		TenantID    string `json:"tenant_id"`
		AccessToken string `json:"access_token"`
		User        struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	strict.send(t, nil, http.MethodPost, "/api/v1/auth/signup",
		`{"email":"owner@acme.test","password":"a long password","tenant_name":"Acme"}`, http.StatusCreated, &su)
	owner := isolationTenant{tenant: su.TenantID, owner: su.User.ID, session: tokenSessionID(t, su.AccessToken)}.ownerIdentity()

	// mail asks w for the tenant's nth mail: an invitation, or a new
	// account's verification mail, in turn.
	n := 0
	mail := func(w *isolationWalk) isolationAnswer {
		t.Helper()
		n++
		if n%2 == 1 {
			return w.do(t, &owner, http.MethodPost, "/api/v1/invitations", fmt.Sprintf(`{"email":"invitee%d@example.com"}`, n))
		}
		return w.do(t, &owner, http.MethodPost, "/api/v1/users", fmt.Sprintf(`{"email":"member%d@example.com"}`, n))
	}
	wantSent := func(a isolationAnswer, limit string) {
		t.Helper()
		if a.Status != http.StatusCreated {
			t.Fatalf("mail %d under a limit of %s: %s, want 201", n, limit, a)
		}
	}
	wantRefused := func(a isolationAnswer, limit string) {
		t.Helper()
		if a.Status != http.StatusTooManyRequests || a.Code != problem.CodeTooManyRequests {
			t.Fatalf("mail %d under a limit of %s: %s, want 429 %s", n, limit, a, problem.CodeTooManyRequests)
		}
	}
	for range 2 {
		wantSent(mail(strict), "2")
	}
	wantRefused(mail(strict), "2")
	wantRefused(mail(strict), "2") // POST /users as well as an invitation
	for range 3 {
		wantSent(mail(lax), "5")
	}
	wantRefused(mail(lax), "5")
	wantRefused(mail(lax), "5")
	// Five sent so far: a refused request counts none.
	wantSent(mail(byDefault), "the default (200)")
	wantSent(mail(byDefault), "the default (200)")
}
