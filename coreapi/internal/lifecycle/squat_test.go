package lifecycle_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// planted is what someone holding an account's password left behind in
// it: API keys (one of the account's own in its tenant, one minted by a
// service account it created), that service account's client secret, a
// TOTP factor with its recovery codes, and a pending invitation sent by
// the account (API keys and service accounts cannot invite).
type planted struct {
	ownKey, personalKey, saKey string
	saID, saSecretID           string
	clientID, clientSecret     string
	totpSecret                 string
	recovery                   []string
}

// plant makes a, signed up a moment ago, leave everything planted holds.
func (x *env) plant(t *testing.T, a account) planted {
	t.Helper()
	var p planted
	key := func(as *identity.Identity, path string, perms []string) string {
		t.Helper()
		r := x.Send(t, as, http.MethodPost, path, map[string]any{"name": "k", "permissions": perms})
		wantStatus(t, r, http.StatusCreated)
		var k struct {
			Secret string `json:"secret"`
		}
		r.JSON(t, &k)
		return k.Secret
	}
	p.ownKey = key(&a.id, "/api/v1/api-keys", []string{"users:read"})
	p.personalKey = key(&a.id, "/api/v1/users/me/api-keys", []string{})

	p.saID = x.createServiceAccount(t, &a.id, "bot", "admin")
	r := x.Send(t, &a.id, http.MethodPost, "/api/v1/service-accounts/"+p.saID+"/secrets", nil)
	wantStatus(t, r, http.StatusCreated)
	var sec struct {
		ID           string `json:"id"`
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	r.JSON(t, &sec)
	p.saSecretID, p.clientID, p.clientSecret = sec.ID, sec.ClientID, sec.ClientSecret
	wantStatus(t, x.clientCredentials(t, p), http.StatusOK)
	saID := x.IdentityOf(t, p.saID, a.c.Tid)
	saID.Principal = identity.PrincipalService
	p.saKey = key(&saID, "/api/v1/api-keys", []string{"users:read"})

	wantStatus(t, x.Send(t, &a.id, http.MethodPost, "/api/v1/invitations",
		map[string]any{"email": "other-of-" + a.email, "roles": []string{"admin"}}), http.StatusCreated)

	r = x.Send(t, &a.id, http.MethodPost, "/api/v1/users/me/mfa/totp", nil)
	wantStatus(t, r, http.StatusCreated)
	var en struct {
		Secret string `json:"secret"`
	}
	r.JSON(t, &en)
	p.totpSecret = en.Secret
	code, err := mfa.Code(en.Secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r = x.Send(t, &a.id, http.MethodPost, "/api/v1/users/me/mfa/totp/confirm", map[string]string{"code": code})
	wantStatus(t, r, http.StatusOK)
	var rc struct {
		RecoveryCodes []string `json:"recovery_codes"`
	}
	r.JSON(t, &rc)
	p.recovery = rc.RecoveryCodes
	return p
}

// clientCredentials asks for a token with the planted client secret.
func (x *env) clientCredentials(t *testing.T, p planted) apitest.Response {
	t.Helper()
	return x.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token",
		Body:        url.Values{"grant_type": {"client_credentials"}, "client_id": {p.clientID}, "client_secret": {p.clientSecret}}.Encode(),
		ContentType: "application/x-www-form-urlencoded"})
}

// resolveKey is the proxy's look-up of a presented API key.
func (x *env) resolveKey(t *testing.T, key string) int {
	t.Helper()
	return x.Do(t, apitest.Request{Method: http.MethodPost, Path: apikey.ResolvePath, Body: apikey.ResolveRequest{Key: key}, Service: true}).Status
}

// createServiceAccount creates a service account named name with roles,
// as the caller as, and returns its id.
func (x *env) createServiceAccount(t *testing.T, as *identity.Identity, name string, roles ...string) string {
	t.Helper()
	r := x.Send(t, as, http.MethodPost, "/api/v1/service-accounts", map[string]any{"name": name, "roles": roles})
	wantStatus(t, r, http.StatusCreated)
	var sa struct {
		ID string `json:"id"`
	}
	r.JSON(t, &sa)
	return sa.ID
}

