package serviceaccounts_test

import (
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestServiceAccountSignsOutEverywhere: a service account's token may
// call POST /auth/logout with scope=global, and that ends every access
// token of the account, obtained with any of its secrets: the account's
// own kill switch for a token that leaked (from a CI log, a crash dump)
// without deleting a secret its other clients use. The secrets and the
// API keys the account minted stay: a client authenticates again and
// gets a token that works. It is audited with the account as actor and
// announced to the proxies. scope=local (the default) is 400
// invalid_request: a service token names no session, and nothing ends.
func TestServiceAccountSignsOutEverywhere(t *testing.T) {
	e := start(t, startOpts{keyRoutes: true})
	_, owner := e.owner(t, "owner@example.com")
	tid := owner.TenantID
	a := e.createAccount(t, owner, "ci", "admin")
	one, two := e.createSecret(t, owner, a.ID), e.createSecret(t, owner, a.ID)
	first, second := e.clientToken(t, one, ""), e.clientToken(t, two, "")
	as := e.tokenIdentity(t, a.ID, tid, one.ID)
	key := e.mintKey(t, as, "minted")
	const qVersion = `SELECT token_version FROM users WHERE id = $1`
	version := e.count(t, qVersion, a.ID)

	for _, path := range []string{"/api/v1/auth/logout", "/api/v1/auth/logout?scope=local"} {
		apitest.WantProblem(t, e.Send(t, as, http.MethodPost, path, nil), http.StatusBadRequest, problem.CodeInvalidRequest)
	}
	if got := e.count(t, qVersion, a.ID); got != version {
		t.Fatalf("a refused local sign-out moved the token version from %d to %d", version, got)
	}
	for _, tok := range []string{first.AccessToken, second.AccessToken} {
		if got := e.introspect(t, one, tok); got["active"] != true {
			t.Fatalf("a token before the sign-out: %v, want active", got)
		}
	}

	outbox := `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = $2`
	announced := e.count(t, outbox, invalidation.UserSubject(a.ID), invalidation.ReasonUserLogoutGlobal)
	apitest.WantStatus(t, e.Send(t, as, http.MethodPost, "/api/v1/auth/logout?scope=global", nil), http.StatusNoContent)
	if got := e.count(t, qVersion, a.ID); got != version+1 {
		t.Fatalf("token version %d after the sign-out, want %d", got, version+1)
	}
	for name, tok := range map[string]string{"the caller's": first.AccessToken, "the other secret's": second.AccessToken} {
		if got := e.introspect(t, two, tok); got["active"] != false {
			t.Errorf("%s token after the sign-out everywhere: %v, want inactive", name, got)
		}
	}
	if n := e.count(t, outbox, invalidation.UserSubject(a.ID), invalidation.ReasonUserLogoutGlobal); n != announced+1 {
		t.Errorf("%d announcements of the sign-out, want 1", n-announced)
	}
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = $1 AND actor_user_id = $2 AND target_id = $2::text AND tenant_id = $3`,
		audit.ActionUserLogoutGlobal, a.ID, tid); n != 1 {
		t.Errorf("%d audit events of the sign-out in the account's tenant, want 1", n)
	}

	// The secrets and the minted key stay: a client authenticates again.
	for _, s := range []secret{one, two} {
		if got := e.introspect(t, one, e.clientToken(t, s, "").AccessToken); got["active"] != true {
			t.Errorf("a token obtained after the sign-out with secret %s: %v, want active", s.ID, got)
		}
	}
	e.wantKey(t, key, http.StatusOK, "")
}
