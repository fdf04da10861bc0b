package lifecycle_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// qWritten lists the distinct subjects of the outbox rows past id $1 as
// X-Auth-Invalidated names them: auth.keys.changed ($2) aside, and an API
// key's aside when its user's subject is among them.
const qWritten = `
SELECT DISTINCT o.subject FROM outbox o
WHERE o.id > $1 AND o.subject <> $2
  AND NOT EXISTS (
    SELECT 1 FROM api_keys k JOIN outbox u ON u.id > $1 AND u.subject = 'auth.invalidate.user.' || k.user_id::text
    WHERE o.subject = 'auth.invalidate.apikey.' || k.public_id)
ORDER BY 1`

// TestAnswerNamesWhatItInvalidated drives writes through the real HTTP
// server and compares, for each request, the subjects its answer names in
// X-Auth-Invalidated with the outbox rows it inserted (the rows past the
// outbox's last id before the request; auth.keys.changed aside, and the
// API keys' whose user's subject the request also wrote, which a proxy's
// eviction of that user covers: a member removed with their keys names
// the member only): the same set, whatever the status (a refresh token's reuse is answered 400
// after its session's revocation committed), and no header at all for a
// request that wrote none (a GET, PATCH /tenant changing its name but not
// its MFA policy). The proxy that forwards the request evicts what the
// header names; a subject missing from it is a change that proxy would
// serve stale.
func TestAnswerNamesWhatItInvalidated(t *testing.T) {
	t.Parallel()
	x := startWide(t)
	ctx := context.Background()
	lastID := func() (id int64) {
		x.lc.WaitResets()
		if err := x.DB.Pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM outbox`).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	written := func(after int64) []string {
		x.lc.WaitResets()
		rows, err := x.DB.Pool.Query(ctx, qWritten, after, invalidation.SubjectKeysChanged)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var s []string
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			s = append(s, v)
		}
		return s
	}
	// check sends one request and compares; writes: the request must have
	// written some row (else the case proves nothing).
	check := func(name string, status int, writes bool, send func() apitest.Response) apitest.Response {
		t.Helper()
		before := lastID()
		r := send()
		if r.Status != status {
			t.Fatalf("%s: %d %s, want %d", name, r.Status, r.Body, status)
		}
		want := written(before)
		vals := r.Header.Values(invalidation.HeaderInvalidated)
		if len(vals) > 1 {
			t.Errorf("%s: %d %s headers, want at most one", name, len(vals), invalidation.HeaderInvalidated)
		}
		var got []string
		if len(vals) == 1 {
			got = strings.Split(vals[0], " ")
			if len(got) != len(slices.Compact(slices.Sorted(slices.Values(got)))) {
				t.Errorf("%s: %q names a subject twice", name, vals[0])
			}
			slices.Sort(got)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: header names %q, the request wrote %q", name, got, want)
		}
		if writes && len(want) == 0 {
			t.Errorf("%s: wrote no outbox row", name)
		}
		if !writes && len(vals) != 0 {
			t.Errorf("%s: %s %q on a request that invalidates nothing", name, invalidation.HeaderInvalidated, vals)
		}
		return r
	}
	id := func(r apitest.Response) string {
		var v struct {
			ID string `json:"id"`
		}
		r.JSON(t, &v)
		if v.ID == "" {
			t.Fatalf("no id in %s", r.Body)
		}
		return v.ID
	}

	owner := x.signup(t, "owner@acme.test")
	tid := owner.c.Tid
	memberID := id(check("member added (POST /users)", http.StatusCreated, true, func() apitest.Response {
		return x.Send(t, &owner.id, http.MethodPost, "/api/v1/users", map[string]any{"email": "mem@example.com", "password": pw})
	}))
	member := x.IdentityOf(t, memberID, tid)
	check("role granted", http.StatusOK, true, func() apitest.Response {
		return x.Send(t, &owner.id, http.MethodPut, "/api/v1/users/"+memberID+"/roles/admin", nil)
	})
	roleID := id(check("role created", http.StatusCreated, false, func() apitest.Response {
		return x.Send(t, &owner.id, http.MethodPost, "/api/v1/roles", map[string]any{"name": "editor-x", "permissions": []string{"tenant:write"}})
	}))
	check("role edited", http.StatusOK, true, func() apitest.Response {
		return x.Send(t, &owner.id, http.MethodPatch, "/api/v1/roles/"+roleID, map[string]any{"permissions": []string{"tenant:read"}})
	})
	keyID := id(x.Send(t, &owner.id, http.MethodPost, "/api/v1/api-keys", map[string]any{"name": "k1", "permissions": []string{"users:read"}}))
	check("key revoked", http.StatusNoContent, true, func() apitest.Response {
		return x.Send(t, &owner.id, http.MethodDelete, "/api/v1/api-keys/"+keyID, nil)
	})
	check("member disabled", http.StatusOK, true, func() apitest.Response {
		return x.Send(t, &owner.id, http.MethodPatch, "/api/v1/users/"+memberID, map[string]string{"membership_status": "disabled"})
	})
	check("member enabled", http.StatusOK, true, func() apitest.Response {
		return x.Send(t, &owner.id, http.MethodPatch, "/api/v1/users/"+memberID, map[string]string{"membership_status": "active"})
	})
	for _, name := range []string{"m1", "m2"} {
		wantStatus(t, x.Send(t, &member, http.MethodPost, "/api/v1/users/me/api-keys", map[string]any{"name": name, "permissions": []string{}}), http.StatusCreated)
	}
	check("member removed, with their keys", http.StatusNoContent, true, func() apitest.Response {
		return x.Send(t, &owner.id, http.MethodDelete, "/api/v1/users/"+memberID, nil)
	})
	check("PATCH /tenant without a change of MFA policy", http.StatusOK, false, func() apitest.Response {
		return x.Send(t, &owner.id, http.MethodPatch, "/api/v1/tenant", map[string]any{"name": "Acme renamed"})
	})
	// The owner holds a second factor, so the policy leaves them their
	// permissions (the invitation below).
	if _, err := x.DB.Pool.Exec(t.Context(),
		`INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now())`, owner.id.UserID); err != nil {
		t.Fatal(err)
	}
	check("PATCH /tenant requiring a second factor", http.StatusOK, true, func() apitest.Response {
		return x.Send(t, &owner.id, http.MethodPatch, "/api/v1/tenant", map[string]any{"require_mfa": true})
	})
	check("a GET", http.StatusOK, false, func() apitest.Response { return x.Get(t, &owner.id, "/api/v1/users/me") })

	// The caller's own writes, and the anonymous ones that name no user
	// in their path.
	x.signup(t, "ver@example.com")
	vtok := x.mail(t, "ver@example.com", "Confirm your email").Token()
	check("email verified", http.StatusOK, true, func() apitest.Response {
		return x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": vtok, "password": pw})
	})
	x.invite(t, owner.id, "inv@example.com")
	itok := x.mail(t, "inv@example.com", "Acme renamed").Token()
	check("invitation accepted", http.StatusOK, true, func() apitest.Response {
		return x.Send(t, nil, http.MethodPost, "/api/v1/invitations/accept", map[string]string{"token": itok, "password": pw})
	})
	login := func() tokens {
		r := x.token(t, "ver@example.com", pw)
		wantStatus(t, r, http.StatusOK)
		var tk tokens
		r.JSON(t, &tk)
		return tk
	}
	sess := login()
	check("logout", http.StatusNoContent, true, func() apitest.Response {
		as := x.identity(t, claimsOf(t, sess.AccessToken))
		return x.Send(t, &as, http.MethodPost, "/api/v1/auth/logout", nil)
	})
	sess = login()
	check("POST /auth/revoke of a refresh token", http.StatusOK, true, func() apitest.Response {
		return postForm(t, x, "/api/v1/auth/revoke", form("token", sess.RefreshToken))
	})
	sess = login()
	check("a refresh", http.StatusOK, false, func() apitest.Response {
		return x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": sess.RefreshToken})
	})
	x.exec(t, `UPDATE refresh_tokens SET rotated_at = now() - interval '1 minute' WHERE token_hash = $1`, sessions.Hash(sess.RefreshToken))
	check("a refresh token reused (400, its session revoked)", http.StatusBadRequest, true, func() apitest.Response {
		return x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": sess.RefreshToken})
	})
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "ver@example.com"}), http.StatusAccepted)
	rtok := x.mail(t, "ver@example.com", "Reset").Token()
	check("password reset", http.StatusNoContent, true, func() apitest.Response {
		return x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset", map[string]string{"token": rtok, "new_password": "the new password"})
	})
}

// TestAnswerNamesTheOwnerOfManyKeys: the writes that revoke every API
// key of an account or a member, here more than MaxReported of them,
// write one outbox row per key (its event goes out to every proxy), but
// the answer names the user's subject and not the keys': at the proxy
// that forwarded the write, the user's eviction makes every key acting as
// the user a miss. It used to be auth.invalidate.all, with which a tenant
// admin removing a member who made many keys had the proxy they use drop
// every tenant's entries. So for a member's removal (tenant keys) and a
// password reset that proves an address the account had never proven
// (personal keys in two tenants).
func TestAnswerNamesTheOwnerOfManyKeys(t *testing.T) {
	t.Parallel()
	x := startWide(t)
	ctx := context.Background()
	keys := func(as identity.Identity, path string, n int) []string {
		t.Helper()
		pids := make([]string, n)
		for i := range pids {
			r := x.Send(t, &as, http.MethodPost, path, map[string]any{"name": fmt.Sprint("k", i), "permissions": []string{}})
			wantStatus(t, r, http.StatusCreated)
			var k struct {
				PublicID string `json:"public_id"`
			}
			r.JSON(t, &k)
			pids[i] = k.PublicID
		}
		return pids
	}
	lastID := func() (id int64) {
		x.lc.WaitResets()
		if err := x.DB.Pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM outbox`).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	check := func(t *testing.T, r apitest.Response, userID string, pids []string, before int64) {
		t.Helper()
		if got, want := r.Header.Values(invalidation.HeaderInvalidated), []string{invalidation.UserSubject(userID)}; !slices.Equal(got, want) {
			t.Fatalf("%s = %q, want %q", invalidation.HeaderInvalidated, got, want)
		}
		for _, pid := range pids {
			if n := x.count(t, `SELECT count(*) FROM outbox WHERE id > $1 AND subject = $2 AND payload->>'reason' = $3`,
				before, invalidation.APIKeySubject(pid), invalidation.ReasonAPIKeyRevoked); n != 1 {
				t.Fatalf("key %s: %d invalidations written, want 1", pid, n)
			}
		}
	}

	t.Run("member removed", func(t *testing.T) {
		owner := x.signup(t, "owner@example.com")
		memberID := x.SeedUser(t, "mem@example.com", "")
		x.SeedMember(t, owner.c.Tid, memberID, "admin")
		pids := keys(x.IdentityOf(t, memberID, owner.c.Tid), "/api/v1/api-keys", outbox.MaxReported+1)
		before := lastID()
		r := x.Send(t, &owner.id, http.MethodDelete, "/api/v1/users/"+memberID, nil)
		wantStatus(t, r, http.StatusNoContent)
		check(t, r, memberID, pids, before)
	})
	t.Run("password reset proving an address never proven", func(t *testing.T) {
		a := x.signup(t, "many@example.com")
		other := x.SeedTenant(t, "Other")
		x.SeedMember(t, other.ID, a.c.Sub, "admin")
		pids := keys(a.id, "/api/v1/users/me/api-keys", outbox.MaxReported/2+1)
		pids = append(pids, keys(x.IdentityOf(t, a.c.Sub, other.ID), "/api/v1/users/me/api-keys", outbox.MaxReported/2+1)...)
		before := lastID()
		wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": a.email}), http.StatusAccepted)
		tok := x.mail(t, a.email, "Reset").Token()
		r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset", map[string]string{"token": tok, "new_password": "the owner's password"})
		wantStatus(t, r, http.StatusNoContent)
		check(t, r, a.c.Sub, pids, before)
	})
	// A service account the account created that holds keys but no
	// client secret (keys minted before coreapi refused a creation by a
	// service account whose last secret was deleted, or a secret deleted
	// in plain SQL): the reset revokes its keys and, with no secret to
	// delete, used to write no subject of the account, so its keys were
	// named one by one and the answer became auth.invalidate.all.
	t.Run("password reset, a service account with keys and no secret", func(t *testing.T) {
		a := x.signup(t, "creator@example.com")
		saID := x.createServiceAccount(t, &a.id, "bot", "admin")
		wantStatus(t, x.Send(t, &a.id, http.MethodPost, "/api/v1/service-accounts/"+saID+"/secrets", nil), http.StatusCreated)
		as := x.IdentityOf(t, saID, a.c.Tid)
		as.Principal = identity.PrincipalService
		pids := keys(as, "/api/v1/api-keys", outbox.MaxReported+1)
		if _, err := x.DB.Pool.Exec(t.Context(), `DELETE FROM service_account_secrets WHERE user_id = $1`, saID); err != nil {
			t.Fatal(err)
		}
		before := lastID()
		wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": a.email}), http.StatusAccepted)
		tok := x.mail(t, a.email, "Reset").Token()
		r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset", map[string]string{"token": tok, "new_password": "the owner's password"})
		wantStatus(t, r, http.StatusNoContent)
		got := strings.Fields(strings.Join(r.Header.Values(invalidation.HeaderInvalidated), " "))
		slices.Sort(got)
		want := []string{invalidation.UserSubject(a.c.Sub), invalidation.UserSubject(saID)}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("%s = %q, want %q", invalidation.HeaderInvalidated, got, want)
		}
		for _, pid := range pids {
			if n := x.count(t, `SELECT count(*) FROM outbox WHERE id > $1 AND subject = $2`, before, invalidation.APIKeySubject(pid)); n != 1 {
				t.Fatalf("key %s: %d invalidations written, want 1", pid, n)
			}
		}
	})
}
