package app

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
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

// cachedThenRemoved caches the member's entry and the admin's, stops NATS
// and has coreapi remove the member, as a change whose event never
// arrives: the member's entry stays cached until something evicts it. It
// returns the admin's token and the member's.
func (e *env) cachedThenRemoved(t *testing.T) (admin, member string) {
	t.Helper()
	e.core.SetProjection(memberProjection())
	admin, member = e.token(nil), e.memberToken()
	e.wantPermissions(member, "notes:write", "tenant:read")
	e.wantStatus(e.do("GET", "/api/v1/users/me", admin, nil), 200) // the admin's cached too
	e.natsDown(t)
	e.core.DeleteProjection(memberID, tenantID)
	return admin, member
}

// wantStillCached checks that the member's entry is still the cached one
// (cachedThenRemoved): its permissions are served without a projection
// fetch since fetches was read; else the test fails saying why.
func (e *env) wantStillCached(t *testing.T, member string, fetches int64, why string) {
	t.Helper()
	e.wantPermissions(member, "notes:write", "tenant:read")
	if got := e.core.ProjectionFetches.Load(); got != fetches {
		t.Fatalf("projection fetches %d -> %d: %s", fetches, got, why)
	}
}

// localApplied reads the local kind of the invalidations counter.
func (e *env) localApplied() float64 {
	return testutil.ToFloat64(e.app.Metrics.Invalidations.WithLabelValues("local"))
}

// localUnknown reads the local_unknown kind of the invalidations counter.
func (e *env) localUnknown() float64 {
	return testutil.ToFloat64(e.app.Metrics.Invalidations.WithLabelValues("local_unknown"))
}

// answerInvalidated has the core stand-in's (or, through up, the app's)
// answers name subjects in X-Auth-Invalidated; none: no header.
func answerInvalidated(c *testenv.Core, subjects ...string) {
	if len(subjects) == 0 {
		c.EchoInvalidated.Store(nil)
		return
	}
	v := strings.Join(subjects, " ")
	c.EchoInvalidated.Store(&v)
}

// wantNoInvalidated: the answer reached the client without the header.
func wantNoInvalidated(t *testing.T, r result) {
	t.Helper()
	if v, ok := r.header[http.CanonicalHeaderKey(invalidation.HeaderInvalidated)]; ok {
		t.Fatalf("%s %q reached the client", invalidation.HeaderInvalidated, v)
	}
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

// A change coreapi names in its answer (X-Auth-Invalidated) takes effect
// at the proxy that forwarded it at once, with NATS down, whatever the
// request's path, method, status or caller: a member's removal, a role's
// edit, and the writes whose path names nobody (a password reset and an
// RFC 7009 revocation, both anonymous; a refresh token's reuse, answered
// 400 after coreapi revoked its session). The member's next request
// through this proxy is refused, or carries the permissions left, and
// each subject applied is counted as local. The header never reaches the
// client.
func TestEvictionNamedByCore(t *testing.T) {
	removed := func(e *env) { e.core.DeleteProjection(memberID, tenantID) }
	changed := func(mod func(*identity.Projection)) func(*env) {
		return func(e *env) {
			p := memberProjection()
			mod(&p)
			e.core.SetProjection(p)
		}
	}
	signedOut := changed(func(p *identity.Projection) { p.RevokedSessions = []string{memberSess} })
	demoted := changed(func(p *identity.Projection) { p.Roles, p.Permissions = []string{"member"}, []string{"tenant:read"} })
	refused := func(e *env, tok string) {
		e.wantProblem(e.do("GET", "/api/v1/users/me", tok, nil), 401, problem.CodeInvalidToken)
	}
	narrowed := func(e *env, tok string) { e.wantPermissions(tok, "tenant:read") }
	user, tenant := invalidation.UserSubject(memberID), invalidation.TenantSubject(tenantID)
	for _, tc := range []struct {
		name, method, path string
		admin              bool // sent with the admin's token, else none
		status             int
		subjects           []string
		change             func(*env)
		after              func(e *env, tok string)
	}{
		{"member removed", "DELETE", "/api/v1/users/" + memberID, true, 200, []string{user}, removed, refused},
		{"role edited", "PATCH", "/api/v1/roles/" + roleID, true, 200, []string{tenant}, demoted, narrowed},
		{"password reset", "POST", "/api/v1/auth/password/reset", false, 200, []string{user}, signedOut, refused},
		{"RFC 7009 revocation", "POST", "/api/v1/auth/revoke", false, 200, []string{user}, signedOut, refused},
		{"refresh token reused, answered 400", "POST", "/api/v1/auth/token", false, 400, []string{user}, signedOut, refused},
		{"several subjects", "DELETE", "/api/v1/users/" + memberID, true, 200,
			[]string{invalidation.UserSubject(userID), user, invalidation.APIKeySubject("abcdefgh01234567")}, removed, refused},
		{"everything", "PUT", "/api/v1/users/me/password", true, 200, []string{invalidation.SubjectAll}, removed, refused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, envOpt{})
			e.core.SetProjection(memberProjection())
			admin, member := e.token(nil), e.memberToken()
			e.wantPermissions(member, "notes:write", "tenant:read")
			e.natsDown(t)
			tc.change(e)                                            // coreapi commits it; no event arrives
			e.wantPermissions(member, "notes:write", "tenant:read") // cached, as expected
			before := e.localApplied()
			tok := ""
			if tc.admin {
				tok = admin
			}
			e.core.EchoStatus.Store(int32(tc.status))
			answerInvalidated(e.core, tc.subjects...)
			r := e.do(tc.method, tc.path, tok, nil)
			answerInvalidated(e.core)
			e.core.EchoStatus.Store(0)
			if r.status != tc.status {
				t.Fatalf("%s %s answered %d, want %d", tc.method, tc.path, r.status, tc.status)
			}
			wantNoInvalidated(t, r)
			tc.after(e, member)
			if got := e.localApplied(); got != before+float64(len(tc.subjects)) {
				t.Fatalf("local invalidations %v -> %v, want %d more", before, got, len(tc.subjects))
			}
		})
	}
}

