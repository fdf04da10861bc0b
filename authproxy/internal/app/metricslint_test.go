package app

import (
	"os"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/metricslint"
)

// TestMetricsLint: the proxy's live /metrics, after allowed (one of them
// twice: a cache hit), refused and unauthenticated requests, an open
// WebSocket and an invalidation, passes `promtool check metrics`
// (promlint) and the naming conventions of docs/operations.md, and has no
// family that stays zero but the events a healthy run does not have.
func TestMetricsLint(t *testing.T) {
	t.Parallel()
	e, _ := startStreams(t, nil)
	tok := e.token(nil)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	e.wantStatus(e.do("GET", "/api/v1/users/me", "", nil), 401)
	e.do("GET", "/api/v1/users/me", "garbage.token.x", nil)
	c, resp, err := e.dialWS("/notes/ws", bearer(tok))
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer c.Close()
	echo(t, c, "hello")
	e.publishAndWait("auth.invalidate.user.x")
	_, body := get(t, "http://"+e.admin+"/metrics")
	metricslint.LintMetrics(t, body, "authproxy_")
	if doc, err := os.ReadFile("../../../docs/operations.md"); err != nil {
		t.Fatal(err)
	} else if missing, err := metricslint.Undocumented(body, string(doc), "authproxy_"); err != nil || len(missing) > 0 {
		t.Errorf("metrics not documented in docs/operations.md: %v %v", missing, err)
	}
	metricslint.CheckAlwaysZero(t, body, "authproxy_", "../..", allowZero)
	for _, want := range []string{`authproxy_request_duration_seconds_count{code="200"} 2`, `authproxy_request_duration_seconds_count{code="401"} 2`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// allowZero are the proxy's metrics that a healthy run leaves at zero
// (failures, refusals, drops): CheckAlwaysZero lets them be all zero after
// the workload of TestMetricsLint, and checks that code updates each one
// (the test named in the reason shows it moving).
var allowZero = map[string]string{
	"authproxy_api_key_refusals_total":        "refusals of bad API keys (TestAPIKeyRefused)",
	"authproxy_api_key_uses_dropped_total":    "API-key uses past what the proxy holds between reports (TestKeyUseOverflowCounted)",
	"authproxy_api_key_uses_refused_total":    "API-key uses of usage reports coreapi refused for good (TestKeyUseDroppedWhenAReportIsRefused)",
	"authproxy_cache_evictions_total":         "entries dropped for space or expiry; the workload fills no cache",
	"authproxy_invalidation_feed_stale":       "1 while no outbox heartbeat arrives although NATS is connected (TestHeartbeatSilence)",
	"authproxy_jwks_unknown_kid_total":        "tokens naming a key that is not in the key set",
	"authproxy_outbox_relays_unheard":         "listed relays whose beat does not arrive although NATS is connected (TestUnheardRelay)",
	"authproxy_nats_heartbeat_timeout_short":  "1 while NATS_HEARTBEAT_TIMEOUT is shorter than the heartbeat rows' interval needs (TestHeartbeatTimeoutCheckedAgainstTheInterval)",
	"authproxy_lingering_connections":         "connections answered 413 whose body is still read and dropped (TestLingeringBounded)",
	"authproxy_request_body_bytes":            "body buffers of requests being read (TestBodyMemoryBounded); the workload sends no body",
	"authproxy_rules_reload_failures_total":   "refused rules files (TestRulesReloadSyntaxErrorKeepsRules)",
	"authproxy_rules_reload_refused":          "a refused rules file still in place (TestRulesReloadSyntaxErrorKeepsRules)",
	"authproxy_rules_reload_in_place_total":   "reloads of a rules file written in place (TestRulesReloadPausedInPlaceWriteKeepsRules)",
	"authproxy_streams_refused_total":         "streams refused by a cap (TestStreamLimits)",
	"authproxy_untrusted_forwarded_for_total": "X-Forwarded-For from an untrusted peer (TestUntrustedForwardedForWarned)",
	"authproxy_upstream_errors_total":         "failures talking to upstreams (TestUpstreamErrorsCounted)",
	"authproxy_upstream_retries_total":        "requests sent again after their connection closed before an answer (TestRetrySignedAnew)",
	"authproxy_upstream_stray_closes_total":   "connections closed for bytes an upstream sent outside an answer (TestStrayBytesReachNoOtherClient)",
}
