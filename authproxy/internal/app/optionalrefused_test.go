package app

import (
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestOptionalRouteRefusesStaleToken: on an app's optional route, a
// well-signed token that is no longer good (its user disabled, its session
// revoked, its tv behind the projection's token version, expired, or made
// for another audience or issuer) is 401 invalid_token and nothing is
// forwarded: the anonymous fall-back is for a request without a bearer
// (and for the token endpoint alone, Route.IgnoreBadBearer), never for a
// bearer the proxy refused. A public route of the same app does not look
// at the bearer: it forwards the request as anonymous, without the token,
// which is one of coreapi's (docs/security.md).
func TestOptionalRouteRefusesStaleToken(t *testing.T) {
	t.Parallel()
	const rulesFile = appUpstream + `
routes:
  - {prefix: /notes/maybe, upstream: notes, access: optional}
  - {prefix: /notes/public, upstream: notes, access: public}
`
	e := start(t, envOpt{rules: rulesFile})
	past := func(c testenv.Claims) {
		at := time.Now().Add(-time.Hour)
		c["iat"], c["nbf"], c["exp"] = at.Add(-time.Minute).Unix(), at.Add(-time.Minute).Unix(), at.Unix()
	}
	for _, tc := range []struct {
		name   string
		claims func(testenv.Claims)
		// change, when set, is made to the projection once the token has
		// been served on the optional route (its projection cached), and
		// announced as coreapi announces it.
		change func(p *identity.Projection)
		// valid: the token is good, and the optional route forwards its user.
		valid bool
	}{
		{name: "valid", valid: true},
		{name: "user disabled", change: func(p *identity.Projection) { p.UserStatus = "disabled" }},
		{name: "session revoked", change: func(p *identity.Projection) { p.RevokedSessions = []string{sessionID} }},
		{name: "tv behind the token version", change: func(p *identity.Projection) { p.TokenVersion = 1 }},
		{name: "expired", claims: past},
		{name: "another audience", claims: func(c testenv.Claims) { c["aud"] = "another-service" }},
		{name: "another issuer", claims: func(c testenv.Claims) { c["iss"] = "https://issuer.example.net" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.with(t)
			p := defaultProjection()
			e.core.DeleteProjection(userID, tenantID)
			e.core.SetProjection(p)
			e.publishAndWait(invalidation.SubjectAll)
			tok := e.token(tc.claims)
			if tc.change != nil {
				// Served first: the refusal below is the invalidation's
				// doing, not a first fetch.
				e.reset()
				e.wantStatus(e.do("GET", "/notes/maybe", tok, nil), 200)
				e.wantSignedAt(e.up, testenv.AppKey.ID)
				tc.change(&p)
				e.core.SetProjection(p)
				e.publishAndWait(invalidation.UserSubject(userID))
			}
			e.reset()
			r := e.do("GET", "/notes/maybe/1", tok, nil)
			if tc.valid {
				e.wantStatus(r, 200)
				e.wantSignedAt(e.up, testenv.AppKey.ID)
			} else {
				e.wantProblem(r, 401, problem.CodeInvalidToken)
				e.wantNothingForwarded()
			}
			e.reset()
			e.wantStatus(e.do("GET", "/notes/public/1", tok, nil), 200)
			got := e.wantAnonymousAt(e.up, testenv.AppKey.ID)
			if got.Headers["Authorization"] != nil {
				t.Fatalf("public route forwarded the token: %v", got.Headers["Authorization"])
			}
		})
	}
}
