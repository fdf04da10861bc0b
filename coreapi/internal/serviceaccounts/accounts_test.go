package serviceaccounts_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/serviceaccounts"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// A service account is created with roles, gets secrets (several live at
// once), obtains tokens with either, and a deleted secret or account stops
// authenticating; every change is audited and deletions tell the proxies.
func TestServiceAccountLifecycle(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")

	a := e.createAccount(t, owner, "ci", "admin")
	if a.ID == "" || a.ClientID != a.ID || a.Name != "ci" || !slices.Equal(a.Roles, []string{"admin"}) || len(a.Secrets) != 0 {
		t.Fatalf("created = %+v", a)
	}
	s1 := e.createSecret(t, owner, a.ID)
	s2 := e.createSecret(t, owner, a.ID)
	if s1.ClientID != a.ID || !strings.HasPrefix(s1.ClientSecret, "tgcs_") || s1.ClientSecret == s2.ClientSecret {
		t.Fatalf("secrets = %+v, %+v", s1, s2)
	}
	if n := e.count(t, `SELECT count(*) FROM service_account_secrets WHERE secret_hash = convert_to($1, 'UTF8')`, s1.ClientSecret); n != 0 {
		t.Fatal("a secret is stored in clear")
	}

	tk := e.clientToken(t, s1, "")
	if tk.TokenType != "Bearer" || tk.ExpiresIn != 900 || tk.RefreshToken != "" || tk.TenantID != owner.TenantID {
		t.Fatalf("token response = %+v", tk)
	}
	c := claimsOf(t, tk.AccessToken)
	if c["sub"] != a.ID || c["tid"] != owner.TenantID || c["principal"] != "service" || c["client_id"] != a.ID || c["iss"] != issuer {
		t.Fatalf("claims = %v", c)
	}
	if _, ok := c["sid"]; ok {
		t.Fatalf("a client_credentials token names a session: %v", c)
	}
	if _, ok := c["scope"]; ok {
		t.Fatalf("an unscoped request got a scope claim: %v", c)
	}
	admin := e.IdentityOf(t, a.ID, owner.TenantID)
	if tk.Scope != strings.Join(admin.Permissions, " ") || slices.Contains(admin.Permissions, "tenant:write") {
		t.Fatalf("scope %q, the admin role grants %q", tk.Scope, admin.Permissions)
	}
	// Body credentials work as well as Basic, and so does the second secret.
	r := e.form(t, "/api/v1/auth/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {s2.ClientID}, "client_secret": {s2.ClientSecret}}, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("body credentials: %d %s", r.Status, r.Body)
	}
	r = e.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "client_credentials", "client_id": s1.ClientID, "client_secret": s1.ClientSecret})
	if r.Status != http.StatusOK {
		t.Fatalf("JSON body credentials: %d %s", r.Status, r.Body)
	}

	var list struct{ Data []account }
	r = e.Get(t, owner, "/api/v1/service-accounts")
	r.JSON(t, &list)
	if r.Status != http.StatusOK || len(list.Data) != 1 || len(list.Data[0].Secrets) != 2 || list.Data[0].Secrets[0].LastUsedAt == nil {
		t.Fatalf("list: %d %s", r.Status, r.Body)
	}
	if strings.Contains(string(r.Body), "tgcs_") {
		t.Fatal("the list shows a secret")
	}

	// Deleting s1 ends it and the tokens of the account; s2 goes on.
	if r := e.Send(t, owner, http.MethodDelete, "/api/v1/service-accounts/"+a.ID+"/secrets/"+s1.ID, nil); r.Status != http.StatusNoContent {
		t.Fatalf("delete secret: %d %s", r.Status, r.Body)
	}
	r = e.form(t, "/api/v1/auth/token", url.Values{"grant_type": {"client_credentials"}}, basic(s1.ClientID, s1.ClientSecret))
	oauthProblem(t, r, http.StatusUnauthorized, "invalid_client")
	if got := e.introspect(t, s2, tk.AccessToken); got["active"] != false {
		t.Fatalf("a token of the account after a secret's deletion: %v", got)
	}
	tk2 := e.clientToken(t, s2, "")
	if got := e.introspect(t, s2, tk2.AccessToken); got["active"] != true {
		t.Fatalf("a new token with the other secret: %v", got)
	}
	if r := e.Send(t, owner, http.MethodDelete, "/api/v1/service-accounts/"+a.ID+"/secrets/"+s1.ID, nil); r.Status != http.StatusNotFound {
		t.Fatalf("delete a deleted secret: %d", r.Status)
	}

	// Deleting the account ends everything.
	if r := e.Send(t, owner, http.MethodDelete, "/api/v1/service-accounts/"+a.ID, nil); r.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	r = e.form(t, "/api/v1/auth/token", url.Values{"grant_type": {"client_credentials"}}, basic(s2.ClientID, s2.ClientSecret))
	oauthProblem(t, r, http.StatusUnauthorized, "invalid_client")
	if n := e.count(t, `SELECT count(*) FROM users WHERE id = $1`, a.ID); n != 0 {
		t.Fatal("the account's user row outlived it")
	}
	if r := e.Send(t, owner, http.MethodDelete, "/api/v1/service-accounts/"+a.ID, nil); r.Status != http.StatusNotFound {
		t.Fatalf("delete again: %d", r.Status)
	}
	for _, reason := range []string{serviceaccounts.ReasonSecretDeleted, serviceaccounts.ReasonDeleted} {
		if n := e.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = $2`, invalidation.UserSubject(a.ID), reason); n != 1 {
			t.Errorf("outbox rows for %s: %d, want 1", reason, n)
		}
	}
	for _, action := range []string{serviceaccounts.ActionCreated, serviceaccounts.ActionSecretCreated, serviceaccounts.ActionSecretDeleted,
		serviceaccounts.ActionDeleted, serviceaccounts.ActionAuthFailed} {
		if n := e.count(t, `SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND action = $2 AND target_id = $3`, owner.TenantID, action, a.ID); n == 0 {
			t.Errorf("no %s audit event", action)
		}
	}
}

// Who may manage service accounts, with which roles.
func TestServiceAccountPermissions(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	admin := e.SeedUserIn(t, owner.TenantID, "admin@example.com", "admin")
	member := e.SeedUserIn(t, owner.TenantID, "member@example.com", "member")

	// No owner role for a machine, not even from the owner.
	r := e.Send(t, owner, http.MethodPost, "/api/v1/service-accounts", map[string]any{"name": "x", "roles": []string{"owner"}})
	if r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("owner role: %d %s", r.Status, r.Body)
	}
	r = e.Send(t, owner, http.MethodPost, "/api/v1/service-accounts", map[string]any{"name": "x", "roles": []string{"no-such-role"}})
	if r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("unknown role: %d %s", r.Status, r.Body)
	}
	for name, body := range map[string]any{
		"empty name":         map[string]any{"name": "  "},
		"long name":          map[string]any{"name": strings.Repeat("n", 201)},
		"line break in name": map[string]any{"name": "ci\nbot"},
		"invisible name":     map[string]any{"name": "\u200b\u2060"},
		"bad role name":      map[string]any{"name": "x", "roles": []string{"Bad Role"}},
	} {
		if r := e.Send(t, owner, http.MethodPost, "/api/v1/service-accounts", body); r.Status != http.StatusUnprocessableEntity {
			t.Errorf("%s: %d %s", name, r.Status, r.Body)
		}
	}
	// A long bad role name is quoted cut on a character boundary: 'a'
	// then 40 two-byte characters, the 64-byte cut inside the 32nd.
	r = e.Send(t, owner, http.MethodPost, "/api/v1/service-accounts", map[string]any{"name": "x", "roles": []string{"a" + strings.Repeat("é", 40)}})
	if p := r.Problem(t); r.Status != http.StatusUnprocessableEntity || len(p.Errors) != 1 ||
		p.Errors[0].Message != `not a role name: "a`+strings.Repeat("é", 31)+`..."` {
		t.Fatalf("long role name: %d %s", r.Status, r.Body)
	}
	if n := e.count(t, `SELECT count(*) FROM users WHERE kind = 'service'`); n != 0 {
		t.Fatalf("refused creations left %d service users", n)
	}
	// A member (no users:write) can neither list nor create.
	if r := e.Get(t, &member, "/api/v1/service-accounts"); r.Status != http.StatusForbidden {
		t.Fatalf("member list: %d", r.Status)
	}
	if r := e.Send(t, &member, http.MethodPost, "/api/v1/service-accounts", map[string]any{"name": "x"}); r.Status != http.StatusForbidden {
		t.Fatalf("member create: %d", r.Status)
	}
	// An admin lacks tenant:write: a role carrying it is escalation, for
	// the account and for a secret of an account that holds it.
	if r := e.Send(t, owner, http.MethodPost, "/api/v1/roles", map[string]any{"name": "tenant-editor", "permissions": []string{"tenant:write"}}); r.Status != http.StatusCreated {
		t.Fatalf("create role: %d %s", r.Status, r.Body)
	}
	if r := e.Send(t, &admin, http.MethodPost, "/api/v1/service-accounts", map[string]any{"name": "x", "roles": []string{"tenant-editor"}}); r.Status != http.StatusForbidden {
		t.Fatalf("admin escalating: %d %s", r.Status, r.Body)
	}
	strong := e.createAccount(t, owner, "strong", "tenant-editor")
	for _, req := range [][2]string{
		{http.MethodPost, "/api/v1/service-accounts/" + strong.ID + "/secrets"},
		{http.MethodDelete, "/api/v1/service-accounts/" + strong.ID},
	} {
		if r := e.Send(t, &admin, req[0], req[1], nil); r.Status != http.StatusForbidden {
			t.Errorf("admin %s %s on a stronger account: %d %s", req[0], req[1], r.Status, r.Body)
		}
	}
	weak := e.createAccount(t, &admin, "weak", "member")
	s := e.createSecret(t, &admin, weak.ID)

	// A service account cannot manage service accounts, even with users:write.
	sa := e.createAccount(t, owner, "sa-admin", "admin")
	saID := e.IdentityOf(t, sa.ID, owner.TenantID)
	saID.Principal = identity.PrincipalService
	if r := e.Send(t, &saID, http.MethodPost, "/api/v1/service-accounts", map[string]any{"name": "spawn"}); r.Status != http.StatusForbidden {
		t.Fatalf("service account creating one: %d %s", r.Status, r.Body)
	}
	if r := e.Send(t, &saID, http.MethodPost, "/api/v1/service-accounts/"+weak.ID+"/secrets", nil); r.Status != http.StatusForbidden {
		t.Fatalf("service account creating a secret: %d %s", r.Status, r.Body)
	}
	if r := e.Get(t, &saID, "/api/v1/service-accounts"); r.Status != http.StatusOK {
		t.Fatalf("service account listing: %d %s", r.Status, r.Body)
	}

	// Another tenant sees and touches none of these.
	_, other := e.owner(t, "other@example.com")
	var list struct{ Data []account }
	e.Get(t, other, "/api/v1/service-accounts").JSON(t, &list)
	if len(list.Data) != 0 {
		t.Fatalf("another tenant lists %d accounts", len(list.Data))
	}
	for _, req := range [][2]string{
		{http.MethodPost, "/api/v1/service-accounts/" + weak.ID + "/secrets"},
		{http.MethodDelete, "/api/v1/service-accounts/" + weak.ID + "/secrets/" + s.ID},
		{http.MethodDelete, "/api/v1/service-accounts/" + weak.ID},
	} {
		if r := e.Send(t, other, req[0], req[1], nil); r.Status != http.StatusNotFound {
			t.Errorf("other tenant %s %s: %d", req[0], req[1], r.Status)
		}
	}
	for _, p := range []string{"/api/v1/service-accounts/nope", "/api/v1/service-accounts/" + weak.ID + "/secrets/nope"} {
		if r := e.Send(t, owner, http.MethodDelete, p, nil); r.Status != http.StatusBadRequest {
			t.Errorf("DELETE %s: %d", p, r.Status)
		}
	}
	// At most MaxSecrets live secrets.
	for range serviceaccounts.MaxSecrets - 1 {
		e.createSecret(t, owner, weak.ID)
	}
	if r := e.Send(t, owner, http.MethodPost, "/api/v1/service-accounts/"+weak.ID+"/secrets", nil); r.Status != http.StatusConflict {
		t.Fatalf("secret beyond the limit: %d %s", r.Status, r.Body)
	}
}

// A service account is not a person: its address can sign in by no means.
func TestServiceAccountCannotSignIn(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "bot")
	s := e.createSecret(t, owner, a.ID)
	email := a.ID + "@" + serviceaccounts.EmailDomain
	for _, guess := range []string{pw, s.ClientSecret, ""} {
		r := e.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "password", "email": email, "password": guess + "x"})
		if r.Status == http.StatusOK {
			t.Fatalf("password sign-in of a service account succeeded")
		}
		oauthProblem(t, r, r.Status, "invalid_grant")
	}
	if n := e.count(t, `SELECT count(*) FROM users WHERE id = $1 AND password_hash IS NULL AND kind = 'service'`, a.ID); n != 1 {
		t.Fatal("the service account's user row has a password or the wrong kind")
	}
}

// A service account is a member: it is listed among the tenant's members
// with its reserved address, and its roles change through the member
// routes, which its next token follows.
func TestServiceAccountIsAMember(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "bot", "member")
	s := e.createSecret(t, owner, a.ID)

	r := e.Get(t, owner, "/api/v1/users")
	var members struct {
		Data []struct {
			ID    string `json:"id"`
			Email string `json:"email"`
		} `json:"data"`
	}
	r.JSON(t, &members)
	found := false
	for _, m := range members.Data {
		if m.ID == a.ID {
			found = m.Email == a.ID+"@"+serviceaccounts.EmailDomain
		}
	}
	if r.Status != http.StatusOK || !found {
		t.Fatalf("members: %d %s", r.Status, r.Body)
	}
	before := e.clientToken(t, s, "")
	if strings.Contains(before.Scope, "users:write") {
		t.Fatalf("a member holds users:write: %q", before.Scope)
	}
	if r := e.Send(t, owner, http.MethodPut, "/api/v1/users/"+a.ID+"/roles/admin", nil); r.Status != http.StatusOK {
		t.Fatalf("grant admin: %d %s", r.Status, r.Body)
	}
	after := e.clientToken(t, s, "")
	if !strings.Contains(after.Scope, "users:write") {
		t.Fatalf("after the grant: %q", after.Scope)
	}
	if got := e.introspect(t, s, before.AccessToken); !strings.Contains(got["scope"].(string), "users:write") {
		t.Fatalf("an unscoped token follows the roles: %v", got)
	}
}

// A disabled membership stops the account from obtaining tokens, and its
// tokens go inactive. The member route does not remove a service account
// (TestServiceAccountNotRemovedAsAMember).
func TestServiceAccountMembershipEnds(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "bot")
	s := e.createSecret(t, owner, a.ID)
	probe := e.createAccount(t, owner, "probe")
	ps := e.createSecret(t, owner, probe.ID)
	tk := e.clientToken(t, s, "")
	cc := url.Values{"grant_type": {"client_credentials"}}

	if r := e.Send(t, owner, http.MethodPatch, "/api/v1/users/"+a.ID, map[string]string{"membership_status": "disabled"}); r.Status != http.StatusOK {
		t.Fatalf("disable: %d %s", r.Status, r.Body)
	}
	oauthProblem(t, e.form(t, "/api/v1/auth/token", cc, basic(s.ClientID, s.ClientSecret)), http.StatusBadRequest, "unauthorized_client")
	if got := e.introspect(t, ps, tk.AccessToken); got["active"] != false {
		t.Fatalf("a disabled account's token: %v", got)
	}
	// A disabled client cannot introspect either.
	oauthProblem(t, e.form(t, "/api/v1/auth/introspect", url.Values{"token": {tk.AccessToken}}, basic(s.ClientID, s.ClientSecret)),
		http.StatusUnauthorized, "invalid_client")

	if r := e.Send(t, owner, http.MethodPatch, "/api/v1/users/"+a.ID, map[string]string{"membership_status": "active"}); r.Status != http.StatusOK {
		t.Fatalf("enable: %d %s", r.Status, r.Body)
	}
	e.clientToken(t, s, "")
}

// DELETE /users/{id} on a service account is 409 and changes nothing: it
// removed the membership alone, leaving the account, its user row and its
// client secrets behind, with no route that could make it a member again
// (listed with no roles, counted against the tenant's limit, its deletion
// never audited as one). DELETE /service-accounts/{id} deletes it whole,
// also one left without a membership that way before.
func TestServiceAccountNotRemovedAsAMember(t *testing.T) {
	e := start(t, startOpts{keyRoutes: true})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "bot", "admin")
	s := e.createSecret(t, owner, a.ID)
	keyOf := e.mintKey(t, e.serviceIdentity(t, a.ID, owner.TenantID), "deploy")
	outbox := e.count(t, `SELECT count(*) FROM outbox`)

	r := e.Send(t, owner, http.MethodDelete, "/api/v1/users/"+a.ID, nil)
	apitest.WantProblem(t, r, http.StatusConflict, problem.CodeConflict)
	if p := r.Problem(t); !strings.Contains(p.Detail, "/api/v1/service-accounts/{id}") {
		t.Errorf("detail %q does not name the service-account route", p.Detail)
	}
	if n := e.count(t, `SELECT count(*) FROM memberships WHERE tenant_id = $1 AND user_id = $2`, owner.TenantID, a.ID); n != 1 {
		t.Fatalf("the refused removal left %d memberships", n)
	}
	if n := e.count(t, `SELECT count(*) FROM outbox`); n != outbox {
		t.Errorf("the refused removal wrote %d outbox rows", n-outbox)
	}
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND action = 'member.removed'`, owner.TenantID); n != 0 {
		t.Errorf("the refused removal was audited as done")
	}
	e.clientToken(t, s, "")
	e.wantKey(t, keyOf, http.StatusOK, "")

	// The service-account route deletes it whole.
	apitest.WantStatus(t, e.Send(t, owner, http.MethodDelete, "/api/v1/service-accounts/"+a.ID, nil), http.StatusNoContent)
	oauthProblem(t, e.form(t, "/api/v1/auth/token", url.Values{"grant_type": {"client_credentials"}}, basic(s.ClientID, s.ClientSecret)),
		http.StatusUnauthorized, "invalid_client")
	if n := e.count(t, `SELECT count(*) FROM users WHERE id = $1`, a.ID); n != 0 {
		t.Fatal("the account's user row outlived it")
	}

	// One whose membership went before (by the old member route) is
	// deleted by the service-account route too, secrets and all.
	b := e.createAccount(t, owner, "orphan")
	e.createSecret(t, owner, b.ID)
	e.exec(t, `DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2`, owner.TenantID, b.ID)
	apitest.WantStatus(t, e.Send(t, owner, http.MethodDelete, "/api/v1/service-accounts/"+b.ID, nil), http.StatusNoContent)
	if n := e.count(t, `SELECT count(*) FROM service_account_secrets WHERE user_id = $1`, b.ID) +
		e.count(t, `SELECT count(*) FROM users WHERE id = $1`, b.ID); n != 0 {
		t.Fatal("the account left without a membership outlived its deletion")
	}
}