// resetByMail is the mailbox owner's forgotten-password round.
func (x *env) resetByMail(t *testing.T, email, newPassword string) {
	t.Helper()
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": email}), http.StatusAccepted)
	tok := x.mail(t, email, "Reset").Token()
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": tok, "new_password": newPassword}), http.StatusNoContent)
}

// TestResetOfAnUnprovenAddressEndsWhatItsHolderLeft: someone signs up with
// another person's address and a password of their choosing, and plants
// in the account what outlives a password: API keys, a service account's
// client secret, a second factor (which would lock the owner out) and
// pending invitations to addresses of their own. The owner, refused at
// sign-up (email_taken), resets the password from the mailbox: the reset
// proves an address the account never had proven, and ends all of it in
// its transaction, announced to the proxies and audited in the tenant.
func TestResetOfAnUnprovenAddressEndsWhatItsHolderLeft(t *testing.T) {
	t.Parallel()
	x := startWide(t)
	a := x.signup(t, "owner@example.com")
	p := x.plant(t, a)
	for _, k := range []string{p.ownKey, p.personalKey, p.saKey} {
		if st := x.resolveKey(t, k); st != http.StatusOK {
			t.Fatalf("a planted key resolves %d before the reset, want 200", st)
		}
	}

	r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/signup",
		map[string]string{"email": "owner@example.com", "password": "the owner's password", "tenant_name": "Mine"})
	wantStatus(t, r, http.StatusConflict)
	x.resetByMail(t, "owner@example.com", "the owner's password")

	for name, k := range map[string]string{"the account's tenant key": p.ownKey, "its personal key": p.personalKey,
		"the key its service account minted": p.saKey} {
		if st := x.resolveKey(t, k); st != http.StatusGone {
			t.Errorf("%s resolves %d after the reset, want 410 (revoked)", name, st)
		}
	}
	if r := x.clientCredentials(t, p); r.Status == http.StatusOK {
		t.Error("the service account's client secret still obtains tokens after the reset")
	}
	if n := x.count(t, `SELECT count(*) FROM service_account_secrets WHERE user_id = $1`, p.saID); n != 0 {
		t.Errorf("%d client secrets of the service account left", n)
	}
	for _, q := range []string{`SELECT count(*) FROM mfa_totp WHERE user_id = $1`, `SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1`} {
		if n := x.count(t, q, a.c.Sub); n != 0 {
			t.Errorf("%s: %d after the reset, want 0", q, n)
		}
	}
	// The owner signs in with the new password alone: no factor of
	// someone else's stands in the way.
	wantStatus(t, x.token(t, "owner@example.com", "the owner's password"), http.StatusOK)
	if n := x.count(t, `SELECT count(*) FROM invitations WHERE invited_by = $1 AND status = 'pending'`, a.c.Sub); n != 0 {
		t.Errorf("%d invitations sent by the account still pending", n)
	}

	// Proxies hear of each key, of the service account and of the factor.
	for _, k := range []string{p.ownKey, p.personalKey, p.saKey} {
		pid, _ := apikey.Parse([]byte(k))
		if n := x.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = $2`,
			invalidation.APIKeySubject(string(pid)), invalidation.ReasonAPIKeyRevoked); n != 1 {
			t.Errorf("%d invalidations of key %s, want 1", n, pid)
		}
	}
	for _, sub := range []struct{ user, reason string }{
		{p.saID, "service_account.secret_deleted"},
		{a.c.Sub, invalidation.ReasonUserMFAReset},
	} {
		if n := x.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = $2`,
			invalidation.UserSubject(sub.user), sub.reason); n != 1 {
			t.Errorf("%d invalidations %s of %s, want 1", n, sub.reason, sub.user)
		}
	}

	// The account's tenant is told what went.
	var data []byte
	if err := x.DB.Pool.QueryRow(context.Background(), `SELECT data FROM audit_events
		WHERE tenant_id = $1 AND action = 'user.unverified_access_cleared' AND target_id = $2`, a.c.Tid, a.c.Sub).Scan(&data); err != nil {
		t.Fatalf("audit of what the reset cleared: %v", err)
	}
	var got struct {
		APIKeys         int      `json:"api_keys_revoked"`
		ServiceKeys     int      `json:"service_account_api_keys_revoked"`
		ServiceAccounts []string `json:"service_accounts"`
		Secrets         int      `json:"client_secrets_deleted"`
		Factor          bool     `json:"second_factor_removed"`
		Invitations     int      `json:"invitations_revoked"`
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if got.APIKeys != 2 || got.ServiceKeys != 1 || len(got.ServiceAccounts) != 1 || got.ServiceAccounts[0] != p.saID || got.Secrets != 1 || !got.Factor || got.Invitations != 1 {
		t.Errorf("audit data %s: want 2 keys of its own, the service account %s with 1 secret and 1 key, the factor, 1 invitation", data, p.saID)
	}
	for _, q := range []string{
		`SELECT count(*) FROM audit_events WHERE action = 'api_key.revoked' AND data->>'via' = 'user.password_reset'`,
		`SELECT count(*) FROM audit_events WHERE action = 'service_account.secret_deleted' AND data->>'via' = 'user.password_reset'`,
		`SELECT count(*) FROM audit_events WHERE action = 'invitation.revoked' AND data->>'via' = 'user.password_reset'`,
	} {
		if n := x.count(t, q); n == 0 {
			t.Errorf("%s: none", q)
		}
	}
	// The service account itself stays, for the owner to keep or delete.
	if n := x.count(t, `SELECT count(*) FROM service_accounts WHERE user_id = $1`, p.saID); n != 1 {
		t.Errorf("%d service accounts, want the one created (without secrets)", n)
	}
}

