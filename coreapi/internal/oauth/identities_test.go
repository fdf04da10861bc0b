package oauth_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// linkedAccount signs up email with a password, proves its address and
// links the fake provider's identity to it by a sign-in; it returns the
// identity of the signup's session (signed in now).
func (x *env) linkedAccount(t *testing.T, email string) *identity.Identity {
	t.Helper()
	st := x.signup(t, email)
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE users SET email_verified_at = now() WHERE id = $1`, sub(t, st.AccessToken)); err != nil {
		t.Fatal(err)
	}
	x.idp.Mu.Lock()
	x.idp.Email = email
	x.idp.Mu.Unlock()
	x.finish(t, x.begin(t, "?tenant_id="+st.TenantID))
	return x.identityFor(t, st)
}

func (x *env) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	if _, err := x.DB.Pool.Exec(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

type identityList struct {
	Data []struct {
		Provider string  `json:"provider"`
		Email    *string `json:"email"`
		LinkedAt string  `json:"linked_at"`
	} `json:"data"`
}

// TestMyIdentitiesListedAndUnlinked: GET /users/me/identities lists the
// providers linked to the caller's account; DELETE
// /users/me/identities/{provider} removes the provider's link, audited
// and told to the account's verified address, after which the list is
// empty and a second removal is 404. Nobody else's links are listed or
// removed.
func TestMyIdentitiesListedAndUnlinked(t *testing.T) {
	x := start(t)
	me := x.linkedAccount(t, "listed@example.com")
	// Someone else, linked through another subject.
	x.idp.Mu.Lock()
	x.idp.Subject = "other-subject"
	x.idp.Mu.Unlock()
	other := x.linkedAccount(t, "other@example.com")

	r := x.Get(t, me, "/api/v1/users/me/identities")
	apitest.WantStatus(t, r, http.StatusOK)
	var l identityList
	r.JSON(t, &l)
	if len(l.Data) != 1 || l.Data[0].Provider != "fake" || l.Data[0].Email == nil || *l.Data[0].Email != "listed@example.com" || l.Data[0].LinkedAt == "" {
		t.Fatalf("identities = %s, want the fake provider's with the address", r.Body)
	}

	apitest.WantStatus(t, x.Send(t, me, http.MethodDelete, "/api/v1/users/me/identities/fake", nil), http.StatusNoContent)
	r = x.Get(t, me, "/api/v1/users/me/identities")
	apitest.WantStatus(t, r, http.StatusOK)
	if strings.TrimSpace(string(r.Body)) != `{"data":[]}` {
		t.Errorf("identities after the unlink = %s, want none", r.Body)
	}
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, other.UserID); n != 1 {
		t.Errorf("%d identities of the other account, want its 1", n)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.identity_unlinked' AND target_id = $1
		AND actor_user_id = $1::uuid AND data->>'provider' = 'fake'`, me.UserID); n != 1 {
		t.Errorf("%d identity_unlinked audit events, want 1", n)
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'identity_unlinked' AND to_address = 'listed@example.com'
		AND data->>'provider' = 'fake'`); n != 1 {
		t.Errorf("%d unlink notices, want 1", n)
	}
	apitest.WantProblem(t, x.Send(t, me, http.MethodDelete, "/api/v1/users/me/identities/fake", nil), http.StatusNotFound, problem.CodeNotFound)
	apitest.WantProblem(t, x.Send(t, me, http.MethodDelete, "/api/v1/users/me/identities/nosuch", nil), http.StatusNotFound, problem.CodeNotFound)
}

// TestUnlinkKeepsTheLastWayIn: an account made by a provider's sign-in
// has no password; unlinking its only provider would leave it without a
// way to sign in: 409 last_sign_in_method, the link kept. With another
// provider linked it goes, and the last one then stays.
func TestUnlinkKeepsTheLastWayIn(t *testing.T) {
	x := start(t, withOther)
	x.idp.Mu.Lock()
	x.idp.Subject, x.idp.Email = "passwordless", "passwordless@example.com"
	x.idp.Mu.Unlock()
	id := x.identityFor(t, x.finish(t, x.begin(t, "")))
	x.exec(t, `UPDATE sessions SET auth_time = now() WHERE id = $1`, id.SessionID) // signed in now
	r := x.Send(t, id, http.MethodDelete, "/api/v1/users/me/identities/fake", nil)
	apitest.WantProblem(t, r, http.StatusConflict, problem.CodeLastSignInMethod)
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, id.UserID); n != 1 {
		t.Fatalf("%d identities after a refused unlink, want 1", n)
	}
	x.exec(t, `INSERT INTO identities (user_id, provider, issuer, subject) VALUES ($1, 'other', $2, 's')`, id.UserID, otherIssuer)
	apitest.WantStatus(t, x.Send(t, id, http.MethodDelete, "/api/v1/users/me/identities/fake", nil), http.StatusNoContent)
	apitest.WantProblem(t, x.Send(t, id, http.MethodDelete, "/api/v1/users/me/identities/other", nil), http.StatusConflict, problem.CodeLastSignInMethod)
}

// withOther configures a second provider, "other", beside fake: never
// used to sign in here, so never discovered; its issuer is otherIssuer.
func withOther(o *oauth.Options) {
	o.Providers = append(o.Providers, config.OIDCProvider{Name: "other", Issuer: otherIssuer,
		ClientID: "other-client", ClientSecret: "other-secret", RedirectURL: redirectURL, Scopes: []string{"openid", "email"}})
}

const otherIssuer = "https://other.example"

// TestUnlinkCountsOnlyProvidersThatSignIn: a provider that can no longer
// sign in to the account is not a way in. An identity of a provider that
// OIDC_PROVIDERS no longer lists (retired), or one linked through another
// issuer than its configured provider's current one (which that sign-in
// refuses until an operator removes the link), does not keep the last
// usable provider of an account without a password: its unlink is 409
// last_sign_in_method, nothing removed. An identity of a configured
// provider whose issuer was never recorded (linked before issuers were
// kept, recorded by its next sign-in) is a way in; so are the retired
// provider's identities removable while one remains.
func TestUnlinkCountsOnlyProvidersThatSignIn(t *testing.T) {
	x := start(t, withOther)
	x.idp.Mu.Lock()
	x.idp.Subject, x.idp.Email = "retiring", "retiring@example.com"
	x.idp.Mu.Unlock()
	id := x.identityFor(t, x.finish(t, x.begin(t, "")))
	x.exec(t, `UPDATE sessions SET auth_time = now() WHERE id = $1`, id.SessionID)
	x.exec(t, `INSERT INTO identities (user_id, provider, issuer, subject) VALUES ($1, 'retired', 'https://retired.example', 's'),
($1, 'other', 'https://stale.example', 's')`, id.UserID)
	identities := func() int {
		t.Helper()
		return x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, id.UserID)
	}
	unlink := func(provider string) apitest.Response {
		t.Helper()
		return x.Send(t, id, http.MethodDelete, "/api/v1/users/me/identities/"+provider, nil)
	}
	apitest.WantProblem(t, unlink("fake"), http.StatusConflict, problem.CodeLastSignInMethod)
	if n := identities(); n != 3 {
		t.Fatalf("%d identities after a refused unlink, want 3", n)
	}
	x.exec(t, `UPDATE identities SET issuer = $2 WHERE user_id = $1 AND provider = 'other'`, id.UserID, otherIssuer)
	apitest.WantStatus(t, unlink("fake"), http.StatusNoContent)
	apitest.WantStatus(t, unlink("retired"), http.StatusNoContent)
	x.exec(t, `INSERT INTO identities (user_id, provider, issuer, subject) VALUES ($1, 'retired', 'https://retired.example', 's')`, id.UserID)
	x.exec(t, `UPDATE identities SET issuer = NULL WHERE user_id = $1 AND provider = 'other'`, id.UserID)
	apitest.WantProblem(t, unlink("other"), http.StatusConflict, problem.CodeLastSignInMethod)
	if n := identities(); n != 2 {
		t.Fatalf("%d identities after a refused unlink, want 2", n)
	}
}

// TestUnlinksOfTheLastTwoWaysInTakeTurns: two unlinks at once of the two
// providers of an account without a password each saw the other's link
// still there: both would pass and leave the account with no way in. They
// take the account's row in turn, so the second sees the first's: one
// passes, the other is 409 last_sign_in_method.
func TestUnlinksOfTheLastTwoWaysInTakeTurns(t *testing.T) {
	x := start(t, withOther)
	x.idp.Mu.Lock()
	x.idp.Subject, x.idp.Email = "two-ways", "two-ways@example.com"
	x.idp.Mu.Unlock()
	id := x.identityFor(t, x.finish(t, x.begin(t, "")))
	x.exec(t, `UPDATE sessions SET auth_time = now() WHERE id = $1`, id.SessionID)
	x.exec(t, `INSERT INTO identities (user_id, provider, issuer, subject) VALUES ($1, 'other', $2, 's')`, id.UserID, otherIssuer)
	hold := x.DB.Hold(t, `SELECT 1 FROM users WHERE id = $1 FOR UPDATE`, id.UserID)
	done := make(chan apitest.Response, 2)
	for _, p := range []string{"fake", "other"} {
		go func() { done <- x.Send(t, id, http.MethodDelete, "/api/v1/users/me/identities/"+p, nil) }()
	}
	x.DB.WaitForLockWaiters(t, 2)
	if err := hold.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	statuses := map[int]int{}
	for range 2 {
		r := <-done
		statuses[r.Status]++
		if r.Status == http.StatusConflict {
			apitest.WantProblem(t, r, http.StatusConflict, problem.CodeLastSignInMethod)
		}
	}
	if statuses[http.StatusNoContent] != 1 || statuses[http.StatusConflict] != 1 {
		t.Errorf("statuses %v, want one 204 and one 409", statuses)
	}
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, id.UserID); n != 1 {
		t.Errorf("%d identities left, want 1", n)
	}
}

// TestUnlinkGuards: an unlink needs a sign-in within the last 5 minutes
// (401 insufficient_user_authentication, max_age=300), with the second
// factor for an account that has one (acr_values="mfa"), of a session
// still bound to the token's tenant (401 invalid_token after a tenant
// switch or a sign-out), by an account that could sign in now (403 user_disabled). API
// keys and service accounts may neither list nor unlink (403
// principal_not_allowed). Each refusal leaves the link.
func TestUnlinkGuards(t *testing.T) {
	x := start(t)
	me := x.linkedAccount(t, "guarded@example.com")
	del := func(as *identity.Identity) apitest.Response {
		return x.Send(t, as, http.MethodDelete, "/api/v1/users/me/identities/fake", nil)
	}
	for _, p := range []string{identity.PrincipalAPIKey, identity.PrincipalService} {
		key := *me
		key.Principal = p
		apitest.WantProblem(t, x.Get(t, &key, "/api/v1/users/me/identities"), http.StatusForbidden, problem.CodePrincipalNotAllowed)
		apitest.WantProblem(t, del(&key), http.StatusForbidden, problem.CodePrincipalNotAllowed)
	}

	x.exec(t, `UPDATE sessions SET auth_time = now() - interval '10 minutes' WHERE id = $1`, me.SessionID)
	r := del(me)
	apitest.WantProblem(t, r, http.StatusUnauthorized, problem.CodeInsufficientUserAuthentication)
	if got := r.Header.Get("WWW-Authenticate"); !strings.Contains(got, "max_age=300") || strings.Contains(got, "acr_values") {
		t.Errorf("WWW-Authenticate = %q, want max_age=300 without acr_values", got)
	}
	x.exec(t, `UPDATE sessions SET auth_time = now() WHERE id = $1`, me.SessionID)

	x.exec(t, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now())`, me.UserID)
	r = del(me)
	apitest.WantProblem(t, r, http.StatusUnauthorized, problem.CodeInsufficientUserAuthentication)
	if got := r.Header.Get("WWW-Authenticate"); !strings.Contains(got, `acr_values="mfa"`) {
		t.Errorf("WWW-Authenticate = %q, want acr_values=\"mfa\"", got)
	}
	x.exec(t, `DELETE FROM mfa_totp WHERE user_id = $1`, me.UserID)

	x.exec(t, `UPDATE users SET status = 'disabled' WHERE id = $1`, me.UserID)
	apitest.WantProblem(t, del(me), http.StatusForbidden, problem.CodeUserDisabled)
	x.exec(t, `UPDATE users SET status = 'active' WHERE id = $1`, me.UserID)

	moved := *me
	second := x.SeedTenant(t, "Second")
	x.SeedMember(t, second.ID, me.UserID, "member")
	x.exec(t, `UPDATE sessions SET tenant_id = $2 WHERE id = $1`, me.SessionID, second.ID)
	apitest.WantProblem(t, del(&moved), http.StatusUnauthorized, problem.CodeInvalidToken)

	// A signed-out session has ended, however recent its sign-in was: 401
	// invalid_token, not a step-up that it could never give.
	x.exec(t, `UPDATE sessions SET tenant_id = $2, revoked_at = now() WHERE id = $1`, me.SessionID, me.TenantID)
	apitest.WantProblem(t, del(me), http.StatusUnauthorized, problem.CodeInvalidToken)
	x.exec(t, `UPDATE sessions SET tenant_id = $2, revoked_at = NULL WHERE id = $1`, me.SessionID, second.ID)

	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, me.UserID); n != 1 {
		t.Fatalf("%d identities after the refusals, want 1", n)
	}
	moved.TenantID = second.ID
	apitest.WantStatus(t, del(&moved), http.StatusNoContent)
}

