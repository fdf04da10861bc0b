package verify_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/identity/identitytest"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
)

// TestMiddlewareVectors runs the test vectors through the middleware as
// requests, in order and through one Verifier, as the page says a verifier
// passes them: every case gets its verdict and the reason it logs, and each
// valid one sent again is a replay.
func TestMiddlewareVectors(t *testing.T) {
	identitytest.Run(t, func(v *verify.Verifier) func(*http.Request) int {
		h := v.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		return func(r *http.Request) int {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			return rec.Code
		}
	})
}