// TestResetRefusesCreationsOnTheSessionItEnded: the proxies hear of a
// reset's end of the account's sessions a moment after it commits, and
// let through meanwhile what the earlier holder of the password sends
// with their session. A new API key, client secret of a service account
// it created, invitation, or member with a password of their choosing
// sent so is refused (401 invalid_token) and
// leaves nothing live: made after the reset, it would outlive what the
// reset cleared. The owner, signed in again, still makes them.
func TestResetRefusesCreationsOnTheSessionItEnded(t *testing.T) {
	t.Parallel()
	x := startWide(t)
	a := x.signup(t, "ended@example.com")
	saID := x.createServiceAccount(t, &a.id, "bot", "member")
	x.resetByMail(t, "ended@example.com", "the owner's password")

	creations := []struct {
		name, path string
		body       any
	}{
		{"a tenant API key", "/api/v1/api-keys", map[string]any{"name": "k", "permissions": []string{"users:read"}}},
		{"a personal API key", "/api/v1/users/me/api-keys", map[string]any{"name": "k", "permissions": []string{}}},
		{"a client secret", "/api/v1/service-accounts/" + saID + "/secrets", nil},
		{"an invitation", "/api/v1/invitations", map[string]any{"email": "mine@example.net", "roles": []string{"admin"}}},
		{"a member with a password of the caller's choosing", "/api/v1/users",
			map[string]any{"email": "planted@example.net", "password": "a long password", "roles": []string{"admin"}}},
	}
	for _, c := range creations {
		r := x.Send(t, &a.id, http.MethodPost, c.path, c.body) // the ended session, still signed for
		if r.Status != http.StatusUnauthorized || r.Problem(t).Code != "invalid_token" {
			t.Errorf("%s with the ended session: %d %s, want 401 invalid_token", c.name, r.Status, r.Body)
		} else if h := r.Header.Get("WWW-Authenticate"); h != `Bearer error="invalid_token", error_description="the session has ended"` {
			t.Errorf("%s: WWW-Authenticate %q", c.name, h)
		}
	}
	for _, q := range []string{
		`SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL`,
		`SELECT count(*) FROM service_account_secrets s JOIN service_accounts sa ON sa.user_id = s.user_id WHERE sa.created_by = $1`,
		`SELECT count(*) FROM invitations WHERE invited_by = $1 AND status = 'pending'`,
		`SELECT count(*) FROM users WHERE lower(email) = 'planted@example.net' AND $1::uuid IS NOT NULL`,
	} {
		if n := x.count(t, q, a.c.Sub); n != 0 {
			t.Errorf("%s: %d after the reset, want 0", q, n)
		}
	}

	// The owner's own session makes them.
	r := x.token(t, "ended@example.com", "the owner's password")
	wantStatus(t, r, http.StatusOK)
	var tok tokens
	r.JSON(t, &tok)
	owner := x.identity(t, claimsOf(t, tok.AccessToken))
	for _, c := range creations {
		if r := x.Send(t, &owner, http.MethodPost, c.path, c.body); r.Status != http.StatusCreated {
			t.Errorf("%s by the owner: %d %s, want 201", c.name, r.Status, r.Body)
		}
	}
}

