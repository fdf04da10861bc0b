package apikeys_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apikeylive"
	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// keyIdentity is the identity a proxy forwards for a request made with
// key k of the member as: the key's id as X-Auth-Session-Id, its
// permissions (within its creator's).
func keyIdentity(as identity.Identity, k created) *identity.Identity {
	as.Principal, as.SessionID, as.Permissions = identity.PrincipalAPIKey, k.ID, k.Permissions
	return &as
}

// TestNothingDoneWithAnEndedKey: a tenant key revoked, or past its
// expiry, is still accepted by a proxy that has not yet heard (NATS late
// or partitioned, up to MAX_STALENESS), which forwards its requests
// signed. coreapi refuses their writes itself (401 invalid_token with the
// RFC 6750 challenge, nothing written) and leaves their reads to the
// proxies; a live key's same requests go through. A key whose row is
// gone (its creator's account deleted) or that names another user is
// refused the same way.
func TestNothingDoneWithAnEndedKey(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	owner := x.SeedUserIn(t, ten.ID, "owner@acme.test", "owner")
	member := x.SeedUserIn(t, ten.ID, "member@acme.test", "member")
	perms := owner.Permissions // enough to grant admin
	revoked := x.create(t, owner, "/api/v1/api-keys", map[string]any{"name": "revoked", "permissions": perms})
	expired := x.create(t, owner, "/api/v1/api-keys", map[string]any{"name": "expired", "permissions": perms,
		"expires_at": time.Now().Add(time.Hour).UTC()})
	live := x.create(t, owner, "/api/v1/api-keys", map[string]any{"name": "live", "permissions": perms})
	apitest.WantStatus(t, x.Send(t, &owner, http.MethodDelete, "/api/v1/api-keys/"+revoked.ID, nil), http.StatusNoContent)
	x.exec(t, `UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1`, expired.ID)

	grant := "/api/v1/users/" + member.UserID + "/roles/admin"
	admins := func(t *testing.T) int {
		t.Helper()
		return x.count(t, `SELECT count(*) FROM membership_roles mr JOIN roles r ON r.id = mr.role_id
			WHERE mr.user_id = $1 AND r.name = 'admin'`, member.UserID)
	}
	unknown := live
	unknown.ID = member.SessionID // an id of no key
	foreign := *keyIdentity(owner, live)
	foreign.UserID = member.UserID // the live key's id, signed as another user's
	for name, as := range map[string]*identity.Identity{
		"revoked":             keyIdentity(owner, revoked),
		"expired":             keyIdentity(owner, expired),
		"unknown":             keyIdentity(owner, unknown),
		"another user's name": &foreign,
	} {
		t.Run(name, func(t *testing.T) {
			r := x.Send(t, as, http.MethodPut, grant, nil)
			wantProblem(t, r, http.StatusUnauthorized, "invalid_token")
			if r.Header.Get("WWW-Authenticate") == "" {
				t.Error("a 401 to a bearer without a challenge")
			}
			if n := admins(t); n != 0 {
				t.Fatal("an ended key granted a role")
			}
			wantProblem(t, x.Send(t, as, http.MethodPatch, "/api/v1/users/"+member.UserID, map[string]any{"membership_status": "disabled"}),
				http.StatusUnauthorized, "invalid_token")
			if n := x.count(t, `SELECT count(*) FROM memberships WHERE user_id = $1 AND status = 'active'`, member.UserID); n != 1 {
				t.Fatal("an ended key disabled a member")
			}
		})
	}
	// Reads are the proxies' to end: no lookup is added to them.
	apitest.WantStatus(t, x.Get(t, keyIdentity(owner, revoked), "/api/v1/users/"+member.UserID), http.StatusOK)

	apitest.WantStatus(t, x.Send(t, keyIdentity(owner, live), http.MethodPut, grant, nil), http.StatusOK)
	if n := admins(t); n != 1 {
		t.Fatalf("%d admin roles after the live key's grant, want 1", n)
	}
}

// TestGrantChecksTheKeyInItsTransaction: a role's grant, the most a key
// can hand out, checks the key after the tenant's lock, which a
// revocation takes first, so a grant that got past the request's own
// check before the revocation committed grants nothing either.
func TestGrantChecksTheKeyInItsTransaction(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	owner := x.SeedUserIn(t, ten.ID, "owner@acme.test", "owner")
	member := x.SeedUserIn(t, ten.ID, "member@acme.test", "member")
	revoked := x.create(t, owner, "/api/v1/api-keys", map[string]any{"name": "revoked", "permissions": owner.Permissions})
	live := x.create(t, owner, "/api/v1/api-keys", map[string]any{"name": "live", "permissions": owner.Permissions})
	apitest.WantStatus(t, x.Send(t, &owner, http.MethodDelete, "/api/v1/api-keys/"+revoked.ID, nil), http.StatusNoContent)

	s := users.NewStore(x.DB.Pool, nil, nil, users.Limits{})
	grant := func(keyID string) error {
		_, err := s.GrantRole(context.Background(), ten.ID, member.UserID, "admin",
			roles.Actor{UserID: owner.UserID, Permissions: owner.Permissions, RequestID: "r", APIKeyID: keyID})
		return err
	}
	if err := grant(revoked.ID); !errors.Is(err, apikeylive.ErrEnded) {
		t.Fatalf("grant of the revoked key: %v, want apikeylive.ErrEnded", err)
	}
	admins := `SELECT count(*) FROM membership_roles mr JOIN roles r ON r.id = mr.role_id WHERE mr.user_id = $1 AND r.name = 'admin'`
	if n := x.count(t, admins, member.UserID); n != 0 {
		t.Fatal("the revoked key granted a role")
	}
	if err := grant(live.ID); err != nil {
		t.Fatalf("grant of the live key: %v", err)
	}
	if n := x.count(t, admins, member.UserID); n != 1 {
		t.Fatalf("%d admin roles after the live key's grant, want 1", n)
	}
}

