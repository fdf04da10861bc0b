package auth_test

import (
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// A User-Agent that is not valid UTF-8 (HTTP allows obs-text bytes) or is
// over-long does not fail a sign-in: the session keeps a cleaned copy.
func TestSignInWithBinaryUserAgent(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	ua := http.Header{"User-Agent": {"Mozilla/5.0 \xff\xfe caf\xe9"}}
	r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/signup", Header: ua,
		Body: map[string]string{"email": "ua@example.com", "password": pw, "tenant_name": "UA"}})
	if r.Status != http.StatusCreated {
		t.Fatalf("signup: %d %s", r.Status, r.Body)
	}
	r = e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Header: ua,
		Body: map[string]string{"grant_type": "password", "email": "ua@example.com", "password": pw}})
	if r.Status != http.StatusOK {
		t.Fatalf("password grant: %d %s", r.Status, r.Body)
	}
}
