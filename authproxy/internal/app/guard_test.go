package app

import (
	"testing"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// With PROJECTION_MAX_FETCHES=1 and one projection fetch held at coreapi,
// a request needing another user's projection is answered 503 with
// Retry-After at once, and served once the fetch completes.
func TestProjectionFetchBound(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"PROJECTION_MAX_FETCHES": "1"}})
	first := e.token(nil)
	other := e.token(func(c testenv.Claims) { c["sub"] = "00000000-0000-4000-8000-0000000000b2" })
	p := defaultProjection()
	p.UserID = "00000000-0000-4000-8000-0000000000b2"
	e.core.SetProjection(p)

	gate, started := make(chan struct{}), make(chan struct{}, 1)
	e.core.ProjectionGate.Store(&gate)
	e.core.ProjectionStarted.Store(&started)
	held := make(chan result, 1)
	go func() { held <- e.do("GET", "/api/v1/users/me", first, nil) }()
	<-started

	r := e.do("GET", "/api/v1/users/me", other, nil)
	e.wantProblem(r, 503, problem.CodeUpstreamDown)
	if r.header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	if got := e.core.ProjectionFetches.Load(); got != 1 {
		t.Fatalf("projection fetches at coreapi = %d, want 1", got)
	}
	close(gate)
	e.wantStatus(<-held, 200)
	e.wantStatus(e.do("GET", "/api/v1/users/me", other, nil), 200)
}
