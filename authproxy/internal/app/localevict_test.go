package app

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

const (
	memberID   = "55555555-5555-4555-8555-555555555555"
	memberSess = "66666666-6666-4666-8666-666666666666"
	roleID     = "77777777-7777-4777-8777-777777777777"
)

// memberProjection is the member's projection in the default tenant: an
// editor, whose role gives notes:write.
func memberProjection() identity.Projection {
	p := defaultProjection()
	p.UserID, p.Email = memberID, "m@example.com"
	p.Roles = []string{"editor", "member"}
	p.Permissions = []string{"notes:write", "tenant:read"}
	return p
}

// memberToken is a token of the member's session.
func (e *env) memberToken() string {
	return e.token(func(c testenv.Claims) { c["sub"], c["sid"] = memberID, memberSess })
}

// serviceAccountToken is a client_credentials token of the member as a
// service account of the tenant.
func (e *env) serviceAccountToken() string {
	return e.token(func(c testenv.Claims) {
		delete(c, "sid")
		c["sub"], c["principal"], c["client_id"] = memberID, "service", memberID
	})
}

// localEvictions reads the local kind of the invalidations counter.
func (e *env) localEvictions() float64 {
	return testutil.ToFloat64(e.app.Metrics.Invalidations.WithLabelValues("local"))
}

// natsDown stops NATS and waits until the cache trusts its entries only
// for MAX_STALENESS: no event can evict anything from then on.
func (e *env) natsDown(t *testing.T) {
	t.Helper()
	e.nats.Stop()
	testenv.Eventually(t, func() error {
		return testenv.Want("bounded staleness", e.app.Projections.BoundedStaleness(), true)
	})
}

// wantPermissions sends a request with tok and wants it forwarded to core
// with these permissions.
func (e *env) wantPermissions(tok string, perms ...string) {
	e.t.Helper()
	e.core.Reset()
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	if got := e.core.Last(e.t).Identity.Permissions; !slices.Equal(got, perms) {
		e.t.Fatalf("permissions forwarded = %v, want %v", got, perms)
	}
}

// A tenant admin's change to another member, or to a role, forwarded by
// this proxy and answered 2xx, takes effect here at once, with NATS down:
// the member's next request through this proxy is refused, or carries
// the permissions left. coreapi committed the change before answering;
// its event would arrive over NATS, or, NATS down, the member's cached
// projection would be trusted for up to MAX_STALENESS.
func TestLocalEvictionOnMemberChange(t *testing.T) {
	removed := func(e *env) { e.core.DeleteProjection(memberID, tenantID) }
	changed := func(mod func(*identity.Projection)) func(*env) {
		return func(e *env) {
			p := memberProjection()
			mod(&p)
			e.core.SetProjection(p)
		}
	}
	disabled := changed(func(p *identity.Projection) { p.MembershipStatus = "disabled" })
	signedOut := changed(func(p *identity.Projection) { p.RevokedSessions = []string{memberSess} })
	demoted := changed(func(p *identity.Projection) { p.Roles, p.Permissions = []string{"member"}, []string{"tenant:read"} })
	refused := func(e *env, tok string) {
		e.wantProblem(e.do("GET", "/api/v1/users/me", tok, nil), 401, problem.CodeInvalidToken)
	}
	narrowed := func(e *env, tok string) { e.wantPermissions(tok, "tenant:read") }
	for _, tc := range []struct {
		name, method, path string
		change             func(*env)
		after              func(e *env, tok string)
	}{
		{"removal", "DELETE", "/api/v1/users/" + memberID, removed, refused},
		{"removal, id in upper case", "DELETE", "/api/v1/users/" + strings.ToUpper(memberID), removed, refused},
		{"disable", "PATCH", "/api/v1/users/" + memberID, disabled, refused},
		{"role revoked", "DELETE", "/api/v1/users/" + memberID + "/roles/editor", demoted, narrowed},
		{"role granted", "PUT", "/api/v1/users/" + memberID + "/roles/viewer",
			changed(func(p *identity.Projection) { p.Permissions = append(p.Permissions, "notes:read") }),
			func(e *env, tok string) { e.wantPermissions(tok, "notes:write", "tenant:read", "notes:read") }},
		{"second factor reset", "DELETE", "/api/v1/users/" + memberID + "/mfa", signedOut, refused},
		{"role edited", "PATCH", "/api/v1/roles/" + roleID, demoted, narrowed},
		{"role deleted", "DELETE", "/api/v1/roles/" + roleID, demoted, narrowed},
		{"tenant requires a second factor", "PATCH", "/api/v1/tenant",
			changed(func(p *identity.Projection) { p.TenantRequireMFA = true }),
			func(e *env, tok string) {
				e.wantProblem(e.do("GET", "/api/v1/tenant", tok, nil), 403, problem.CodeMFAEnrollmentRequired)
			}},
		{"service account deleted", "DELETE", "/api/v1/service-accounts/" + memberID, removed, refused},
		{"service account's secret deleted", "DELETE", "/api/v1/service-accounts/" + memberID + "/secrets/" + roleID,
			changed(func(p *identity.Projection) { p.TokenVersion++ }), refused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, envOpt{})
			e.core.SetProjection(memberProjection())
			admin, member := e.token(nil), e.memberToken()
			if strings.HasPrefix(tc.path, "/api/v1/service-accounts/") {
				member = e.serviceAccountToken() // the member is one
			}
			e.wantPermissions(member, "notes:write", "tenant:read")
			e.natsDown(t)
			tc.change(e)                                            // coreapi commits it; no event arrives
			e.wantPermissions(member, "notes:write", "tenant:read") // cached, as expected
			before := e.localEvictions()
			r := e.do(tc.method, tc.path, admin, nil)
			e.wantStatus(r, 200)
			tc.after(e, member)
			if got := e.localEvictions(); got != before+1 {
				t.Fatalf("local invalidations %v -> %v, want one more", before, got)
			}
		})
	}
}