// The owner role is never a machine's, whichever route would give it: the
// member routes refuse it as creation does, so a tenant's last person
// owner cannot be replaced by a service account and then removed.
func TestServiceAccountNeverGetsOwnerRole(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "bot", "admin")
	r := e.Send(t, owner, http.MethodPut, "/api/v1/users/"+a.ID+"/roles/owner", nil)
	if r.Status != http.StatusForbidden {
		t.Fatalf("grant owner to a service account: %d %s", r.Status, r.Body)
	}
	if n := e.count(t, `SELECT count(*) FROM membership_roles mr JOIN roles r ON r.id = mr.role_id
WHERE mr.user_id = $1 AND r.name = 'owner'`, a.ID); n != 0 {
		t.Fatal("the service account holds the owner role")
	}
	// The person stays the last owner.
	if r := e.Send(t, owner, http.MethodDelete, "/api/v1/users/"+owner.UserID+"/roles/owner", nil); r.Status != http.StatusConflict {
		t.Fatalf("revoke the last person owner's role: %d %s", r.Status, r.Body)
	}
}

// mintedKey is an API key as created (its secret shown once).
// A service account, or an API key, cannot add a member: the person it
// made (with a password of its choosing) would outlive the secret's and
// the account's deletion, the key's revocation and expiry, and could then
// make the service accounts and secrets a machine may not. A person with
// the same permissions still can.
func TestMachinesAddNoMembers(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "ci", "admin")
	key := e.AsKey(t, *owner)
	saKey := e.AsKey(t, *e.serviceIdentity(t, a.ID, owner.TenantID))
	for name, as := range map[string]*identity.Identity{
		"service account": e.serviceIdentity(t, a.ID, owner.TenantID), "owner's API key": &key, "service account's API key": &saKey,
	} {
		r := e.Send(t, as, http.MethodPost, "/api/v1/users",
			map[string]any{"email": "mole@example.com", "password": "a long mole password", "roles": []string{"admin"}})
		if r.Status != http.StatusForbidden || r.Problem(t).Code != problem.CodePrincipalNotAllowed {
			t.Errorf("%s adding a member: %d %s", name, r.Status, r.Body)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM users WHERE lower(email) = 'mole@example.com'`); n != 0 {
		t.Fatalf("a refused addition left %d accounts", n)
	}
	r := e.Send(t, owner, http.MethodPost, "/api/v1/users",
		map[string]any{"email": "mole@example.com", "password": "a long mole password", "roles": []string{"admin"}})
	if r.Status != http.StatusCreated {
		t.Fatalf("the owner adding a member: %d %s", r.Status, r.Body)
	}
}

// A key minted by a service account acts as the account, and holds no
// more than it: it manages no service account or secret either, whatever
// permissions it carries (the account could otherwise mint a key and do
// with it what it may not). A person's key with the same permissions
// still deletes what they may.
func TestServiceAccountsKeyManagesNoServiceAccount(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	ci := e.createAccount(t, owner, "ci", "admin")
	saKey := e.AsKey(t, *e.serviceIdentity(t, ci.ID, owner.TenantID))
	if !saKey.Has("users:write") {
		t.Fatalf("the account's key lacks users:write: %v", saKey.Permissions)
	}
	victim := e.createAccount(t, owner, "victim", "member")
	s := e.createSecret(t, owner, victim.ID)
	for _, req := range [][2]string{
		{http.MethodDelete, "/api/v1/service-accounts/" + victim.ID + "/secrets/" + s.ID},
		{http.MethodDelete, "/api/v1/service-accounts/" + victim.ID},
		{http.MethodDelete, "/api/v1/service-accounts/" + ci.ID},
	} {
		r := e.Send(t, &saKey, req[0], req[1], nil)
		if r.Status != http.StatusForbidden || r.Problem(t).Code != problem.CodeForbidden {
			t.Errorf("the account's key: %s %s: %d %s", req[0], req[1], r.Status, r.Body)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM service_account_secrets WHERE id = $1`, s.ID); n != 1 {
		t.Fatal("the account's key deleted a secret")
	}
	if n := e.count(t, `SELECT count(*) FROM service_accounts WHERE user_id = ANY($1::uuid[])`, []string{victim.ID, ci.ID}); n != 2 {
		t.Fatal("the account's key deleted an account")
	}
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action LIKE 'service_account.%deleted'`); n != 0 {
		t.Fatalf("%d deletions audited", n)
	}
	ownerKey := e.AsKey(t, *owner)
	if r := e.Send(t, &ownerKey, http.MethodDelete, "/api/v1/service-accounts/"+victim.ID+"/secrets/"+s.ID, nil); r.Status != http.StatusNoContent {
		t.Fatalf("the owner's key deleting a secret: %d %s", r.Status, r.Body)
	}
	if r := e.Send(t, &ownerKey, http.MethodDelete, "/api/v1/service-accounts/"+victim.ID, nil); r.Status != http.StatusNoContent {
		t.Fatalf("the owner's key deleting an account: %d %s", r.Status, r.Body)
	}
}

type mintedKey struct {
	ID       string `json:"id"`
	PublicID string `json:"public_id"`
	UserID   string `json:"user_id"`
	Secret   string `json:"secret"`
}

// mintKey creates a tenant API key as the caller (a person or, with
// Principal service, a service account's token as the proxy forwards it).
func (e *env) mintKey(t testing.TB, as *identity.Identity, name string) mintedKey {
	t.Helper()
	r := e.Send(t, as, http.MethodPost, "/api/v1/api-keys", map[string]any{"name": name, "permissions": []string{"users:read"}})
	if r.Status != http.StatusCreated {
		t.Fatalf("create API key %s: %d %s", name, r.Status, r.Body)
	}
	var k mintedKey
	r.JSON(t, &k)
	return k
}

// resolveKey is the proxy's lookup of an API key at coreapi.
func (e *env) resolveKey(t testing.TB, key string) apitest.Response {
	t.Helper()
	return e.Do(t, apitest.Request{Method: http.MethodPost, Path: apikey.ResolvePath, Body: apikey.ResolveRequest{Key: key}, Service: true})
}

// wantKey checks the resolve answer of a key: 200 and active, or the
// problem code of a refusal.
func (e *env) wantKey(t testing.TB, k mintedKey, status int, code string) {
	t.Helper()
	r := e.resolveKey(t, k.Secret)
	if r.Status != status {
		t.Fatalf("resolve key %s: %d, want %d: %s", k.PublicID, r.Status, status, r.Body)
	}
	if status != http.StatusOK {
		if p := r.Problem(t); p.Code != code {
			t.Fatalf("resolve key %s: code %q, want %q", k.PublicID, p.Code, code)
		}
		return
	}
	var p apikey.Projection
	r.JSON(t, &p)
	if !p.Active() || p.PublicID != k.PublicID {
		t.Fatalf("resolve key %s: %+v", k.PublicID, p)
	}
}

// serviceIdentity is the identity the proxy forwards for a service
// account's access token. A token is obtained with a client secret: an
// account that has none gets one (unknown to anyone), as it must have
// had one when the token was issued.
func (e *env) serviceIdentity(t testing.TB, id, tenantID string) *identity.Identity {
	t.Helper()
	const q = `
INSERT INTO service_account_secrets (user_id, secret_hash)
SELECT $1, gen_random_uuid()::text::bytea
WHERE NOT EXISTS (SELECT 1 FROM service_account_secrets WHERE user_id = $1)`
	if _, err := e.DB.Pool.Exec(context.Background(), q, id); err != nil {
		t.Fatal(err)
	}
	sid := e.IdentityOf(t, id, tenantID)
	sid.Principal = identity.PrincipalService
	return &sid
}

// A tenant's require_mfa policy confines people without a second factor
// to enrolment; a service account has none to enrol and is exempt, and
// so is a key it minted, which acts as it: the key's resolve does not
// carry the policy, else every key of the tenant's machines stopped
// working (403 mfa_enrollment_required at the proxy) once the policy was
// on, while their own tokens went on. A person's key still carries it.
func TestServiceAccountsKeyUnderTheMFAPolicy(t *testing.T) {
	e := start(t, startOpts{keyRoutes: true})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "ci", "admin")
	machine := e.mintKey(t, e.serviceIdentity(t, a.ID, owner.TenantID), "deploy")
	person := e.mintKey(t, owner, "laptop")
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE tenants SET require_mfa = true WHERE id = $1`, owner.TenantID); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		k    mintedKey
		want bool
	}{{machine, false}, {person, true}} {
		r := e.resolveKey(t, tc.k.Secret)
		if r.Status != http.StatusOK {
			t.Fatalf("resolve %s: %d %s", tc.k.PublicID, r.Status, r.Body)
		}
		var p apikey.Projection
		r.JSON(t, &p)
		if p.TenantRequireMFA != tc.want || !p.Active() {
			t.Errorf("key of %s: tenant_require_mfa %v, want %v (%+v)", tc.k.UserID, p.TenantRequireMFA, tc.want, p)
		}
	}
}