// TestUnlinkedProviderNotLinkedAgainByAddress: once the owner removed a
// provider's link, a sign-in through that provider with the account's
// address does not link it again: whoever holds an account there with the
// address (the one the removal was for) would be back in at the next
// sign-in, and a new account of theirs at the provider (another subject)
// too. It is refused (409 conflict), nothing linked, no session opened,
// nothing mailed; another account keeps linking as before.
func TestUnlinkedProviderNotLinkedAgainByAddress(t *testing.T) {
	x := start(t)
	me := x.linkedAccount(t, "unlinked@example.com")
	apitest.WantStatus(t, x.Send(t, me, http.MethodDelete, "/api/v1/users/me/identities/fake", nil), http.StatusNoContent)
	sessionsBefore := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1`, me.UserID)
	notices := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'identity_linked'`)
	for _, subject := range []string{"idp-user-1", "a-new-account-at-the-provider"} {
		x.idp.Mu.Lock()
		x.idp.Subject = subject
		x.idp.Mu.Unlock()
		st := x.begin(t, "")
		r := x.callback(t, x.approve(t, st), st.cookie)
		apitest.WantProblem(t, r, http.StatusConflict, problem.CodeConflict)
	}
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, me.UserID); n != 0 {
		t.Errorf("%d identities linked again after the owner removed the provider", n)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1`, me.UserID); n != sessionsBefore {
		t.Errorf("%d sessions opened by refused sign-ins", n-sessionsBefore)
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'identity_linked'`); n != notices {
		t.Errorf("%d link notices for refused sign-ins", n-notices)
	}
	// Another account still links by its address.
	x.idp.Mu.Lock()
	x.idp.Subject = "someone-else"
	x.idp.Mu.Unlock()
	x.linkedAccount(t, "someone-else@example.com")
}
