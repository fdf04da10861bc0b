package httpapi_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

func TestProjection(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	uid := w.Admin.UserID
	var recent, old, live string
	const qs = `INSERT INTO sessions (user_id, tenant_id, expires_at, revoked_at) VALUES ($1, $2, now() + interval '1 day', now() - $3::interval) RETURNING id::text`
	if err := w.E.DB.Pool.QueryRow(ctx, qs, uid, w.A, "1 minute").Scan(&recent); err != nil {
		t.Fatal(err)
	}
	if err := w.E.DB.Pool.QueryRow(ctx, qs, uid, w.A, "1 hour").Scan(&old); err != nil {
		t.Fatal(err)
	}
	if err := w.E.DB.Pool.QueryRow(ctx, `INSERT INTO sessions (user_id, tenant_id, expires_at) VALUES ($1, $2, now() + interval '1 day') RETURNING id::text`, uid, w.A).Scan(&live); err != nil {
		t.Fatal(err)
	}
	if _, err := w.E.DB.Pool.Exec(ctx, `UPDATE users SET token_version = 7 WHERE id = $1`, uid); err != nil {
		t.Fatal(err)
	}
	get := func(user, tenant string) apitest.Response {
		return w.E.Do(t, apitest.Request{Method: "GET", Path: identity.ProjectionPath + "/" + user + "?tenant_id=" + tenant, Service: true})
	}
	r := get(uid, w.A)
	apitest.WantStatus(t, r, 200)
	if r.Stats.Queries != 1 {
		t.Errorf("projection took %d queries, want 1", r.Stats.Queries)
	}
	var p identity.Projection
	r.JSON(t, &p)
	want := identity.Projection{
		UserID: uid, TenantID: w.A, Email: "admin@acme.test", UserStatus: "active", MembershipStatus: "active",
		TenantStatus: "active", Roles: []string{"admin"}, TokenVersion: 7, RevokedSessions: []string{recent},
		Permissions: []string{"api-keys:write", "audit:read", "roles:read", "roles:write", "tenant:read", "users:read", "users:write"},
	}
	if p.UserID != want.UserID || p.TenantID != want.TenantID || p.Email != want.Email || p.UserStatus != want.UserStatus ||
		p.MembershipStatus != want.MembershipStatus || p.TenantStatus != want.TenantStatus || p.TokenVersion != want.TokenVersion ||
		!slices.Equal(p.Roles, want.Roles) || !slices.Equal(p.Permissions, want.Permissions) || !slices.Equal(p.RevokedSessions, want.RevokedSessions) {
		t.Fatalf("projection = %+v\nwant         %+v", p, want)
	}
	if !p.Active() {
		t.Error("projection not active")
	}

	// Changes show up at once.
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PATCH", "/api/v1/users/"+uid, map[string]any{"membership_status": "disabled"}), 200)
	w.E.Suspend(t, w.A)
	get(uid, w.A).JSON(t, &p)
	if p.MembershipStatus != "disabled" || p.TenantStatus != "suspended" || p.Active() {
		t.Fatalf("after disable+suspend: %+v", p)
	}

	// No membership is 404 no_membership, a code of its own: the proxy
	// remembers "no membership" for NEGATIVE_CACHE_TTL only on it, never
	// on the not_found of a route coreapi does not have
	// (TestProjectionNoMembershipCode).
	t.Run("no membership", func(t *testing.T) {
		apitest.WantProblem(t, get(uid, w.B), 404, "no_membership")
	})
	t.Run("unknown user", func(t *testing.T) {
		apitest.WantProblem(t, get("00000000-0000-0000-0000-000000000000", w.A), 404, "no_membership")
	})
	t.Run("empty lists are arrays", func(t *testing.T) {
		r := get(w.Member.UserID, w.A)
		apitest.WantStatus(t, r, 200)
		var raw map[string]any
		r.JSON(t, &raw)
		if rs, ok := raw["revoked_sessions"].([]any); !ok || len(rs) != 0 {
			t.Fatalf("revoked_sessions = %#v, want []", raw["revoked_sessions"])
		}
	})
}