// A leaked secret's access token can mint API keys acting as the account.
// Deleting the secret revokes every key the account minted, in the same
// transaction, audited and announced like an explicit revocation, so no
// credential obtained with the secret outlives it. Keys of people and of
// other accounts are untouched, and the account's other secret goes on.
func TestSecretDeletionRevokesTheAccountsAPIKeys(t *testing.T) {
	e := start(t, startOpts{keyRoutes: true})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "ci", "admin")
	leaked := e.createSecret(t, owner, a.ID)
	kept := e.createSecret(t, owner, a.ID)
	b := e.createAccount(t, owner, "other", "admin")
	asA, asB := e.serviceIdentity(t, a.ID, owner.TenantID), e.serviceIdentity(t, b.ID, owner.TenantID)

	minted := []mintedKey{e.mintKey(t, asA, "persist-1"), e.mintKey(t, asA, "persist-2")}
	if minted[0].UserID != a.ID {
		t.Fatalf("a key minted by the account acts as %q, want the account", minted[0].UserID)
	}
	others := []mintedKey{e.mintKey(t, asB, "other account's"), e.mintKey(t, owner, "the owner's")}
	// One of the account's keys already revoked by hand: revoked once only.
	gone := e.mintKey(t, asA, "revoked-before")
	if r := e.Send(t, owner, http.MethodDelete, "/api/v1/api-keys/"+gone.ID, nil); r.Status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	for _, k := range append(slices.Clone(minted), others...) {
		e.wantKey(t, k, http.StatusOK, "")
	}

	if r := e.Send(t, owner, http.MethodDelete, "/api/v1/service-accounts/"+a.ID+"/secrets/"+leaked.ID, nil); r.Status != http.StatusNoContent {
		t.Fatalf("delete secret: %d %s", r.Status, r.Body)
	}
	for _, k := range minted {
		e.wantKey(t, k, http.StatusGone, "api_key_revoked")
		if n := e.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = $2`,
			invalidation.APIKeySubject(k.PublicID), invalidation.ReasonAPIKeyRevoked); n != 1 {
			t.Errorf("key %s: %d invalidations, want 1", k.PublicID, n)
		}
		if n := e.count(t, `SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND action = 'api_key.revoked' AND target_id = $2
AND actor_user_id = $3 AND data->>'via' = $4 AND data->>'public_id' = $5`,
			owner.TenantID, k.ID, owner.UserID, serviceaccounts.ActionSecretDeleted, k.PublicID); n != 1 {
			t.Errorf("key %s: %d revocation audit events naming the secret's deletion, want 1", k.PublicID, n)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM outbox WHERE subject = $1`, invalidation.APIKeySubject(gone.PublicID)); n != 1 {
		t.Errorf("the key revoked before: %d invalidations, want 1 (its own)", n)
	}
	for _, k := range others {
		e.wantKey(t, k, http.StatusOK, "")
		if n := e.count(t, `SELECT count(*) FROM outbox WHERE subject = $1`, invalidation.APIKeySubject(k.PublicID)); n != 0 {
			t.Errorf("an unrelated key %s was announced revoked", k.PublicID)
		}
	}
	var list struct{ Data []mintedKey }
	e.Get(t, owner, "/api/v1/api-keys").JSON(t, &list)
	if len(list.Data) != len(others) {
		t.Fatalf("live keys after the deletion: %+v", list.Data)
	}

	// The other secret still works, and keys minted afterwards live.
	e.clientToken(t, kept, "")
	e.wantKey(t, e.mintKey(t, asA, "after the rotation"), http.StatusOK, "")
	// A secret that is not the account's deletes and revokes nothing.
	if r := e.Send(t, owner, http.MethodDelete, "/api/v1/service-accounts/"+b.ID+"/secrets/"+kept.ID, nil); r.Status != http.StatusNotFound {
		t.Fatalf("delete another account's secret: %d %s", r.Status, r.Body)
	}
	e.wantKey(t, others[0], http.StatusOK, "")
}

