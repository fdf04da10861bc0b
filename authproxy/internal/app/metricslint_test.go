package app

import (
	"os"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/metricslint"
)

// TestMetricsLint: the proxy's live /metrics, after allowed, refused and
// unauthenticated requests and an invalidation, passes `promtool check
// metrics` (promlint) and the naming conventions of docs/operations.md.
func TestMetricsLint(t *testing.T) {
	e := start(t, envOpt{})
	tok := e.token(nil)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	e.wantStatus(e.do("GET", "/api/v1/users/me", "", nil), 401)
	e.do("GET", "/api/v1/users/me", "garbage.token.x", nil)
	e.publishAndWait("auth.invalidate.user.x")
	_, body := get(t, "http://"+e.admin+"/metrics")
	metricslint.LintMetrics(t, body, "authproxy_")
	if doc, err := os.ReadFile("../../../docs/operations.md"); err != nil {
		t.Fatal(err)
	} else if missing, err := metricslint.Undocumented(body, string(doc), "authproxy_"); err != nil || len(missing) > 0 {
		t.Errorf("metrics not documented in docs/operations.md: %v %v", missing, err)
	}
	for _, want := range []string{`authproxy_request_duration_seconds_count{code="200"} 1`, `authproxy_request_duration_seconds_count{code="401"} 2`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
