package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestCoreCounters reads coreapi's per-route query histogram the way the
// harness scrapes it: summed over routes, per request between two scrapes.
func TestCoreCounters(t *testing.T) {
	body := ""
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, body) }))
	defer srv.Close()
	body = `# TYPE coreapi_db_queries_per_request histogram
coreapi_db_queries_per_request_sum{route="/api/v1/users/me"} 10
coreapi_db_queries_per_request_count{route="/api/v1/users/me"} 10
coreapi_db_queries_per_request_sum{route="/api/v1/users"} 4
coreapi_db_queries_per_request_count{route="/api/v1/users"} 2
`
	before := scrape(srv.URL)
	body = `# TYPE coreapi_db_queries_per_request histogram
coreapi_db_queries_per_request_sum{route="/api/v1/users/me"} 20
coreapi_db_queries_per_request_count{route="/api/v1/users/me"} 20
coreapi_db_queries_per_request_sum{route="/api/v1/users"} 16
coreapi_db_queries_per_request_count{route="/api/v1/users"} 6
`
	after := scrape(srv.URL)
	got := coreCounters(before, after)
	if len(got) != 1 || got[0].metric != coreQueries || got[0].value != 22.0/14 {
		t.Fatalf("coreCounters = %+v, want one counter of %s = %v", got, coreQueries, 22.0/14)
	}
	// An older coreapi without the metric: reported as missing, not as 0.
	body = "# TYPE db_queries_per_request histogram\ndb_queries_per_request_sum 3\ndb_queries_per_request_count 3\n"
	old := scrape(srv.URL)
	if got := coreCounters(old, old); len(got) != 1 || got[0].value != -1 {
		t.Fatalf("coreCounters without the metric = %+v, want the not-found counter", got)
	}
}