// TestResetOfAProvenAddressKeepsWhatTheOwnerMade: the owner of a verified
// address who forgets the password keeps their keys, service-account
// secrets, second factor and invitations through the reset (the mailbox
// alone must not remove the second factor, which guards against its
// loss).
func TestResetOfAProvenAddressKeepsWhatTheOwnerMade(t *testing.T) {
	t.Parallel()
	x := startWide(t)
	a := x.signup(t, "kept@example.com")
	verify := x.mail(t, "kept@example.com", "Confirm").Token()
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": verify, "password": pw}), http.StatusOK)
	a.id = x.identity(t, a.c)
	p := x.plant(t, a)
	x.resetByMail(t, "kept@example.com", "the owner's new password")

	for _, k := range []string{p.ownKey, p.personalKey, p.saKey} {
		if st := x.resolveKey(t, k); st != http.StatusOK {
			t.Errorf("a key of the owner's resolves %d after the reset, want 200", st)
		}
	}
	wantStatus(t, x.clientCredentials(t, p), http.StatusOK)
	r := x.token(t, "kept@example.com", "the owner's new password")
	if r.Status != http.StatusUnauthorized || r.Problem(t).Code != "mfa_required" {
		t.Errorf("sign-in after the reset: %d %s, want 401 mfa_required (the factor kept)", r.Status, r.Body)
	}
	if n := x.count(t, `SELECT count(*) FROM invitations WHERE invited_by = $1 AND status = 'pending'`, a.c.Sub); n != 1 {
		t.Errorf("%d invitations pending after the reset, want 1", n)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.unverified_access_cleared'`); n != 0 {
		t.Errorf("%d audits of cleared access after the reset of a verified account", n)
	}
}

// TestUnprovenResetRacingKeyCreation: a key being created in the
// account's tenant while the owner resets the password. The creation
// takes the tenant's lock and the tenant's key lock, then its insert
// waits for the account's row; the reset held that row and then waited
// for the key lock to revoke the account's keys: PostgreSQL ended one of
// them as a deadlock. The reset now takes the tenants' locks before the
// account's row: it waits for the creation, and revokes its key too.
func TestUnprovenResetRacingKeyCreation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	x := startWide(t)
	a := x.signup(t, "race@example.com")
	r := x.Send(t, &a.id, http.MethodPost, "/api/v1/users/me/api-keys", map[string]any{"name": "k", "permissions": []string{}})
	wantStatus(t, r, http.StatusCreated)
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": a.email}), http.StatusAccepted)
	tok := x.mail(t, a.email, "Reset").Token()

	create, err := x.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = create.Rollback(ctx) }()
	// As apikeys.Store.Create: the tenant's lock, then its key lock.
	for _, q := range []string{`SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE`,
		`SELECT pg_advisory_xact_lock(hashtextextended('api_keys:' || $1, 0))`} {
		if _, err := create.Exec(ctx, q, a.c.Tid); err != nil {
			t.Fatal(err)
		}
	}
	var (
		wg    sync.WaitGroup
		reset apitest.Response
	)
	wg.Go(func() {
		reset = x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
			map[string]string{"token": tok, "new_password": "the owner's password"})
	})
	x.DB.WaitForLockWaiters(t, 1) // the reset, at a lock the creation holds
	var keyID string
	if err := create.QueryRow(ctx, `INSERT INTO api_keys (public_id, tenant_id, user_id, kind, name, secret_hash)
		VALUES ('racingkey0000000', $1, $2, 'personal', 'racing', $3) RETURNING id::text`,
		a.c.Tid, a.c.Sub, make([]byte, 32)).Scan(&keyID); err != nil {
		t.Fatalf("the creation's insert: %v", err)
	}
	if err := create.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	wantStatus(t, reset, http.StatusNoContent)
	if n := x.count(t, `SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL`, a.c.Sub); n != 0 {
		t.Errorf("%d keys of the account live after the reset (the racing one: %s)", n, keyID)
	}
}