// A change the caller makes to their own account (a second factor
// confirmed, which signs their other sessions out) takes effect at once
// too.
func TestLocalEvictionOnOwnFactorConfirmed(t *testing.T) {
	e := start(t, envOpt{})
	tok := e.token(nil)
	other := e.token(func(c testenv.Claims) { c["sid"] = memberSess })
	e.wantStatus(e.do("GET", "/api/v1/users/me", other, nil), 200)
	e.natsDown(t)
	p := defaultProjection()
	p.RevokedSessions = []string{memberSess}
	e.core.SetProjection(p)
	e.wantStatus(e.do("GET", "/api/v1/users/me", other, nil), 200) // cached
	e.wantStatus(e.do("POST", "/api/v1/users/me/mfa/totp/confirm", tok, nil), 200)
	e.wantProblem(e.do("GET", "/api/v1/users/me", other, nil), 401, problem.CodeInvalidToken)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
}

// A write coreapi refused or failed, or one whose path names no user as
// coreapi reads ids, evicts nothing: the member's entry stays cached and
// nothing is counted.
func TestLocalEvictionNotOnFailureOrBadID(t *testing.T) {
	e := start(t, envOpt{})
	e.core.SetProjection(memberProjection())
	admin, member := e.token(nil), e.memberToken()
	e.wantPermissions(member, "notes:write", "tenant:read")
	e.wantStatus(e.do("GET", "/api/v1/users/me", admin, nil), 200) // the admin's cached too
	e.natsDown(t)
	e.core.DeleteProjection(memberID, tenantID)
	fetches, before := e.core.ProjectionFetches.Load(), e.localEvictions()
	for _, status := range []int{400, 403, 404, 409, 500, 503} {
		e.core.EchoStatus.Store(int32(status))
		for _, r := range [][2]string{{"DELETE", "/api/v1/users/" + memberID}, {"PATCH", "/api/v1/roles/" + roleID},
			{"DELETE", "/api/v1/users/" + memberID + "/roles/editor"}} {
			if got := e.do(r[0], r[1], admin, nil); got.status != status {
				t.Fatalf("%s %s answered %d, want %d", r[0], r[1], got.status, status)
			}
		}
	}
	e.core.EchoStatus.Store(0)
	for _, id := range []string{"not-a-uuid", strings.ReplaceAll(memberID, "-", ""), "urn:uuid:" + memberID,
		memberID[:35], memberID + "5", "ME"} {
		e.wantStatus(e.do("DELETE", "/api/v1/users/"+id, admin, nil), 200)
	}
	e.wantStatus(e.do("PATCH", "/api/v1/roles/editor", admin, nil), 200)
	e.wantPermissions(member, "notes:write", "tenant:read")
	if got := e.core.ProjectionFetches.Load(); got != fetches {
		t.Fatalf("projection fetches %d -> %d: the cache was dropped", fetches, got)
	}
	if got := e.localEvictions(); got != before {
		t.Fatalf("local invalidations %v -> %v, want none", before, got)
	}
}