// TestRevocationAndAKeysWriteSerialise: revoking a key with its secret
// (POST /auth/revoke, RevokeSecret) takes no tenant lock, only the key's
// row. A write of the key that has checked it (roles.Live, after the
// tenant's lock) holds that row until it commits, so the two are ordered
// whichever comes first: a revocation started after the check waits for
// the write's commit (it never returns while a write of the key is still
// to commit), and a write whose check comes while a revocation holds the
// row waits for it and is refused (apikeylive.ErrEnded).
func TestRevocationAndAKeysWriteSerialise(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	owner := x.SeedUserIn(t, ten.ID, "owner@acme.test", "owner")
	ctx := context.Background()
	all, member := roles.CatalogArgs(permissions.Builtin())
	check := func(tx pgx.Tx, keyID string) error {
		_, err := roles.LockedLive(ctx, tx, all, member, ten.ID,
			roles.Actor{UserID: owner.UserID, Permissions: owner.Permissions, RequestID: "r", APIKeyID: keyID}, roles.UsersWrite)
		return err
	}

	t.Run("the write checked first", func(t *testing.T) {
		k := x.create(t, owner, "/api/v1/api-keys", map[string]any{"name": "first", "permissions": owner.Permissions})
		w, err := x.DB.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.Rollback(ctx) })
		if err := check(w, k.ID); err != nil {
			t.Fatalf("the live key's check: %v", err)
		}
		var committed atomic.Bool
		revoke := dbtest.AnsweredOrWaiting(t, x.DB, func() bool {
			done, err := x.svc.Store().RevokeSecret(ctx, ten.ID, k.Secret, owner.UserID, "r")
			if err != nil || !done {
				t.Errorf("revoke: %v, revoked %v", err, done)
			}
			return committed.Load()
		})
		committed.Store(true)
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if !revoke() {
			t.Fatal("the revocation returned while a write that had checked the key was still to commit")
		}
	})
	t.Run("the revocation first", func(t *testing.T) {
		k := x.create(t, owner, "/api/v1/api-keys", map[string]any{"name": "second", "permissions": owner.Permissions})
		// RevokeSecret's statement, in a transaction left open.
		r := x.DB.Hold(t, `UPDATE api_keys SET revoked_at = now() WHERE id = $1`, k.ID)
		write := dbtest.AnsweredOrWaiting(t, x.DB, func() error {
			return pgx.BeginFunc(ctx, x.DB.Pool, func(tx pgx.Tx) error { return check(tx, k.ID) })
		})
		if err := r.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := write(); !errors.Is(err, apikeylive.ErrEnded) {
			t.Fatalf("a write checked while the revocation held the key: %v, want apikeylive.ErrEnded", err)
		}
	})
}

// TestUseReportBesideAKeysWrite: a change made with a key holds the key's
// row until it commits (apikeylive.Hold) and may then lock another key of
// the tenant (revoking it). A use report of both keys, locking them in the
// order of their ids, held the other key while it waited for the first:
// each waited for the other, and PostgreSQL failed one of them. The
// report skips a key held, and neither fails.
func TestUseReportBesideAKeysWrite(t *testing.T) {
	x := start(t, pepper)
	ctx := context.Background()
	ten := x.SeedTenant(t, "Acme")
	owner := x.SeedUserIn(t, ten.ID, "owner@acme.test", "owner")
	body := map[string]any{"name": "k", "permissions": owner.Permissions}
	acting, revoked := x.create(t, owner, "/api/v1/api-keys", body), x.create(t, owner, "/api/v1/api-keys", body)
	if acting.ID < revoked.ID { // the report locks the revoked key first
		acting, revoked = revoked, acting
	}
	all, member := roles.CatalogArgs(permissions.Builtin())
	w, err := x.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Rollback(ctx) })
	if _, err := roles.LockedLive(ctx, w, all, member, ten.ID,
		roles.Actor{UserID: owner.UserID, Permissions: owner.Permissions, RequestID: "r", APIKeyID: acting.ID}, roles.APIKeysWrite); err != nil {
		t.Fatal(err)
	}
	report := dbtest.AnsweredOrWaiting(t, x.DB, func() error {
		_, err := x.svc.Store().MarkUsed(ctx, []string{acting.PublicID, revoked.PublicID})
		return err
	})
	// The revocation's lock of the other key (Store.Revoke).
	if _, err := w.Exec(ctx, `SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE`, revoked.ID); err != nil {
		t.Fatalf("the write's lock of the key it revokes: %v", err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := report(); err != nil {
		t.Fatalf("the use report beside the write: %v", err)
	}
}
