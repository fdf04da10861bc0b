package tenantapi_test

import (
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// TestUnknownListParameters: a list refuses a query parameter it does not
// read (400 invalid_query naming it), where it served every row as if the
// parameter were not there: GET /users?email=x answered every member, and
// its client believed a filter had been applied. The parameters a list
// reads still work beside none other.
func TestUnknownListParameters(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	paged := []string{"/api/v1/users", "/api/v1/roles", "/api/v1/audit-events", "/api/v1/users/me/tenants"}
	for _, path := range append(paged, "/api/v1/permissions") {
		for q, field := range map[string]string{
			"email=owner@acme.test":           "email",
			"status=active":                   "status",
			"filter":                          "filter",
			"limit%20=5":                      "limit ",
			"name=x&name=y":                   "name",
			"sort=-created_at&limit=2":        "sort",
			"include_total=false&role=member": "role",
		} {
			if path == "/api/v1/permissions" && field != "status" && field != "email" {
				continue
			}
			r := w.E.Get(t, &w.Owner, path+"?"+q)
			apitest.WantProblem(t, r, 400, "invalid_query")
			if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != field {
				t.Errorf("%s?%s: errors %+v, want one naming %q", path, q, p.Errors, field)
			}
		}
		apitest.WantStatus(t, w.E.Get(t, &w.Owner, path), 200)
	}
	for _, path := range paged {
		apitest.WantStatus(t, w.E.Get(t, &w.Owner, path+"?limit=2&include_total=true"), 200)
	}
	// Two unknown parameters: both named.
	r := w.E.Get(t, &w.Owner, "/api/v1/users?email=x&status=active")
	apitest.WantProblem(t, r, 400, "invalid_query")
	if p := r.Problem(t); len(p.Errors) != 2 {
		t.Errorf("errors %+v, want both parameters named", p.Errors)
	}
}
