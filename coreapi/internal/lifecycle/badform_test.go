package lifecycle_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
)

// A page form value with a NUL byte or invalid UTF-8 is refused as the
// same JSON body is (bad_request), not a database error or a silently
// altered value; nothing is queried.
func TestFormBadStringsRefused(t *testing.T) {
	x := start(t, lifecycle.Limits{})
	for _, tt := range []struct{ path, body, page string }{
		{"/api/v1/auth/password/forgot", "email=a%00b@example.com", "/reset-password"},
		{"/api/v1/auth/password/forgot", "email=a%FFb@example.com", "/reset-password"},
		{"/api/v1/auth/password/reset", "token=ab%00c&new_password=correct+horse+battery", "/reset-password"},
		{"/api/v1/auth/verify-email", "token=ab%00c", "/verify-email"},
		{"/api/v1/invitations/accept", "token=abc&display_name=%FF", "/accept-invitation"},
	} {
		t.Run(tt.body, func(t *testing.T) {
			r := postForm(t, x, tt.path, tt.body)
			if loc := r.Header.Get("Location"); r.Status != http.StatusSeeOther || !strings.HasPrefix(loc, tt.page+"?error=bad_request") {
				t.Errorf("%d Location %q body %s", r.Status, loc, r.Body)
			}
			if r.Stats.Queries != 0 {
				t.Errorf("refused form ran %d queries", r.Stats.Queries)
			}
		})
	}
}
