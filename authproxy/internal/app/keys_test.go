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
