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

// The token cache's hit ratio is its own: a refused token answered from
// the negative cache (token_negative) is no hit of a valid token's entry.
func TestProxyCountersHitRatios(t *testing.T) {
	parse := func(text string) sample {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, text) }))
		defer srv.Close()
		return scrape(srv.URL)
	}
	before := parse(`authproxy_cache_hits_total{cache="token"} 0
authproxy_cache_misses_total{cache="token"} 0
authproxy_cache_hits_total{cache="token_negative"} 0
authproxy_cache_hits_total{cache="projection"} 0
authproxy_cache_misses_total{cache="projection"} 0
authproxy_token_verifications_total{result="ok"} 0
`)
	// 2,000 requests: 900 valid tokens found, 100 verified, and 1,000
	// refused tokens answered from the negative cache.
	after := parse(`authproxy_cache_hits_total{cache="token"} 900
authproxy_cache_misses_total{cache="token"} 100
authproxy_cache_hits_total{cache="token_negative"} 1000
authproxy_cache_hits_total{cache="projection"} 1000
authproxy_cache_misses_total{cache="projection"} 0
authproxy_token_verifications_total{result="ok"} 100
`)
	got := map[string]float64{}
	for _, c := range proxyCounters(before, after, 2000) {
		got[c.label] = c.value
	}
	if got["token cache hit ratio"] != 0.9 || got["projection cache hit ratio"] != 1 || got["signature verifications / request"] != 0.05 {
		t.Fatalf("counters %v; want a token hit ratio of 0.9 (not 0.95, with the negative cache's hits), projection 1, 0.05 verifications a request", got)
	}
}