// Deleting a service account revokes its API keys the same way, audited
// and announced, before its user row (and with it the key rows) goes.
func TestAccountDeletionRevokesItsAPIKeys(t *testing.T) {
	e := start(t, startOpts{keyRoutes: true})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "ci", "admin")
	k := e.mintKey(t, e.serviceIdentity(t, a.ID, owner.TenantID), "persist")
	mine := e.mintKey(t, owner, "the owner's")
	if r := e.Send(t, owner, http.MethodDelete, "/api/v1/service-accounts/"+a.ID, nil); r.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	e.wantKey(t, k, http.StatusNotFound, "api_key_unknown")
	e.wantKey(t, mine, http.StatusOK, "")
	for _, subject := range []string{invalidation.APIKeySubject(k.PublicID), invalidation.UserSubject(a.ID)} {
		if n := e.count(t, `SELECT count(*) FROM outbox WHERE subject = $1`, subject); n != 1 {
			t.Errorf("%s: %d outbox rows, want 1", subject, n)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND action = 'api_key.revoked' AND target_id = $2
AND actor_user_id = $3 AND data->>'via' = $4`, owner.TenantID, k.ID, owner.UserID, serviceaccounts.ActionDeleted); n != 1 {
		t.Errorf("%d revocation audit events naming the account's deletion, want 1", n)
	}
}

// What a service account did stays attributed to it after its deletion:
// deleting a compromised account is how its leak is answered, and the
// audit trail must then still tell which keys it minted, which keys it
// revoked and which members it changed. The audit rows' actor used to be
// a foreign key set to NULL with the account's user row.
func TestAccountDeletionKeepsItsAuditTrail(t *testing.T) {
	e := start(t, startOpts{keyRoutes: true})
	_, owner := e.owner(t, "owner@example.com")
	member := e.SeedUserIn(t, owner.TenantID, "member@example.com", "member")
	a := e.createAccount(t, owner, "ci", "admin")
	asA := e.serviceIdentity(t, a.ID, owner.TenantID)
	k := e.mintKey(t, asA, "persist")
	if r := e.Send(t, asA, http.MethodDelete, "/api/v1/api-keys/"+k.ID, nil); r.Status != http.StatusNoContent {
		t.Fatalf("revoke as the account: %d %s", r.Status, r.Body)
	}
	if r := e.Send(t, asA, http.MethodPatch, "/api/v1/users/"+member.UserID, map[string]string{"membership_status": "disabled"}); r.Status != http.StatusOK {
		t.Fatalf("disable a member as the account: %d %s", r.Status, r.Body)
	}
	const q = `SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND actor_user_id = $2`
	done := e.count(t, q, owner.TenantID, a.ID)
	if done < 3 {
		t.Fatalf("%d audit events name the account as actor before its deletion, want at least 3", done)
	}
	if r := e.Send(t, owner, http.MethodDelete, "/api/v1/service-accounts/"+a.ID, nil); r.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	if n := e.count(t, q, owner.TenantID, a.ID); n != done {
		t.Fatalf("%d audit events name the account as actor after its deletion, want the %d before", n, done)
	}
	var page struct {
		Data []struct {
			ActorUserID *string `json:"actor_user_id"`
			Action      string  `json:"action"`
			TargetID    string  `json:"target_id"`
		} `json:"data"`
	}
	r := e.Get(t, owner, "/api/v1/audit-events?limit=200")
	if r.Status != http.StatusOK {
		t.Fatalf("audit events: %d %s", r.Status, r.Body)
	}
	r.JSON(t, &page)
	seen := map[string]bool{}
	for _, ev := range page.Data {
		if ev.ActorUserID != nil && *ev.ActorUserID == a.ID {
			seen[ev.Action+" "+ev.TargetID] = true
		}
	}
	for _, want := range []string{"api_key.created " + k.ID, "api_key.revoked " + k.ID, "member.updated " + member.UserID} {
		if !seen[want] {
			t.Errorf("after the deletion, GET /audit-events shows no %q by the account: %s", want, r.Body)
		}
	}
}

// An account's deletion and another admin change that touches the same
// membership, at once: both answer, neither with a 500. The deletion
// removed the account's row (and with it its membership and grants) after
// revoking its API keys, without the tenant's lock that member changes and
// role deletions take first; a removal of the same member (which revokes
// the keys after locking the membership) or a deletion of one of its
// roles (which refreshes the membership after dropping its grants) then
// waited for it while it waited for them, until PostgreSQL failed one. A
// test transaction holds a row so that the requests meet in that order.
func TestAccountDeletionRacingOtherChanges(t *testing.T) {
	for _, tc := range []struct {
		name string
		// hold locks, in the test's transaction, the row the first request
		// must wait for.
		hold func(a account, ops string) (string, []any)
		// other is the concurrent change, and its acceptable statuses.
		other  func(a account, ops string) string // a DELETE path
		status []int
		// accountFirst sends the account's deletion first.
		accountFirst bool
	}{
		{
			name: "removal of its membership",
			hold: func(a account, _ string) (string, []any) {
				return `SELECT 1 FROM users WHERE id = $1 FOR KEY SHARE`, []any{a.ID}
			},
			other:        func(a account, _ string) string { return "/api/v1/users/" + a.ID },
			status:       []int{http.StatusNoContent, http.StatusNotFound},
			accountFirst: true,
		},
		{
			name: "deletion of one of its roles",
			hold: func(a account, ops string) (string, []any) {
				return `SELECT 1 FROM membership_roles WHERE user_id = $1 AND role_id = $2 FOR UPDATE`, []any{a.ID, ops}
			},
			other:  func(_ account, ops string) string { return "/api/v1/roles/" + ops },
			status: []int{http.StatusNoContent},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, startOpts{})
			ctx := t.Context()
			_, owner := e.owner(t, "owner@example.com")
			r := e.Send(t, owner, http.MethodPost, "/api/v1/roles", map[string]any{"name": "ops", "permissions": []string{"audit:read"}})
			if r.Status != http.StatusCreated {
				t.Fatalf("create role: %d %s", r.Status, r.Body)
			}
			var ops struct{ ID string }
			r.JSON(t, &ops)
			a := e.createAccount(t, owner, "ci", "member", "ops")

			hold, err := e.DB.Pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer hold.Rollback(context.Background())
			q, args := tc.hold(a, ops.ID)
			if _, err := hold.Exec(ctx, q, args...); err != nil {
				t.Fatal(err)
			}
			deleted, other := make(chan apitest.Response, 1), make(chan apitest.Response, 1)
			sends := []func(){
				func() { deleted <- e.Send(t, owner, http.MethodDelete, "/api/v1/service-accounts/"+a.ID, nil) },
				func() { other <- e.Send(t, owner, http.MethodDelete, tc.other(a, ops.ID), nil) },
			}
			if !tc.accountFirst {
				slices.Reverse(sends)
			}
			go sends[0]()
			e.DB.WaitForLockWaiters(t, 1) // the first request waits on the held row
			go sends[1]()
			e.DB.WaitForLockWaiters(t, 2)
			if err := hold.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if r := <-deleted; r.Status != http.StatusNoContent {
				t.Errorf("account deletion: %d, want 204; body %s", r.Status, r.Body)
			}
			if r := <-other; !slices.Contains(tc.status, r.Status) {
				t.Errorf("%s: %d, want one of %v; body %s", tc.name, r.Status, tc.status, r.Body)
			}
		})
	}
}

// An API key revoked at the revocation endpoint (RFC 7009) is audited
// with the service account that revoked it as actor and the request's id,
// as a refresh token revoked there is: the audit log tells who ended it.
func TestRevokedAPIKeyAuditsTheClient(t *testing.T) {
	e := start(t, startOpts{keyRoutes: true})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "revoker")
	s := e.createSecret(t, owner, a.ID)
	k := e.mintKey(t, owner, "to revoke")

	r := e.form(t, "/api/v1/auth/revoke", url.Values{"token": {k.Secret}}, basic(s.ClientID, s.ClientSecret))
	if r.Status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	e.wantKey(t, k, http.StatusGone, "api_key_revoked")
	var actor, requestID *string
	if err := e.DB.Pool.QueryRow(context.Background(), `SELECT actor_user_id::text, request_id FROM audit_events
WHERE tenant_id = $1 AND action = 'api_key.revoked' AND target_id = $2 AND data->>'via' = 'oauth_revoke'`,
		owner.TenantID, k.ID).Scan(&actor, &requestID); err != nil {
		t.Fatalf("the revocation's audit event: %v", err)
	}
	if actor == nil || *actor != a.ID {
		t.Errorf("actor %v, want the revoking service account %s", actor, a.ID)
	}
	if requestID == nil || *requestID != r.Header.Get("X-Request-Id") {
		t.Errorf("request id %v, want the revocation's %q", requestID, r.Header.Get("X-Request-Id"))
	}
}

// TestServiceAccountLimit: a tenant's service accounts were unbounded
// while its list shows the oldest MaxAccounts, so accounts past it were
// never listed (nor found to delete). Now creation stops at MaxAccounts:
// 409 conflict, nothing written; another tenant is not held back.
func TestServiceAccountLimit(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	_, other := e.owner(t, "other@example.com")
	if _, err := e.DB.Pool.Exec(context.Background(), `
WITH u AS (
  INSERT INTO users (email, display_name, kind)
  SELECT 'bulk-' || i || '@`+serviceaccounts.EmailDomain+`', 'bulk', 'service' FROM generate_series(1, $2) i
  RETURNING id)
INSERT INTO service_accounts (user_id, tenant_id, name) SELECT id, $1, 'bulk' FROM u`, owner.TenantID, serviceaccounts.MaxAccounts-1); err != nil {
		t.Fatal(err)
	}
	create := func(as *identity.Identity) apitest.Response {
		return e.Send(t, as, http.MethodPost, "/api/v1/service-accounts", map[string]any{"name": "ci"})
	}
	if r := create(owner); r.Status != http.StatusCreated {
		t.Fatalf("the last account: %d %s", r.Status, r.Body)
	}
	if r := create(owner); r.Status != http.StatusConflict || r.Problem(t).Code != problem.CodeConflict {
		t.Fatalf("one too many: %d %s", r.Status, r.Body)
	}
	if n := e.count(t, `SELECT count(*) FROM service_accounts WHERE tenant_id = $1`, owner.TenantID); n != serviceaccounts.MaxAccounts {
		t.Fatalf("%d service accounts, want %d", n, serviceaccounts.MaxAccounts)
	}
	if n := e.count(t, `SELECT count(*) FROM users WHERE kind = 'service'`); n != serviceaccounts.MaxAccounts {
		t.Fatalf("%d service users after the refusal, want %d", n, serviceaccounts.MaxAccounts)
	}
	if got := e.listAccounts(t, owner, 200); len(got) != serviceaccounts.MaxAccounts {
		t.Fatalf("the list holds %d accounts, want all %d", len(got), serviceaccounts.MaxAccounts)
	}
	if r := create(other); r.Status != http.StatusCreated {
		t.Fatalf("another tenant: %d %s", r.Status, r.Body)
	}
}

// listAccounts pages through the tenant's service accounts, limit a page,
// and returns their ids in the order listed (each once: a repeat fails).
func (e *env) listAccounts(t testing.TB, as *identity.Identity, limit int) []string {
	t.Helper()
	var ids []string
	seen := map[string]bool{}
	next := "/api/v1/service-accounts?limit=" + strconv.Itoa(limit)
	for {
		r := e.Get(t, as, next)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", next, r.Status, r.Body)
		}
		var p struct {
			Data       []account `json:"data"`
			NextCursor *string   `json:"next_cursor"`
		}
		r.JSON(t, &p)
		if len(p.Data) > limit {
			t.Fatalf("GET %s: %d accounts, more than the limit", next, len(p.Data))
		}
		for _, a := range p.Data {
			if seen[a.ID] {
				t.Fatalf("GET %s: %s listed twice", next, a.ID)
			}
			seen[a.ID] = true
			ids = append(ids, a.ID)
		}
		if p.NextCursor == nil {
			return ids
		}
		next = "/api/v1/service-accounts?limit=" + strconv.Itoa(limit) + "&cursor=" + url.QueryEscape(*p.NextCursor)
	}
}

// TestServiceAccountListPages: the list pages as every list does (limit,
// cursor, next_cursor; oldest first, ties by id), refuses include_total=true
// and a bad or repeated page parameter (400 invalid_query), and a cursor
// of another tenant or a forged one (400 invalid_cursor).
func TestServiceAccountListPages(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	_, other := e.owner(t, "other@example.com")
	var made []string
	for range 5 {
		made = append(made, e.createAccount(t, owner, "ci").ID)
	}
	e.createAccount(t, other, "theirs")
	// Three accounts made in the same microsecond: their order is the id's.
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE service_accounts SET created_at = '2026-01-01T00:00:00Z' WHERE user_id = ANY($1::uuid[])`,
		[]string{made[0], made[2], made[4]}); err != nil {
		t.Fatal(err)
	}
	rows, err := e.DB.Pool.Query(context.Background(), `SELECT user_id::text FROM service_accounts WHERE tenant_id = $1 ORDER BY created_at, user_id`, owner.TenantID)
	if err != nil {
		t.Fatal(err)
	}
	want, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{1, 2, 5, 50} {
		if got := e.listAccounts(t, owner, limit); !slices.Equal(got, want) {
			t.Errorf("limit %d: pages list %v, want %v", limit, got, want)
		}
	}
	r := e.Get(t, owner, "/api/v1/service-accounts?limit=2")
	var p struct {
		NextCursor *string `json:"next_cursor"`
	}
	r.JSON(t, &p)
	if p.NextCursor == nil {
		t.Fatalf("first of several pages: %s", r.Body)
	}
	cur := url.QueryEscape(*p.NextCursor)
	wantCode := func(as *identity.Identity, q string, code string) {
		t.Helper()
		r := e.Get(t, as, "/api/v1/service-accounts?"+q)
		if r.Status != http.StatusBadRequest || r.Problem(t).Code != code {
			t.Errorf("?%s: %d %s, want 400 %s", q, r.Status, r.Body, code)
		}
	}
	wantCode(other, "cursor="+cur, problem.CodeInvalidCursor)
	wantCode(owner, "cursor=forged", problem.CodeInvalidCursor)
	for _, q := range []string{"limit=0", "limit=201", "limit=x", "include_total=maybe", "include_total=true", "include_total=1",
		"limit=1&limit=2", "cursor=" + cur + "&cursor=" + cur, "include_total=false&include_total=false"} {
		wantCode(owner, q, problem.CodeInvalidQuery)
	}
	if r := e.Get(t, owner, "/api/v1/service-accounts?include_total=false"); r.Status != http.StatusOK {
		t.Errorf("include_total=false: %d %s", r.Status, r.Body)
	}
}