// A write coreapi answers without naming anything evicts nothing, whatever
// its path (PATCH /tenant changing the name alone, a member's removal that
// failed): the proxy no longer guesses from the path.
func TestNoEvictionUnnamed(t *testing.T) {
	e := start(t, envOpt{})
	admin, member := e.cachedThenRemoved(t)
	fetches, before := e.core.ProjectionFetches.Load(), e.localApplied()
	for _, r := range [][2]string{{"PATCH", "/api/v1/tenant"}, {"DELETE", "/api/v1/users/" + memberID}, {"PATCH", "/api/v1/roles/" + roleID}} {
		e.wantStatus(e.do(r[0], r[1], admin, nil), 200)
	}
	e.wantStillCached(t, member, fetches, "the cache was dropped")
	if got := e.localApplied(); got != before {
		t.Fatalf("local invalidations %v -> %v, want none", before, got)
	}
}

// An app's answer naming subjects evicts nothing (an app must not thrash
// the proxy's caches), and its header is removed all the same.
func TestInvalidatedFromAnAppIgnored(t *testing.T) {
	e := start(t, envOpt{rules: appUpstream + "routes:\n  - {prefix: /notes, upstream: notes, access: protected}\n"})
	admin, member := e.cachedThenRemoved(t)
	fetches, before, unknown := e.core.ProjectionFetches.Load(), e.localApplied(), e.localUnknown()
	answerInvalidated(e.up, invalidation.UserSubject(memberID), invalidation.TenantSubject(tenantID), invalidation.SubjectAll)
	for _, m := range []string{"GET", "POST", "DELETE"} {
		r := e.do(m, "/notes/x", admin, nil)
		e.wantStatus(r, 200)
		wantNoInvalidated(t, r)
	}
	e.wantStillCached(t, member, fetches, "the cache was dropped at an app's word")
	if got, gotUnknown := e.localApplied(), e.localUnknown(); got != before || gotUnknown != unknown {
		t.Fatalf("local invalidations %v -> %v, unknown %v -> %v; want none", before, got, unknown, gotUnknown)
	}
}

// Subjects the proxy does not understand evict nothing (not everything, as
// such a NATS event does), are counted as local_unknown, and leave the
// answer as it was, less the header; the ones it understands beside them
// are applied.
func TestInvalidatedGarbageIgnored(t *testing.T) {
	e := start(t, envOpt{})
	admin, member := e.cachedThenRemoved(t)
	fetches, before, unknown := e.core.ProjectionFetches.Load(), e.localApplied(), e.localUnknown()
	garbage := []string{"auth.invalidate.session.x", "auth.invalidate.user.", "auth.invalidate.user.a.b", invalidation.SubjectKeysChanged,
		"other.user." + memberID, strings.Repeat("x", 300)}
	answerInvalidated(e.core, garbage...)
	r := e.do("POST", "/api/v1/users/"+memberID, admin, nil)
	answerInvalidated(e.core)
	e.wantStatus(r, 200)
	wantNoInvalidated(t, r)
	if !strings.Contains(string(r.body), `"ok":true`) {
		t.Fatalf("answer body %q", r.body)
	}
	e.wantStillCached(t, member, fetches, "garbage dropped the cache")
	if got, gotUnknown := e.localApplied(), e.localUnknown(); got != before || gotUnknown != unknown+float64(len(garbage)) {
		t.Fatalf("local %v -> %v, local_unknown %v -> %v; want none and %d more", before, got, unknown, gotUnknown, len(garbage))
	}
	// Garbage beside a subject understood: that one is applied.
	answerInvalidated(e.core, append(garbage[:2:2], invalidation.UserSubject(memberID))...)
	e.wantStatus(e.do("POST", "/api/v1/users/"+memberID, admin, nil), 200)
	answerInvalidated(e.core)
	e.wantProblem(e.do("GET", "/api/v1/users/me", member, nil), 401, problem.CodeInvalidToken)
	if got := e.localApplied(); got != before+1 {
		t.Fatalf("local %v -> %v, want one more", before, got)
	}
}