// TestUnprovenResetAuditedPerTenant: the account whose reset clears what
// its earlier holder left belongs to a second tenant, where nothing was
// planted. Each tenant's user.unverified_access_cleared says what went in
// that tenant (and the account's own second factor): the second tenant's
// admins are not told the ids of the first tenant's service accounts, nor
// how many keys and invitations went there.
func TestUnprovenResetAuditedPerTenant(t *testing.T) {
	t.Parallel()
	x := startWide(t)
	a := x.signup(t, "owner@example.com")
	p := x.plant(t, a)
	other := x.SeedTenant(t, "Other").ID
	x.SeedMember(t, other, a.c.Sub, "member")

	x.resetByMail(t, "owner@example.com", "the owner's password")

	type clearedData struct {
		APIKeys         int      `json:"api_keys_revoked"`
		ServiceKeys     int      `json:"service_account_api_keys_revoked"`
		ServiceAccounts []string `json:"service_accounts"`
		Secrets         int      `json:"client_secrets_deleted"`
		Factor          bool     `json:"second_factor_removed"`
		RecoveryCodes   int      `json:"recovery_codes_deleted"`
		Invitations     int      `json:"invitations_revoked"`
	}
	read := func(tenantID string) (clearedData, []byte) {
		t.Helper()
		var data []byte
		if err := x.DB.Pool.QueryRow(context.Background(), `SELECT data FROM audit_events
			WHERE tenant_id = $1 AND action = 'user.unverified_access_cleared' AND target_id = $2`, tenantID, a.c.Sub).Scan(&data); err != nil {
			t.Fatalf("audit of what the reset cleared in %s: %v", tenantID, err)
		}
		var got clearedData
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatal(err)
		}
		return got, data
	}
	if got, data := read(a.c.Tid); got.APIKeys != 2 || got.ServiceKeys != 1 || len(got.ServiceAccounts) != 1 ||
		got.ServiceAccounts[0] != p.saID || got.Secrets != 1 || !got.Factor || got.RecoveryCodes != 10 || got.Invitations != 1 {
		t.Errorf("the planted tenant's audit data %s: want 2 keys, the service account %s with 1 secret and 1 key, the factor and its 10 codes, 1 invitation", data, p.saID)
	}
	got, data := read(other)
	if got.APIKeys != 0 || got.ServiceKeys != 0 || len(got.ServiceAccounts) != 0 || got.Secrets != 0 || got.Invitations != 0 {
		t.Errorf("the other tenant's audit data %s tells what went in the planted tenant", data)
	}
	if !got.Factor || got.RecoveryCodes != 10 {
		t.Errorf("the other tenant's audit data %s: want the account's factor and its 10 recovery codes, which guarded it too", data)
	}
}