// TestProjectionListsRevokedForLeeway: a session revoked a little more than
// one access-token lifetime ago is still listed while a proxy may accept
// its token (exp + leeway), and drops off after TTL + TOKEN_MAX_LEEWAY.
func TestProjectionListsRevokedForLeeway(t *testing.T) {
	t.Parallel()
	const ttl, leeway = 15 * time.Minute, time.Minute
	e := start(t, apitest.Options{Configure: func(o *httpapi.Options) {
		o.AccessTokenTTL, o.TokenMaxLeeway = ttl, leeway
	}})
	ten := e.SeedTenant(t, "Acme")
	u := e.SeedUserIn(t, ten.ID, "u@acme.test", "member")
	ctx := context.Background()
	revoked := func(ago time.Duration) string {
		const q = `INSERT INTO sessions (user_id, tenant_id, expires_at, revoked_at)
VALUES ($1, $2, now() + interval '1 day', now() - make_interval(secs => $3)) RETURNING id::text`
		var id string
		if err := e.DB.Pool.QueryRow(ctx, q, u.UserID, ten.ID, ago.Seconds()).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	inLeeway := revoked(ttl + leeway/2)
	revoked(ttl + leeway + 30*time.Second)
	var p identity.Projection
	r := e.Do(t, apitest.Request{Method: "GET", Path: identity.ProjectionPath + "/" + u.UserID + "?tenant_id=" + ten.ID, Service: true})
	apitest.WantStatus(t, r, 200)
	r.JSON(t, &p)
	if !slices.Equal(p.RevokedSessions, []string{inLeeway}) {
		t.Fatalf("revoked_sessions = %v, want only the one revoked within TTL + leeway (%s)", p.RevokedSessions, inLeeway)
	}
}

// TestProjectionNoMembershipCode: coreapi answered a user without a
// membership in the tenant 404 not_found, the code of a route it does not
// have, so the proxy could not tell the two apart and took any 404 (an
// IDENTITY_URL naming another service) for "no membership". It answers 404
// no_membership; a route it does not have stays 404 not_found.
func TestProjectionNoMembershipCode(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := w.E.Do(t, apitest.Request{Method: "GET", Path: identity.ProjectionPath + "/" + w.Owner.UserID + "?tenant_id=" + w.B, Service: true})
	apitest.WantProblem(t, r, 404, problem.CodeNoMembership)
	r = w.E.Do(t, apitest.Request{Method: "GET", Path: "/internal/v1/nothing/" + w.Owner.UserID + "?tenant_id=" + w.A, Service: true, Undocumented: true})
	apitest.WantProblem(t, r, 404, problem.CodeNotFound)
}

// TestProjectionTenantIDOnce: a projection fetch naming tenant_id more
// than once is 400 invalid_query naming it, before any query, as a list's
// repeated page parameter is: the first was served, where another reader
// of the URL (a log, a cache in front of coreapi) may take the last.
func TestProjectionTenantIDOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for _, q := range []string{"?tenant_id=" + w.A + "&tenant_id=" + w.B, "?tenant_id=" + w.A + "&tenant_id=" + w.A,
		"?tenant_id=" + w.A + "&tenant_id="} {
		r := w.E.Do(t, apitest.Request{Method: "GET", Path: identity.ProjectionPath + "/" + w.Owner.UserID + q, Service: true})
		apitest.WantProblem(t, r, 400, problem.CodeInvalidQuery)
		if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "tenant_id" {
			t.Errorf("%s: errors %+v, want tenant_id", q, p.Errors)
		}
		if r.Stats.Queries != 0 {
			t.Errorf("%s: refused fetch ran %d queries", q, r.Stats.Queries)
		}
	}
	apitest.WantStatus(t, w.E.Do(t, apitest.Request{Method: "GET", Path: identity.ProjectionPath + "/" + w.Owner.UserID + "?tenant_id=" + w.A, Service: true}), 200)
}
