package tenantapi_test

import (
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// TestEmptyPageParameters: a list's limit, cursor or include_total sent
// without a value (limit=, or limit alone) is 400 invalid_query naming it,
// as a malformed one is; it was served as if left out (the default page
// size, the first page, no total), so a client that lost the value on its
// way into the URL got another page than the one it meant, without a word.
// Left out, each still takes its default.
func TestEmptyPageParameters(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for _, path := range []string{"/api/v1/users", "/api/v1/roles", "/api/v1/audit-events", "/api/v1/users/me/tenants"} {
		for q, field := range map[string]string{
			"limit=":                              "limit",
			"limit":                               "limit",
			"cursor=":                             "cursor",
			"cursor":                              "cursor",
			"include_total=":                      "include_total",
			"include_total":                       "include_total",
			"limit=2&cursor=&include_total=false": "cursor",
		} {
			r := w.E.Get(t, &w.Owner, path+"?"+q)
			apitest.WantProblem(t, r, 400, "invalid_query")
			if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != field {
				t.Errorf("%s?%s: errors %+v, want one naming %s", path, q, p.Errors, field)
			}
		}
		apitest.WantStatus(t, w.E.Get(t, &w.Owner, path), 200)
		apitest.WantStatus(t, w.E.Get(t, &w.Owner, path+"?limit=2&include_total=false"), 200)
	}
}