// TestResetRefusesResendsOnTheSessionItEnded: a resend makes its caller
// the invitation's sender (whom the accept checks) and mails a new link,
// so on the say of a session a password reset ended it would leave an
// invitation sent by the account's earlier holder pending after the reset
// that withdrew all the others they sent. It is refused as a creation is
// (401 invalid_token), and nothing changes.
func TestResetRefusesResendsOnTheSessionItEnded(t *testing.T) {
	t.Parallel()
	x := startWide(t)
	a := x.signup(t, "resend-ended@example.com")
	// Another admin of the tenant sends an invitation: not the account's,
	// so the reset leaves it pending.
	r := x.Send(t, &a.id, http.MethodPost, "/api/v1/users", map[string]any{"email": "colleague@example.net", "roles": []string{"admin"}})
	wantStatus(t, r, http.StatusCreated)
	var b struct {
		ID string `json:"id"`
	}
	r.JSON(t, &b)
	bID := x.IdentityOf(t, b.ID, a.c.Tid)
	r = x.Send(t, &bID, http.MethodPost, "/api/v1/invitations", map[string]any{"email": "invitee@example.net", "roles": []string{"admin"}})
	wantStatus(t, r, http.StatusCreated)
	var inv struct {
		ID string `json:"id"`
	}
	r.JSON(t, &inv)
	x.resetByMail(t, "resend-ended@example.com", "the owner's password")
	mails := x.mailsTo("invitee@example.net")

	r = x.Send(t, &a.id, http.MethodPost, "/api/v1/invitations/"+inv.ID+"/resend", nil) // the ended session, still signed for
	if r.Status != http.StatusUnauthorized || r.Problem(t).Code != "invalid_token" {
		t.Errorf("a resend with the ended session: %d %s, want 401 invalid_token", r.Status, r.Body)
	} else if h := r.Header.Get("WWW-Authenticate"); h != `Bearer error="invalid_token", error_description="the session has ended"` {
		t.Errorf("WWW-Authenticate %q", h)
	}
	if n := x.count(t, `SELECT count(*) FROM invitations WHERE invited_by = $1 AND status = 'pending'`, a.c.Sub); n != 0 {
		t.Errorf("%d pending invitations sent by the account after the reset, want 0", n)
	}
	x.flush(t)
	if n := x.mailsTo("invitee@example.net"); n != mails {
		t.Errorf("%d invitation mails after the refused resend, want %d", n, mails)
	}
}

// TestResetOfAnUnprovenAddressRemovesItsIdentities: an account whose
// address was never proven may hold a provider identity (a sign-in
// through a provider not authoritative for the address's domain creates
// the account unverified and links its identity). Whoever holds that
// provider account holds a way into the account that outlives any
// password, so the reset by which the mailbox's owner proves the address
// removes it with the rest, counted in the tenant's
// user.unverified_access_cleared event. A reset of a proven address keeps
// the account's identities.
func TestResetOfAnUnprovenAddressRemovesItsIdentities(t *testing.T) {
	t.Parallel()
	x := startWide(t)
	squatted := x.signup(t, "squatted@example.com")
	x.exec(t, `INSERT INTO identities (user_id, provider, issuer, subject, email) VALUES ($1, 'corp', 'https://corp.example', 'squatter', $2)`,
		squatted.c.Sub, squatted.email)
	x.resetByMail(t, squatted.email, "the owner's password")
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, squatted.c.Sub); n != 0 {
		t.Errorf("%d identities of the account left after the reset that proved its address", n)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.unverified_access_cleared' AND target_id = $1
		AND tenant_id = $2 AND (data->>'identities_removed')::int = 1`, squatted.c.Sub, squatted.c.Tid); n != 1 {
		t.Errorf("%d audit events counting the removed identity, want 1", n)
	}

	proven := x.signup(t, "proven@example.com")
	x.exec(t, `UPDATE users SET email_verified_at = now() WHERE id = $1`, proven.c.Sub)
	x.exec(t, `INSERT INTO identities (user_id, provider, issuer, subject, email) VALUES ($1, 'corp', 'https://corp.example', 'owner', $2)`,
		proven.c.Sub, proven.email)
	x.resetByMail(t, proven.email, "the owner's password")
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, proven.c.Sub); n != 1 {
		t.Errorf("%d identities of a proven account after its reset, want its 1", n)
	}
}
