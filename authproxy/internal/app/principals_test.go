package app

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/accountroutes"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestAccountRoutesByPrincipal walks shared/accountroutes (the table
// coreapi refuses again behind the proxy) with an API key, a service
// account's client_credentials token and a user's token, all holding
// every built-in permission: a refused principal gets 403
// principal_not_allowed and nothing reaches coreapi; a user, and a
// principal the rule does not refuse, are forwarded as themselves.
func TestAccountRoutesByPrincipal(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules})
	perms := []string{"tenant:read", "tenant:write", "users:read", "users:write", "roles:read", "roles:write", "audit:read", "api-keys:write"}
	p := defaultProjection()
	p.Permissions = perms
	e.core.SetProjection(p)
	key, _ := e.newAPIKey(perms...)
	service := e.token(func(c testenv.Claims) {
		delete(c, "sid")
		c["principal"] = "service"
		c["client_id"] = userID
	})
	creds := map[string]string{identity.PrincipalAPIKey: key, identity.PrincipalService: service, identity.PrincipalUser: e.token(nil)}
	for _, r := range accountroutes.Rules {
		path := strings.ReplaceAll(r.Path, ":id", "0b0d3c4e-0000-4000-8000-000000000001")
		methods := []string{r.Method}
		if r.Method == "GET" {
			methods = append(methods, "HEAD")
		}
		for _, method := range methods {
			for _, principal := range []string{identity.PrincipalAPIKey, identity.PrincipalService, identity.PrincipalUser} {
				t.Run(fmt.Sprintf("%s %s as %s", method, r.Path, principal), func(t *testing.T) {
					e := e.with(t)
					e.reset()
					if method == "HEAD" { // no body to read a problem from
						req, _ := http.NewRequest(method, "http://"+e.addr+path, nil)
						req.Header.Set("Authorization", "Bearer "+creds[principal])
						resp, err := http.DefaultClient.Do(req)
						if err != nil {
							t.Fatal(err)
						}
						resp.Body.Close()
						if refused := r.Refuse&accountroutes.Bit(principal) != 0; refused != (resp.StatusCode == 403) {
							t.Fatalf("HEAD: %d, refused %v", resp.StatusCode, refused)
						}
						return
					}
					res := e.do(method, path, creds[principal], nil)
					if r.Refuse&accountroutes.Bit(principal) != 0 {
						e.wantProblem(res, 403, problem.CodePrincipalNotAllowed)
						if res.prob.Detail != accountroutes.Detail(principal, &r) {
							t.Fatalf("detail = %q", res.prob.Detail)
						}
						e.wantNothingForwarded()
						return
					}
					if res.prob.Code == problem.CodePrincipalNotAllowed {
						t.Fatalf("refused: %s", res.body)
					}
					if res.status == 200 { // the rest (step-up...) is other checks' business
						if got := e.core.Last(t).Identity.Principal; got != principal {
							t.Fatalf("forwarded as %q", got)
						}
					}
				})
			}
		}
	}
	// The path is matched as coreapi routes it: after normalization.
	for _, path := range []string{"/api/v1/users/me/password/", "/api/v1//users/me/password", "/api/v1/users/./me/password"} {
		e.reset()
		e.wantProblem(e.do("PUT", path, service, nil), 403, problem.CodePrincipalNotAllowed)
		e.wantProblem(e.do("PUT", path, key, nil), 403, problem.CodePrincipalNotAllowed)
		e.wantNothingForwarded()
	}
	// What a service account keeps: itself and the tenant API.
	for _, path := range []string{"/api/v1/users/me", "/api/v1/users", "/api/v1/tenant", "/api/v1/api-keys"} {
		e.wantStatus(e.do("GET", path, service, nil), 200)
	}
	e.wantStatus(e.do("POST", "/api/v1/auth/logout", service, nil), 200)
}
