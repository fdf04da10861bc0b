package lifecycle_test

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestAcceptRacingTheAccountsDeletion: an invitation accepted with the
// bearer of an account whose deletion (users.DeleteAccount) is under way
// meets it in either order without a deadlock. Held by the deletion once
// it has locked the tenants, memberships and account row
// (DeleteOptions.Check), the acceptance waits for the row and is then 401
// invalid_token, the invitation still pending. Held itself at its
// membership's insert (a statement trigger parks it on an advisory lock
// the test holds), with the account's row locked, the deletion waits for
// the row, finds the new membership once the acceptance commits, and
// deletes it with the account. Both orders take the tenant's lock before
// the account's row, and the deletion takes a tenant found late only
// once the acceptance has committed.
func TestAcceptRacingTheAccountsDeletion(t *testing.T) {
	const (
		qPark = `CREATE FUNCTION park_membership() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_advisory_xact_lock(7301); RETURN NULL; END $$`
		qTrigger = `CREATE TRIGGER park_membership BEFORE INSERT ON memberships
FOR EACH STATEMENT EXECUTE FUNCTION park_membership()`
	)
	for _, deletionFirst := range []bool{true, false} {
		name := "acceptance first"
		if deletionFirst {
			name = "deletion first"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			x := start(t, lifecycle.Limits{})
			owner := x.signup(t, "owner@example.com")
			a := x.signup(t, "leaving@example.com")
			x.invite(t, owner.id, "leaving@example.com")
			tok := x.mail(t, "leaving@example.com", "You are invited").Token()
			accept := func() apitest.Response {
				return x.Send(t, &a.id, http.MethodPost, "/api/v1/invitations/accept", map[string]string{"token": tok})
			}
			var (
				wg      sync.WaitGroup
				delErr  error
				locked  = make(chan struct{})
				release = make(chan struct{})
			)
			free := sync.OnceFunc(func() { close(release) })
			t.Cleanup(free)
			deletion := func() {
				wg.Go(func() {
					_, delErr = users.DeleteAccount(ctx, x.DB.Pool, a.c.Sub, users.DeleteOptions{
						By: users.DeletedBySelf, ActorUserID: a.c.Sub,
						Check: func(context.Context, pgx.Tx) error {
							close(locked)
							<-release
							return nil
						},
					})
				})
			}
			var r apitest.Response
			if deletionFirst {
				deletion()
				<-locked
				answer := dbtest.AnsweredOrWaiting(t, x.DB, accept)
				free()
				r = answer()
				wg.Wait()
				wantProblem(t, r, http.StatusUnauthorized, problem.CodeInvalidToken)
				if n := x.count(t, `SELECT count(*) FROM invitations WHERE lower(email) = 'leaving@example.com' AND status = 'pending'`); n != 1 {
					t.Errorf("%d pending invitations to the address, want 1", n)
				}
			} else {
				for _, q := range []string{qPark, qTrigger} {
					if _, err := x.DB.Pool.Exec(ctx, q); err != nil {
						t.Fatal(err)
					}
				}
				hold := x.DB.Hold(t, `SELECT pg_advisory_xact_lock(7301)`)
				answer := dbtest.AnsweredOrWaiting(t, x.DB, accept)
				free() // the deletion goes on once it has the row
				deletion()
				x.DB.WaitForLockWaitersOn(t, "FOR UPDATE", 1) // the deletion waits for the account's row
				if err := hold.Rollback(ctx); err != nil {
					t.Fatal(err)
				}
				r = answer()
				wg.Wait()
				wantStatus(t, r, http.StatusOK)
			}
			if delErr != nil {
				t.Errorf("deletion: %v", delErr)
			}
			if n := x.count(t, `SELECT (SELECT count(*) FROM users WHERE id = $1) + (SELECT count(*) FROM memberships WHERE user_id = $1)`, a.c.Sub); n != 0 {
				t.Errorf("%d rows of the account and its memberships left, want 0", n)
			}
		})
	}
}