// The member's open stream is re-decided by the local eviction as by the
// event: removed through this proxy, with NATS down, the member's
// WebSocket closes at once, as no longer a member.
func TestLocalEvictionClosesTheMembersStream(t *testing.T) {
	e, _ := startStreams(t, nil)
	p := memberProjection()
	p.Permissions = []string{"notes:read"}
	e.core.SetProjection(p)
	c, _, err := e.dialWS("/notes/ws", bearer(e.memberToken()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo(t, c, "x")
	e.natsDown(t)
	e.core.DeleteProjection(memberID, tenantID)
	e.wantStatus(e.do("DELETE", "/api/v1/users/"+memberID, e.token(nil), nil), 200)
	if code, text := wantClosed(t, c, 5*time.Second); code != websocket.ClosePolicyViolation || text != "no_membership" {
		t.Fatalf("close = %d %q", code, text)
	}
}

// Keys of the key-revocation tests: the key revoked, another key of the
// same tenant, a key of another tenant, a member's personal key.
const (
	revokedKeyID = "88888888-8888-4888-8888-888888888881"
	siblingKeyID = "88888888-8888-4888-8888-888888888882"
	foreignKeyID = "88888888-8888-4888-8888-888888888883"
	memberKeyID  = "88888888-8888-4888-8888-888888888884"
	otherTenant  = "99999999-9999-4999-8999-999999999999"
)

// revocationKey registers at the stand-in a key of id, kind, user and
// tenant, with tenant:read, and returns it.
func (e *env) revocationKey(id, kind, user, tenant string) string {
	secret, _ := apikey.New()
	p := keyProjection("tenant:read")
	p.KeyID, p.Kind, p.UserID, p.TenantID = id, kind, user, tenant
	e.core.SetAPIKey(secret, p, false)
	return secret
}

// wantKeysServed sends a request with each key and wants it forwarded,
// from the cache: no resolve at coreapi.
func (e *env) wantKeysServed(keys ...string) {
	e.t.Helper()
	fetches := e.core.KeyFetches.Load()
	for _, k := range keys {
		e.wantStatus(e.do("GET", "/api/v1/users/me", k, nil), 200)
	}
	if got := e.core.KeyFetches.Load(); got != fetches {
		e.t.Fatalf("key resolves %d -> %d: a cached key was dropped", fetches, got)
	}
}

// An API key revoked through this proxy, by a tenant admin or by its
// owner, and answered 2xx, is refused from its next request through this
// proxy, with NATS down: the path names the key's id, coreapi's event
// names its public id, and the key's cached entry would have been
// trusted for up to MAX_STALENESS. Another key of the tenant, and a key
// of another tenant, stay cached: not even a crafted revocation that
// names one (answered 2xx here by the stand-in, which coreapi would not:
// 404) evicts a key the caller could not revoke.
func TestLocalEvictionOnKeyRevoked(t *testing.T) {
	for _, tc := range []struct{ name, kind, path string }{
		{"by a tenant admin", "tenant", "/api/v1/api-keys/" + revokedKeyID},
		{"by a tenant admin, id in upper case", "tenant", "/api/v1/api-keys/" + strings.ToUpper(revokedKeyID)},
		{"by its owner", "personal", "/api/v1/users/me/api-keys/" + revokedKeyID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, envOpt{})
			e.core.SetProjection(memberProjection())
			admin := e.token(nil)
			revoked := e.revocationKey(revokedKeyID, tc.kind, userID, tenantID)
			sibling := e.revocationKey(siblingKeyID, tc.kind, userID, tenantID)
			foreign := e.revocationKey(foreignKeyID, tc.kind, userID, otherTenant)
			member := e.revocationKey(memberKeyID, "personal", memberID, tenantID)
			keys := []string{revoked, sibling, foreign, member}
			for _, k := range keys {
				e.wantStatus(e.do("GET", "/api/v1/users/me", k, nil), 200)
			}
			e.wantKeysServed(keys...)
			e.natsDown(t)
			// Revocations naming keys the caller cannot revoke: of another
			// tenant (either route), a member's personal key (the own-key
			// route), the caller's tenant key (the own-key route).
			before := e.localEvictions()
			crafted := []string{"/api/v1/api-keys/" + foreignKeyID, "/api/v1/users/me/api-keys/" + foreignKeyID,
				"/api/v1/users/me/api-keys/" + memberKeyID}
			if tc.kind == "tenant" {
				crafted = append(crafted, "/api/v1/users/me/api-keys/"+revokedKeyID)
			}
			for _, path := range crafted {
				e.wantStatus(e.do("DELETE", path, admin, nil), 200)
			}
			e.wantKeysServed(keys...)
			if got := e.localEvictions(); got != before+float64(len(crafted)) {
				t.Fatalf("local invalidations %v -> %v, want %d more", before, got, len(crafted))
			}

			p := keyProjection("tenant:read")
			p.KeyID, p.Kind = revokedKeyID, tc.kind
			e.core.SetAPIKey(revoked, p, true) // coreapi commits it; no event arrives
			e.wantKeysServed(revoked)          // cached, as expected
			fetches, before := e.core.KeyFetches.Load(), e.localEvictions()
			e.wantStatus(e.do("DELETE", tc.path, admin, nil), 200)
			if got := e.localEvictions(); got != before+1 {
				t.Fatalf("local invalidations %v -> %v, want one more", before, got)
			}
			e.wantKeyProblem(e.do("GET", "/api/v1/users/me", revoked, nil), 401, problem.CodeInvalidToken, "not valid")
			if got := e.core.KeyFetches.Load(); got != fetches+1 {
				t.Fatalf("key resolves %d -> %d, want the revoked key's one", fetches, got)
			}
			e.wantKeysServed(sibling, foreign, member)
		})
	}
}

