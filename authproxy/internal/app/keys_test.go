package app

import (
	"fmt"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestKeysChangedEvent: when coreapi announces auth.keys.changed, the proxy
// refetches the JWKS at once, whatever the unknown-kid cooldown and the
// refresh interval, and a cached token of a key that left the set is
// refused from then on; tokens of the remaining key keep working.
func TestKeysChangedEvent(t *testing.T) {
	e := start(t, envOpt{vars: map[string]string{"JWKS_REFETCH_COOLDOWN": "1h", "JWKS_REFRESH_INTERVAL": "1h"}})
	next := testenv.NewKey(t, "20260201T000000Z-0000bbbb", jwa.EdDSA)
	e.core.Publish(e.key, next)
	old := e.token(nil)
	e.wantStatus(e.do("GET", "/api/v1/users/me", old, nil), 200) // verified and cached

	// coreapi drops the old key; without an event the proxy still trusts
	// its cached copy of the set (until the hourly refresh).
	e.core.Publish(next)
	e.wantStatus(e.do("GET", "/api/v1/users/me", old, nil), 200)

	fetches := e.core.JWKSFetches.Load()
	events := func() float64 { return testutil.ToFloat64(e.app.Metrics.Invalidations.WithLabelValues("keys")) }
	before := events()
	published := time.Now()
	e.publish(invalidation.SubjectKeysChanged)
	eventually.Within(t, time.Second, func() error {
		r := e.do("GET", "/api/v1/users/me", old, nil)
		if r.status != 401 {
			return fmt.Errorf("token of the removed key: status %d, want 401", r.status)
		}
		if r.prob.Code != problem.CodeInvalidToken {
			return fmt.Errorf("token of the removed key: code %q, want %s", r.prob.Code, problem.CodeInvalidToken)
		}
		return nil
	})
	t.Logf("refused %s after the event", time.Since(published))
	if got := e.core.JWKSFetches.Load() - fetches; got < 1 {
		t.Fatalf("JWKS fetches after the event = %d, want at least 1", got)
	}
	if got := events() - before; got != 1 {
		t.Fatalf("keys events counted = %v, want 1", got)
	}
	fresh := testenv.Sign(t, next, testenv.DefaultClaims(time.Now(), userID, tenantID, sessionID), nil)
	e.wantStatus(e.do("GET", "/api/v1/users/me", fresh, nil), 200)

	// A second change right after the first is fetched too: the cooldown
	// of unknown kids does not apply to announced changes.
	third := testenv.NewKey(t, "20260301T000000Z-0000cccc", jwa.EdDSA)
	e.core.Publish(third)
	fetches = e.core.JWKSFetches.Load()
	e.publish(invalidation.SubjectKeysChanged)
	eventually.Within(t, time.Second, func() error {
		if e.core.JWKSFetches.Load() == fetches {
			return fmt.Errorf("no JWKS fetch after the second event")
		}
		r := e.do("GET", "/api/v1/users/me", fresh, nil)
		if r.status != 401 {
			return fmt.Errorf("token of the second removed key: status %d, want 401", r.status)
		}
		return nil
	})
}

// TestUnknownKidWhileKeySetUnreachable: a token of a key the proxy does
// not hold yet, while coreapi's key set cannot be fetched, is 503 with
// Retry-After (whether the key is coreapi's new one cannot be known), not
// only for the request whose refetch failed but for those that follow
// within the refetch cooldown, which try no fetch of their own; once the
// set is fetched again the token is served.
func TestUnknownKidWhileKeySetUnreachable(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"JWKS_REFETCH_COOLDOWN": "1m", "JWKS_REFRESH_INTERVAL": "1h"}})
	next := testenv.NewKey(t, "20260201T000000Z-0000bbbb", jwa.EdDSA)
	tok := testenv.Sign(t, next, testenv.DefaultClaims(time.Now(), userID, tenantID, sessionID), nil)
	e.core.SetJWKSStatus(500)
	e.clock.Advance(2 * time.Minute) // past the cooldown of the start's fetch
	for i := range 3 {
		r := e.do("GET", "/api/v1/users/me", tok, nil)
		if r.status != 503 || r.prob.Code != problem.CodeUpstreamDown || r.header.Get("Retry-After") == "" {
			t.Fatalf("request %d: status %d, code %q, Retry-After %q; want 503, %s and Retry-After",
				i, r.status, r.prob.Code, r.header.Get("Retry-After"), problem.CodeUpstreamDown)
		}
	}
	e.core.SetJWKSStatus(200)
	e.core.Publish(e.key, next)
	e.clock.Advance(2 * time.Minute) // the cooldown is over
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
}

// TestKeyOpsWithoutVerifyNotUsed: a published key whose key_ops (RFC 7517
// section 4.3) do not include "verify" (a key meant for encryption, or
// one whose publisher says it must verify nothing) verifies no token,
// whatever its use and alg say; a key whose key_ops name verify does.
func TestKeyOpsWithoutVerifyNotUsed(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		ops  []string
		want int
	}{
		{"verify", []string{"verify"}, 200},
		{"sign and verify", []string{"sign", "verify"}, 200},
		{"encrypt", []string{"encrypt"}, 401},
		{"wrapKey", []string{"wrapKey", "unwrapKey"}, 401},
		{"sign only", []string{"sign"}, 401},
		{"empty", []string{}, 401},
	}
	var keys []*testenv.Key
	for i, tc := range cases {
		k := testenv.NewKey(t, fmt.Sprintf("20260101T000000Z-ops%05d", i), jwa.EdDSA)
		k.Ops = tc.ops
		keys = append(keys, k)
	}
	e := start(t, envOpt{prepare: func(e *env, _ map[string]string) { e.core.Publish(append(keys, e.key)...) }})
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := e.with(t)
			e.core.Reset()
			tok := testenv.Sign(t, keys[i], testenv.DefaultClaims(time.Now(), userID, tenantID, sessionID), nil)
			r := e.do("GET", "/api/v1/users/me", tok, nil)
			if tc.want == 200 {
				e.wantStatus(r, 200)
				e.wantSigned()
				return
			}
			e.wantProblem(r, 401, problem.CodeInvalidToken)
			e.wantNothingForwarded()
		})
	}
}
