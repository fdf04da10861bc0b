package app

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/buildinfo"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// /readyz waits for the key set; /healthz is up at once.
func TestReadinessWaitsForJWKS(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{noPublish: true})
	e.core.SetJWKSStatus(500)
	testenv.Eventually(t, func() error {
		c, err := net.Dial("tcp", e.admin)
		if err == nil {
			c.Close()
		}
		return err
	})
	if code, _ := get(t, "http://"+e.admin+"/healthz"); code != 200 {
		t.Fatalf("healthz = %d, want 200", code)
	}
	if code, _ := get(t, "http://"+e.admin+"/readyz"); code != 503 {
		t.Fatalf("readyz without keys = %d, want 503", code)
	}
	// Protected requests cannot succeed without keys: 503, not 401.
	tok := e.token(nil)
	r := e.do("GET", "/api/v1/users/me", tok, nil)
	e.wantStatus(r, 503)
	e.core.SetJWKSStatus(200)
	e.core.Publish(e.key)
	testenv.Eventually(t, func() error {
		code, _ := get(t, "http://"+e.admin+"/readyz")
		return testenv.Want("/readyz status", code, 200)
	})
	e.clock.Advance(2 * time.Minute) // past the refetch cooldown
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
}

// The metrics the runbook relies on are exported.
func TestMetricsExported(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	tok := e.token(nil)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	e.do("GET", "/api/v1/users/me", "garbage.token.x", nil)
	e.publishAndWait("auth.invalidate.user.x")
	_, body := get(t, "http://"+e.admin+"/metrics")
	bl := buildinfo.Read().Labels()
	for _, want := range []string{
		fmt.Sprintf(`authproxy_build_info{goversion=%q,revision=%q,version=%q} 1`, bl[2], bl[1], bl[0]),
		`authproxy_request_duration_seconds_count{code="200"} 2`,
		`authproxy_request_duration_seconds_count{code="401"} 1`,
		"authproxy_auth_duration_seconds_count 2",
		`authproxy_token_verifications_total{result="ok"} 1`,
		`authproxy_cache_hits_total{cache="token"} 1`,
		`authproxy_cache_misses_total{cache="token"} 2`,
		`authproxy_cache_hits_total{cache="projection"} 1`,
		`authproxy_cache_misses_total{cache="projection"} 1`,
		`authproxy_cache_evictions_total{cache="projection"}`,
		"authproxy_jwks_age_seconds",
		"authproxy_jwks_unknown_kid_total",
		"authproxy_upstream_errors_total",
		"authproxy_nats_connected 1",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	for _, name := range []string{`authproxy_invalidations_received_total{kind="user"}`, "authproxy_invalidation_lag_seconds_count"} {
		if v := metricValue(body, name); v < 1 {
			t.Errorf("%s = %v, want >= 1", name, v)
		}
	}
}

func metricValue(body, name string) float64 {
	for _, l := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(l, name+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

func TestPprofOnlyWhenEnabled(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{false, true} {
		vars := map[string]string{}
		if on {
			vars["PROXY_PPROF"] = "true"
		}
		e := start(t, envOpt{vars: vars})
		code, _ := get(t, "http://"+e.admin+"/debug/pprof/cmdline")
		if want := map[bool]int{false: 404, true: 200}[on]; code != want {
			t.Fatalf("PROXY_PPROF=%v: /debug/pprof/cmdline = %d, want %d", on, code, want)
		}
	}
}

func TestUpstreamErrorsCounted(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	e.core.Shutdown()
	e.do("POST", "/api/v1/auth/token", "", nil)
	_, body := get(t, "http://"+e.admin+"/metrics")
	if !strings.Contains(body, `authproxy_upstream_errors_total{kind="connect",target="forward"} 1`) {
		t.Fatalf("upstream error not counted:\n%s", grep(body, "upstream_errors"))
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Shutdown marks the proxy not ready, lets an in-flight request
// finish, and returns.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	tok := e.token(nil)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	gate := make(chan struct{})
	e.core.StreamGate.Store(&gate)
	req, _ := http.NewRequest("GET", "http://"+e.addr+"/api/v1/users/stream", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	e.cancel()
	testenv.Eventually(t, func() error { return testenv.Want("ready", e.app.Ready(), false) })
	close(gate)
	b, err := io.ReadAll(resp.Body)
	if err != nil || len(b) != 2*testenv.StreamChunk {
		t.Fatalf("in-flight response: %d bytes, %v", len(b), err)
	}
	select {
	case err := <-e.done:
		if err != nil {
			t.Fatalf("Serve returned %v", err)
		}
		e.done <- nil // for the cleanup
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
		t.Fatal("still accepting connections after shutdown")
	}
	_ = context.Background()
}

// A request answered from the caches reads no clock for its access
// decision: it is recorded in authproxy_auth_duration_seconds as taking no
// time (its auth work is far below the first bucket), while one that
// verified its token and fetched its projection is timed.
func TestAuthDurationOfWarmRequests(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	tok := e.token(nil)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200) // cold: verified and fetched
	sum := func() float64 {
		_, body := get(t, "http://"+e.admin+"/metrics")
		for _, line := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(line, "authproxy_auth_duration_seconds_sum "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatal(err)
				}
				return f
			}
		}
		t.Fatal("no authproxy_auth_duration_seconds_sum")
		return 0
	}
	cold := sum()
	if cold <= 0 {
		t.Fatalf("the cold request was recorded as taking %v s", cold)
	}
	for range 5 {
		e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	}
	if got := sum(); got != cold {
		t.Fatalf("auth duration sum went from %v to %v over 5 warm requests; want unchanged", cold, got)
	}
	_, body := get(t, "http://"+e.admin+"/metrics")
	if !strings.Contains(body, "authproxy_auth_duration_seconds_count 6") {
		t.Fatal("warm requests not counted in authproxy_auth_duration_seconds")
	}
}

// Without an injected clock a request's start is the time fasthttp read
// for it: the durations recorded are those of the requests (not measured
// from the zero time, nor negative).
func TestRequestDurationWithFasthttpClock(t *testing.T) {
	e := start(t, envOpt{realClock: true})
	tok := e.token(nil)
	for range 3 {
		e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	}
	_, body := get(t, "http://"+e.admin+"/metrics")
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, `authproxy_request_duration_seconds_sum{code="200"} `); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			sum = f
		}
	}
	if !strings.Contains(body, `authproxy_request_duration_seconds_count{code="200"} 3`) {
		t.Fatal("the three requests are not counted")
	}
	if sum <= 0 || sum > 30 {
		t.Fatalf("three requests took %v s in total by the proxy's clock", sum)
	}
}
