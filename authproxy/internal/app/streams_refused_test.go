package app

import (
	"bufio"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// closedStreams is the count of streams of kind closed for reason, read
// from the registry (the admin listener is gone once the proxy stopped).
func closedStreams(t *testing.T, e *env, kind, reason string) float64 {
	t.Helper()
	mfs, err := e.app.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "authproxy_streams_closed_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["kind"] == kind && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// logged reports whether the log has a line with msg whose reason is
// reason.
func logged(e *env, msg, reason string) bool {
	sc := bufio.NewScanner(strings.NewReader(e.logs.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, `"msg":"`+msg+`"`) && (reason == "" || strings.Contains(l, `"reason":"`+reason+`"`)) {
			return true
		}
	}
	return false
}

// TestStreamRefusedDuringItsHandshake: an event stream closed while its
// upstream has not answered yet is refused with what a request on its
// route gets for the same reason, sent at the same moment: 403
// email_unverified when the route needs a verified address the user no
// longer has, 403 mfa_enrollment_required when the tenant now requires a
// second factor the user lacks, 401 insufficient_user_authentication
// (with the route's max_age, or none) when a reload has the route need a
// more recent sign-in or a second factor, 503 with Retry-After when
// coreapi cannot say whether the user still has access, and 503 with
// Retry-After when the proxy shuts down. Its upstream connection is
// closed, the closed-streams metric counts it under the reason, the
// access line carries the reason as its outcome, and the close is logged.
func TestStreamRefusedDuringItsHandshake(t *testing.T) {
	const req = "GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAuthorization: Bearer %s\r\n\r\n"
	withdrawn := "stream closed: access withdrawn"
	verified := func() identity.Projection { p := notesProjection(); p.EmailVerified = true; return p }
	signedIn := func(ago time.Duration, amr ...string) func(testenv.Claims) {
		return func(c testenv.Claims) { c["amr"] = amr; c["auth_time"] = time.Now().Add(-ago).Unix() }
	}
	for _, tc := range []struct {
		name   string
		vars   map[string]string
		route  string // attributes added to the stream's route
		claims func(testenv.Claims)
		// withdraw closes the stream; it returns false when the proxy
		// stops (no request can be compared with the refusal).
		withdraw func(t *testing.T, e *env, rules func(string) string) bool
		status   int
		code     string
		wwwAuth  string
		reason   string // the metric's reason and the access line's outcome
		log      string // the message logged with the close ("": none)
	}{
		{"email no longer verified", nil, ", require_verified_email: true", nil,
			func(t *testing.T, e *env, _ func(string) string) bool {
				e.core.SetProjection(notesProjection())
				e.publish("auth.invalidate.user." + userID)
				return true
			}, 403, problem.CodeEmailUnverified, "", "email_unverified", withdrawn},
		{"tenant now requires MFA", nil, "", signedIn(time.Minute, "pwd"),
			func(t *testing.T, e *env, _ func(string) string) bool {
				p := verified()
				p.TenantRequireMFA = true
				e.core.SetProjection(p)
				e.publish("auth.invalidate.tenant." + tenantID)
				return true
			}, 403, problem.CodeMFAEnrollmentRequired, "", "mfa_enrollment_required", withdrawn},
		{"route now needs a recent sign-in", nil, "", signedIn(2*time.Minute, "pwd", "otp"),
			func(t *testing.T, e *env, rules func(string) string) bool {
				reloadRules(t, e, rules(", max_auth_age: 1m"))
				return true
			}, 401, problem.CodeInsufficientUserAuthentication,
			`Bearer error="insufficient_user_authentication", acr_values="mfa", max_age=60`, "insufficient_user_authentication", withdrawn},
		{"route now needs a second factor", nil, "", signedIn(time.Minute, "pwd"),
			func(t *testing.T, e *env, rules func(string) string) bool {
				reloadRules(t, e, rules(", require_mfa: true"))
				return true
			}, 401, problem.CodeInsufficientUserAuthentication,
			`Bearer error="insufficient_user_authentication", acr_values="mfa"`, "insufficient_user_authentication", withdrawn},
		{"coreapi unavailable", map[string]string{"MAX_STALENESS": "0s", "PROJECTION_TIMEOUT": "200ms"}, "", nil,
			func(t *testing.T, e *env, _ func(string) string) bool {
				gate := make(chan struct{})
				e.core.ProjectionGate.Store(&gate)
				t.Cleanup(func() {
					e.core.ProjectionGate.Store(nil)
					close(gate)
				})
				e.publish("auth.invalidate.user." + userID)
				return true
			}, 503, problem.CodeUpstreamDown, "", "unavailable", "stream closed: its access could not be checked"},
		{"proxy shutting down", nil, "", nil,
			func(t *testing.T, e *env, _ func(string) string) bool {
				e.cancel()
				return false
			}, 503, problem.CodeUpstreamDown, "", "shutdown", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, held := heldUpstream(t)
			rules := func(attrs string) string {
				return "upstreams:\n  slow: {url: \"http://" + addr + "\", key_id: app-notes}\nroutes:\n" +
					"  - {prefix: /events, methods: [GET], upstream: slow, access: protected, permissions: [notes:read], stream_timeout: 1m" +
					tc.route + attrs + "}\n"
			}
			vars := map[string]string{"UPSTREAM_TIMEOUT": "30s", "LOG_LEVEL": "info", "ACCESS_LOG": "true"}
			for k, v := range tc.vars {
				vars[k] = v
			}
			e := start(t, envOpt{vars: vars, rules: rules("")})
			e.core.SetProjection(verified())
			tok := e.token(tc.claims)
			closed, answered := heldRequest(t, e, strings.Replace(req, "%s", tok, 1), held)
			running := tc.withdraw(t, e, rules)
			r := wantHeldRefused(t, closed, answered)
			e.wantProblem(r, tc.status, tc.code)
			if got := r.header.Get("WWW-Authenticate"); got != tc.wwwAuth {
				t.Fatalf("WWW-Authenticate = %q, want %q", got, tc.wwwAuth)
			}
			if got := r.header.Get("Retry-After"); (got != "") != (tc.status == 503) {
				t.Fatalf("Retry-After = %q on a %d", got, tc.status)
			}
			if running {
				// What a request on the route gets now (it never reaches
				// the upstream, which would hold it).
				again := e.do("GET", "/events", tok, nil)
				e.wantProblem(again, tc.status, tc.code)
				if got := again.header.Get("WWW-Authenticate"); got != tc.wwwAuth {
					t.Fatalf("a request's WWW-Authenticate = %q, want %q", got, tc.wwwAuth)
				}
			}
			testenv.Eventually(t, func() error { return testenv.Want("open streams", e.app.Streams.Open(), 0) })
			if n := closedStreams(t, e, "sse", tc.reason); n != 1 {
				t.Fatalf("streams closed for %s = %v, want 1", tc.reason, n)
			}
			testenv.Eventually(t, func() error {
				for _, l := range accessLines(t, e) {
					if l["request_id"] == r.prob.RequestID {
						return testenv.Want("access line outcome", l["outcome"], any(tc.reason))
					}
				}
				return errors.New("no access line yet")
			})
			if tc.log != "" && !logged(e, tc.log, "") {
				t.Fatalf("no %q in the log:\n%s", tc.log, e.logs.String())
			}
			if tc.log == withdrawn && !logged(e, tc.log, tc.reason) {
				t.Fatalf("%q logged without reason %s:\n%s", tc.log, tc.reason, e.logs.String())
			}
		})
	}
}

// reloadRules writes text as the rules file and waits until it is loaded.
func reloadRules(t *testing.T, e *env, text string) {
	t.Helper()
	gen := e.generation()
	e.writeRules(text)
	testenv.Eventually(t, func() error { return testenv.WantAbove("rules generation", e.generation(), gen) })
}
