package oauth_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestLinkOversizedCodesSaySo: a link ticket or a link code longer than
// any this service hands out (512 characters) is 400 invalid_request that
// says it is too long: it said the parameter was required, which it was
// given. An empty one still says it is required.
func TestLinkOversizedCodesSaySo(t *testing.T) {
	x := start(t)
	me := x.signedInOwner(t, "oversized@example.com")
	long := strings.Repeat("x", 513)
	for _, c := range []struct {
		name, want string
		r          apitest.Response
	}{
		{"long ticket", "too long", x.Send(t, nil, http.MethodGet, "/api/v1/auth/oauth/fake/link?ticket="+long, nil)},
		{"empty ticket", "required", x.Send(t, nil, http.MethodGet, "/api/v1/auth/oauth/fake/link?ticket=", nil)},
		{"long link code", "too long", x.confirmLink(t, me, map[string]string{"link_code": long})},
		{"empty link code", "required", x.confirmLink(t, me, map[string]string{"link_code": ""})},
	} {
		apitest.WantProblem(t, c.r, http.StatusBadRequest, problem.CodeInvalidRequest)
		if d := c.r.Problem(t).Detail; !strings.Contains(d, c.want) {
			t.Errorf("%s: detail %q, want it to say %q", c.name, d, c.want)
		}
	}
}