// TestCreateRacingRoleEscalation: a service account created with a role
// while an owner's change adds to that role a permission the creating
// admin does not hold. The creation checked the role's permissions
// unlocked, then waited on the role's row for its foreign key until the
// change committed, and made an account with tenant:write. The role is
// now locked as it is checked: the creation waits for the change and is
// refused.
func TestCreateRacingRoleEscalation(t *testing.T) {
	e := start(t, startOpts{})
	ctx := t.Context()
	_, owner := e.owner(t, "owner@example.com")
	admin := e.SeedUserIn(t, owner.TenantID, "admin@example.com", "admin")
	r := e.Send(t, owner, http.MethodPost, "/api/v1/roles", map[string]any{"name": "ops", "permissions": []string{"audit:read"}})
	if r.Status != http.StatusCreated {
		t.Fatalf("create role: %d %s", r.Status, r.Body)
	}
	var ops struct{ ID string }
	r.JSON(t, &ops)
	// The owner's PATCH in flight: the role locked and changed, not yet
	// committed.
	hold, err := e.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(context.Background())
	if _, err := hold.Exec(ctx, `SELECT 1 FROM roles WHERE id = $1 FOR UPDATE`, ops.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := hold.Exec(ctx, `UPDATE roles SET permissions = '{audit:read,tenant:write}' WHERE id = $1`, ops.ID); err != nil {
		t.Fatal(err)
	}
	done := make(chan apitest.Response, 1)
	go func() {
		done <- e.Send(t, &admin, http.MethodPost, "/api/v1/service-accounts", map[string]any{"name": "ci", "roles": []string{"ops"}})
	}()
	e.DB.WaitForLockWaiters(t, 1)
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.Status != http.StatusForbidden {
		t.Errorf("creation with a role that now carries tenant:write: %d %s, want 403", r.Status, r.Body)
	}
	if n := e.count(t, `SELECT count(*) FROM users WHERE kind = 'service'`); n != 0 {
		t.Errorf("%d service accounts made", n)
	}
}
