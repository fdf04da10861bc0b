package auth_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestRefreshRacingAccountDeletion: a refresh whose session goes while it
// waits for the session's row (the account deleted, which deletes its
// sessions and refresh tokens; or the sweep of an expired session) is
// refused as any refresh of an ended session, 400 invalid_grant, with no
// token. It answered 500: having lost the rotation, it read the token's
// row again to learn who had won, and found none.
func TestRefreshRacingAccountDeletion(t *testing.T) {
	e := start(t, cheap)
	tk := e.signup(t, "gone@example.com", "G")
	hold := e.DB.Hold(t, `DELETE FROM users WHERE id = $1`, claims(t, tk.AccessToken)["sub"].(string))
	done := make(chan apitest.Response, 1)
	go func() { done <- e.refresh(t, tk.RefreshToken) }()
	e.DB.WaitForLockWaitersOn(t, "FOR UPDATE", 1)
	if err := hold.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.Status != http.StatusBadRequest || r.Problem(t).Code != problem.CodeInvalidGrant {
		t.Fatalf("refresh racing the account's deletion: %d %s, want 400 %s", r.Status, r.Body, problem.CodeInvalidGrant)
	}
	if strings.Contains(string(r.Body), "access_token") {
		t.Errorf("answer carries an access token: %s", r.Body)
	}
}