// The member's open stream is re-decided by the eviction coreapi's answer
// names as by the event: removed through this proxy, with NATS down, the
// member's WebSocket closes at once, as no longer a member.
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
	answerInvalidated(e.core, invalidation.UserSubject(memberID))
	e.wantStatus(e.do("DELETE", "/api/v1/users/"+memberID, e.token(nil), nil), 200)
	if code, text := wantClosed(t, c, 5*time.Second); code != websocket.ClosePolicyViolation || text != "no_membership" {
		t.Fatalf("close = %d %q", code, text)
	}
}

// Keys of the key-revocation tests: the key revoked, another key of the
// same tenant.
const (
	revokedKeyID = "88888888-8888-4888-8888-888888888881"
	siblingKeyID = "88888888-8888-4888-8888-888888888882"
)

// revocationKey registers at the stand-in a key of id, kind, user and
// tenant, with tenant:read, and returns it and its public id.
func (e *env) revocationKey(id, kind, user, tenant string) (string, string) {
	secret, pid := apikey.New()
	p := keyProjection("tenant:read")
	p.KeyID, p.Kind, p.UserID, p.TenantID = id, kind, user, tenant
	e.core.SetAPIKey(secret, p, false)
	return secret, pid
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

// An API key whose revocation coreapi's answer names (by its public id,
// as its event does) is refused from its next request through this
// proxy, with NATS down; another key of the tenant stays cached.
func TestEvictionNamedByCoreOfKey(t *testing.T) {
	revokeKeyThroughProxy(t, "tenant", userID, "/api/v1/api-keys/"+revokedKeyID, invalidation.APIKeySubject)
}

// A revoked key is refused from its next request through the proxy that
// forwarded its revocation, with NATS down, when coreapi's answer names
// only its owner's user subject (auth.invalidate.user.<the key's user>),
// not the key's own: an entry of a key is stamped with the generation of
// the user it acts as, so the user's invalidation makes it a miss. So
// coreapi leaves out of X-Auth-Invalidated the key subjects whose owner's
// it lists (outbox.Row.CoveredBy). It holds for every kind of key: a
// tenant key and a personal key of a member, a key a service account
// minted (it acts as the account, whose user subject its deletion and the
// deletion of its secrets name). A key of another user stays cached.
func TestEvictionNamedByCoreOfKeyOwner(t *testing.T) {
	const serviceID = "99999999-9999-4999-8999-999999999999"
	for _, tc := range []struct{ name, kind, owner string }{
		{"a member's tenant key", "tenant", memberID},
		{"a member's personal key", "personal", memberID},
		{"a service account's key", "tenant", serviceID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			revokeKeyThroughProxy(t, tc.kind, tc.owner, "/api/v1/users/"+tc.owner,
				func(string) string { return invalidation.UserSubject(tc.owner) })
		})
	}
}

// revokeKeyThroughProxy caches a key of kind acting as owner and a sibling
// key of the admin, stops NATS, has coreapi revoke the key (no event
// arrives) and answer DELETE path naming subject(the key's public id),
// and checks the key is refused from its next request, after one resolve,
// while the sibling stays cached.
func revokeKeyThroughProxy(t *testing.T, kind, owner, path string, subject func(pid string) string) {
	t.Helper()
	e := start(t, envOpt{})
	admin := e.token(nil)
	revoked, pid := e.revocationKey(revokedKeyID, kind, owner, tenantID)
	sibling, _ := e.revocationKey(siblingKeyID, "tenant", userID, tenantID)
	for _, k := range []string{revoked, sibling} {
		e.wantStatus(e.do("GET", "/api/v1/users/me", k, nil), 200)
	}
	e.wantKeysServed(revoked, sibling)
	e.natsDown(t)
	p := keyProjection("tenant:read")
	p.KeyID, p.Kind, p.UserID = revokedKeyID, kind, owner
	e.core.SetAPIKey(revoked, p, true) // coreapi commits it; no event arrives
	e.wantKeysServed(revoked)          // cached, as expected
	fetches, before := e.core.KeyFetches.Load(), e.localApplied()
	answerInvalidated(e.core, subject(pid))
	r := e.do("DELETE", path, admin, nil)
	answerInvalidated(e.core)
	e.wantStatus(r, 200)
	wantNoInvalidated(t, r)
	if got := e.localApplied(); got != before+1 {
		t.Fatalf("local invalidations %v -> %v, want one more", before, got)
	}
	e.wantKeyProblem(e.do("GET", "/api/v1/users/me", revoked, nil), 401, problem.CodeInvalidToken, "not valid")
	if got := e.core.KeyFetches.Load(); got != fetches+1 {
		t.Fatalf("key resolves %d -> %d, want the revoked key's one", fetches, got)
	}
	e.wantKeysServed(sibling)
}