// A revocation coreapi refused or failed, or whose id is not a UUID as
// coreapi reads it, evicts nothing: the key stays cached (no resolve)
// and nothing is counted.
func TestLocalEvictionOfKeyNotOnFailureOrBadID(t *testing.T) {
	e := start(t, envOpt{})
	admin := e.token(nil)
	key := e.revocationKey(revokedKeyID, "personal", userID, tenantID)
	e.wantStatus(e.do("GET", "/api/v1/users/me", key, nil), 200)
	e.wantKeysServed(key)
	e.natsDown(t)
	before := e.localEvictions()
	for _, status := range []int{400, 403, 404, 409, 500, 503} {
		e.core.EchoStatus.Store(int32(status))
		for _, path := range []string{"/api/v1/api-keys/" + revokedKeyID, "/api/v1/users/me/api-keys/" + revokedKeyID} {
			if got := e.do("DELETE", path, admin, nil); got.status != status {
				t.Fatalf("DELETE %s answered %d, want %d", path, got.status, status)
			}
		}
	}
	e.core.EchoStatus.Store(0)
	for _, id := range []string{"not-a-uuid", strings.ReplaceAll(revokedKeyID, "-", ""), "urn:uuid:" + revokedKeyID,
		revokedKeyID[:35], revokedKeyID + "1", "{" + revokedKeyID + "}"} {
		e.wantStatus(e.do("DELETE", "/api/v1/api-keys/"+id, admin, nil), 200)
		e.wantStatus(e.do("DELETE", "/api/v1/users/me/api-keys/"+id, admin, nil), 200)
	}
	e.wantKeysServed(key)
	if got := e.localEvictions(); got != before {
		t.Fatalf("local invalidations %v -> %v, want none", before, got)
	}
}
