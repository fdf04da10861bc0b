package httpapi_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/pgtrace"
	"github.com/tollgate-auth/tollgate/shared/metricslint"
)

// TestMetricsLint: coreapi's /metrics, after requests of several routes
// and statuses (a 200, a 401, an unmatched 404, an internal route),
// passes `promtool check metrics` (promlint) and the naming conventions of
// docs/operations.md, and has no family that stays zero but the events a
// healthy run does not have. cmd/coreapi checks the full registry of
// `serve` too.
func TestMetricsLint(t *testing.T) {
	w := newWorld(t)
	e := w.E
	e.Registry.MustRegister(pgtrace.NewPoolCollector(e.DB.Pool))
	apitest.WantStatus(t, e.Get(t, &w.Member, "/api/v1/users/me"), 200)
	apitest.WantStatus(t, e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/users/me", Unsigned: true}), 401)
	// A route the document does not have, sent past the validator.
	if r, err := e.Client.Get(e.URL + "/api/v1/no-such-route"); err != nil {
		t.Fatal(err)
	} else if r.Body.Close(); r.StatusCode != 404 {
		t.Fatalf("unmatched route = %d, want 404", r.StatusCode)
	}
	apitest.WantStatus(t, e.Do(t, apitest.Request{Method: "GET", Path: "/internal/v1/projections/" + w.Member.UserID + "?tenant_id=" + w.A, Service: true}), 200)

	admin := httpapi.NewAdmin(e.DB.Pool, e.Registry)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = admin.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = admin.Shutdown(ctx)
	})
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	metricslint.LintMetrics(t, body, "coreapi_")
	if doc, err := os.ReadFile("../../../docs/operations.md"); err != nil {
		t.Fatal(err)
	} else if missing, err := metricslint.Undocumented(body, string(doc), "coreapi_"); err != nil || len(missing) > 0 {
		t.Errorf("metrics not documented in docs/operations.md: %v %v", missing, err)
	}
	metricslint.CheckAlwaysZero(t, body, "coreapi_", "../..", apitest.MetricsAllowedZero)
	for _, want := range []string{
		`coreapi_http_request_duration_seconds_count{code="200",method="GET",route="/api/v1/users/me"} 1`,
		`coreapi_http_request_duration_seconds_count{code="401",method="GET",route="/api/v1/users/me"} 1`,
		`coreapi_http_request_duration_seconds_count{code="404",method="GET",route="unmatched"} 1`,
		`coreapi_db_queries_per_request_count{route="/api/v1/users/me"} 2`,
		`coreapi_db_queries_per_request_count{route="/internal/v1/projections/:user_id"} 1`,
		`coreapi_identity_rejected_total{reason="missing"} 1`,
		"coreapi_db_pool_max_conns ",
		"coreapi_build_info{",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
