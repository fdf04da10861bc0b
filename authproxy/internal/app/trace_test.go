package app

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/tollgate-auth/tollgate/shared/tracing"
)

// A client's trace context: trace id clientTrace, its span clientSpan.
const (
	clientTrace       = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpan        = "00f067aa0ba902b7"
	clientTraceparent = "00-" + clientTrace + "-" + clientSpan + "-01"
	clientTracestate  = "vendor=opaque"
	clientBaggage     = "tenant.id=someone-else"
)

// memTracer is a tracer provider sampling with sampler (and arg 0) into
// memory.
func memTracer(t *testing.T, sampler string) (*tracing.Provider, *tracetest.InMemoryExporter) {
	t.Helper()
	c, err := tracing.Load(func(k string) string {
		return map[string]string{"OTEL_TRACES_SAMPLER": sampler, "OTEL_TRACES_SAMPLER_ARG": "0"}[k]
	}, "authproxy")
	if err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	p, err := tracing.NewWith(c, sdktrace.WithSyncer(exp))
	if err != nil {
		t.Fatal(err)
	}
	return p, exp
}

// tracedEnv is a proxy tracing with sampler (and arg) into memory.
func tracedEnv(t *testing.T, sampler string, vars map[string]string) (*env, *tracetest.InMemoryExporter) {
	t.Helper()
	return tracedEnvOpt(t, sampler, envOpt{vars: vars})
}

// tracedEnvOpt is tracedEnv with o's vars and other options (such as
// slogAccess); its rules, tracing and ACCESS_LOG are tracedEnv's.
func tracedEnvOpt(t *testing.T, sampler string, o envOpt) (*env, *tracetest.InMemoryExporter) {
	t.Helper()
	p, exp := memTracer(t, sampler)
	if o.vars == nil {
		o.vars = map[string]string{}
	}
	o.vars["ACCESS_LOG"] = "true"
	o.tracing = p
	o.rules = appUpstream +
		"routes:\n  - {prefix: /notes, upstream: notes, access: protected, permissions: [tenant:read]}\n"
	return start(t, o), exp
}

// parseTP splits a traceparent into trace id, parent span id and flags.
func parseTP(t *testing.T, tp string) (traceID, spanID, flags string) {
	t.Helper()
	p := strings.Split(tp, "-")
	if len(p) != 4 || p[0] != "00" || len(p[1]) != 32 || len(p[2]) != 16 {
		t.Fatalf("traceparent %q malformed", tp)
	}
	return p[1], p[2], p[3]
}

func header(r testenv.Received, name string) string {
	if v := r.Headers[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// spanNamed returns the one exported span called name.
func spanNamed(t *testing.T, spans tracetest.SpanStubs, name string) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		var names []string
		for _, s := range spans {
			names = append(names, s.Name)
		}
		t.Fatalf("%d spans named %q, want 1 (spans: %v)", len(found), name, names)
	}
	return found[0]
}

func attr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.String()
		}
	}
	return ""
}

// accessLines are the proxy's access log lines, decoded.
func accessLines(t *testing.T, e *env) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(e.logs.String(), "\n") {
		if !strings.Contains(line, `"msg":"request"`) {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// A cold request: a server span named after the route, with child spans
// for the token verification and the projection; the projection fetch and
// the forwarded request carry the trace on (as the projection's and the
// request's span). A warm one: a token cache hit, no child spans.
func TestTracingSpans(t *testing.T) {
	t.Parallel()
	e, exp := tracedEnv(t, "always_on", nil)
	tok := e.token(nil)
	e.wantStatus(e.do("GET", "/notes/1", tok, nil), 200)

	spans := exp.GetSpans()
	srv := spanNamed(t, spans, "GET /notes")
	verify := spanNamed(t, spans, "verify token")
	proj := spanNamed(t, spans, "projection")
	if srv.SpanKind != trace.SpanKindServer || srv.Parent.IsValid() {
		t.Fatalf("server span: kind %v, parent %v; want a server root span", srv.SpanKind, srv.Parent)
	}
	for _, c := range []tracetest.SpanStub{verify, proj} {
		if c.Parent.SpanID() != srv.SpanContext.SpanID() || c.SpanContext.TraceID() != srv.SpanContext.TraceID() {
			t.Fatalf("%s is not a child of the request's span", c.Name)
		}
	}
	for k, want := range map[string]string{"http.route": "/notes", "tollgate.upstream": "notes", "http.response.status_code": "200",
		"tollgate.principal": "user", "tollgate.user_id": userID, "tollgate.tenant_id": tenantID, "tollgate.token_cache": "miss",
		"tollgate.outcome": "allow", "http.request.method": "GET", "url.path": "/notes/1"} {
		if got := attr(srv, k); got != want {
			t.Errorf("span attribute %s = %q, want %q", k, got, want)
		}
	}
	tid := srv.SpanContext.TraceID().String()
	// coreapi's projection route continues the trace under the projection span.
	pt := e.core.ProjectionTraceparents()
	if len(pt) != 1 {
		t.Fatalf("%d projection fetches, want 1", len(pt))
	}
	if gt, gs, flags := parseTP(t, pt[0]); gt != tid || gs != proj.SpanContext.SpanID().String() || flags != "01" {
		t.Fatalf("projection fetch traceparent %s, want trace %s under span %s", pt[0], tid, proj.SpanContext.SpanID())
	}
	// The app continues it under the request's span.
	up := e.wantSignedAt(e.up, "app-notes")
	if gt, gs, _ := parseTP(t, header(up, "Traceparent")); gt != tid || gs != srv.SpanContext.SpanID().String() {
		t.Fatalf("upstream traceparent %s, want trace %s under span %s", header(up, "Traceparent"), tid, srv.SpanContext.SpanID())
	}
	if line := accessLines(t, e)[0]; line["trace_id"] != tid {
		t.Fatalf("access log trace_id %v, want %s", line["trace_id"], tid)
	}

	exp.Reset()
	e.wantStatus(e.do("GET", "/notes/2", tok, nil), 200)
	spans = exp.GetSpans()
	if len(spans) != 1 || attr(spans[0], "tollgate.token_cache") != "hit" {
		t.Fatalf("warm request: %d spans (want the server span only), token_cache %q", len(spans), attr(spans[0], "tollgate.token_cache"))
	}
}

// A request method the proxy does not know is traced as OpenTelemetry
// names such a method (_OTHER), so that clients cannot mint span names.
func TestTracingUnknownMethod(t *testing.T) {
	t.Parallel()
	e, exp := tracedEnv(t, "always_on", nil)
	r := e.raw("PROPFIND /notes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	e.wantProblem(r, 501, problem.CodeNotImplemented)
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != "_OTHER" || attr(spans[0], "http.request.method") != "_OTHER" {
		t.Fatalf("spans %+v: want one named _OTHER", spans)
	}
}

// A traceparent from a peer outside TRUSTED_PROXY_CIDRS is neither adopted
// nor forwarded: the proxy starts a trace of its own.
func TestTracingUntrustedTraceparentNotAdopted(t *testing.T) {
	t.Parallel()
	e, exp := tracedEnv(t, "always_on", map[string]string{"TRUSTED_PROXY_CIDRS": "10.0.0.0/8"})
	tok := e.token(nil)
	e.wantStatus(e.do("GET", "/notes", tok, map[string]string{"traceparent": clientTraceparent, "tracestate": clientTracestate}), 200)
	srv := spanNamed(t, exp.GetSpans(), "GET /notes")
	if srv.Parent.IsValid() || srv.SpanContext.TraceID().String() == clientTrace {
		t.Fatalf("the untrusted client's trace was adopted: parent %v, trace %s", srv.Parent, srv.SpanContext.TraceID())
	}
	up := e.wantSignedAt(e.up, "app-notes")
	if gt, gs, _ := parseTP(t, header(up, "Traceparent")); gt != srv.SpanContext.TraceID().String() || gs != srv.SpanContext.SpanID().String() {
		t.Fatalf("upstream traceparent %s is not the proxy's span", header(up, "Traceparent"))
	}
	if ts := header(up, "Tracestate"); ts != "" {
		t.Fatalf("the client's tracestate reached the upstream: %q", ts)
	}
}

// From a trusted peer the request's span joins the client's trace under
// its span, and the tracestate travels on.
func TestTracingTrustedTraceparentAdopted(t *testing.T) {
	t.Parallel()
	e, exp := tracedEnv(t, "always_on", map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"})
	tok := e.token(nil)
	e.wantStatus(e.do("GET", "/notes", tok, map[string]string{"traceparent": clientTraceparent, "tracestate": clientTracestate}), 200)
	srv := spanNamed(t, exp.GetSpans(), "GET /notes")
	if srv.SpanContext.TraceID().String() != clientTrace || srv.Parent.SpanID().String() != clientSpan || !srv.Parent.IsRemote() {
		t.Fatalf("span trace %s parent %s, want the client's %s / %s", srv.SpanContext.TraceID(), srv.Parent.SpanID(), clientTrace, clientSpan)
	}
	up := e.wantSignedAt(e.up, "app-notes")
	if gt, gs, _ := parseTP(t, header(up, "Traceparent")); gt != clientTrace || gs != srv.SpanContext.SpanID().String() {
		t.Fatalf("upstream traceparent %s, want trace %s under the proxy's span", header(up, "Traceparent"), clientTrace)
	}
	if ts := header(up, "Tracestate"); ts != clientTracestate {
		t.Fatalf("upstream tracestate %q, want %q", ts, clientTracestate)
	}
}

// What a trusted peer sent as trace context but the proxy did not adopt
// does not travel on beside the proxy's traceparent: the tracestate of a
// traceparent that does not parse (W3C: discarded with it), one over the
// 32 members a tracestate may have, a second traceparent. The upstream
// gets exactly one traceparent, the proxy's span's.
func TestTracingTrustedPeerContextReplaced(t *testing.T) {
	t.Parallel()
	e, exp := tracedEnv(t, "always_on", map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"})
	tok := e.token(nil)
	var members []string
	for i := range 33 {
		members = append(members, "k"+strconv.Itoa(i)+"=v")
	}
	for _, tt := range []struct{ name, fields string }{
		{"malformed traceparent", "traceparent: 00-not-a-trace-01\r\ntracestate: " + clientTracestate},
		{"tracestate over 32 members", "traceparent: " + clientTraceparent + "\r\ntracestate: " + strings.Join(members, ",")},
		{"two traceparents", "traceparent: " + clientTraceparent + "\r\ntraceparent: 00-11111111111111111111111111111111-2222222222222222-01"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			exp.Reset()
			e.wantStatus(e.raw("GET /notes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+tok+"\r\n"+tt.fields+"\r\nConnection: close\r\n\r\n"), 200)
			srv := spanNamed(t, exp.GetSpans(), "GET /notes")
			up := e.wantSignedAt(e.up, "app-notes")
			tps := up.Headers["Traceparent"]
			if len(tps) != 1 {
				t.Fatalf("upstream got traceparents %q, want the proxy's alone", tps)
			}
			if gt, gs, _ := parseTP(t, tps[0]); gt != srv.SpanContext.TraceID().String() || gs != srv.SpanContext.SpanID().String() {
				t.Fatalf("upstream traceparent %s is not the proxy's span", tps[0])
			}
			if ts, want := up.Headers["Tracestate"], srv.SpanContext.TraceState().String(); len(ts) > 1 || strings.Join(ts, "") != want {
				t.Fatalf("upstream tracestate %q, want the span's %q", ts, want)
			}
		})
	}
}

// parentbased_traceidratio with ratio 0: a new trace is not recorded, but
// the decision travels on (flags 00) so coreapi does not record it either;
// a trusted parent's sampled decision is followed.
func TestTracingSampling(t *testing.T) {
	t.Parallel()
	e, exp := tracedEnv(t, "parentbased_traceidratio", map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"})
	tok := e.token(nil)
	e.wantStatus(e.do("GET", "/notes", tok, nil), 200)
	if n := len(exp.GetSpans()); n != 0 {
		t.Fatalf("%d spans recorded at ratio 0", n)
	}
	up := e.wantSignedAt(e.up, "app-notes")
	if _, _, flags := parseTP(t, header(up, "Traceparent")); flags != "00" {
		t.Fatalf("unsampled request forwarded with flags %s, want 00", flags)
	}
	e.up.Reset()
	e.wantStatus(e.do("GET", "/notes", tok, map[string]string{"traceparent": clientTraceparent}), 200)
	if len(exp.GetSpans()) == 0 {
		t.Fatal("a sampled parent's request was not recorded")
	}
	up = e.wantSignedAt(e.up, "app-notes")
	if gt, _, flags := parseTP(t, header(up, "Traceparent")); gt != clientTrace || flags != "01" {
		t.Fatalf("upstream traceparent %s, want the client's sampled trace", header(up, "Traceparent"))
	}
}

// Tracing off: the proxy adds no trace header; a client's is dropped
// unless its peer is trusted, and then passed on untouched. The access log
// has no trace_id, and its duration is duration_ms, a number.
func TestTracingOffAddsNoHeaders(t *testing.T) {
	t.Parallel()
	for _, trusted := range []bool{false, true} {
		vars := map[string]string{"ACCESS_LOG": "true", "TRUSTED_PROXY_CIDRS": "10.0.0.0/8"}
		if trusted {
			vars["TRUSTED_PROXY_CIDRS"] = "127.0.0.0/8"
		}
		e := start(t, envOpt{vars: vars, rules: appUpstream +
			"routes:\n  - {prefix: /notes, upstream: notes, access: protected, permissions: [tenant:read]}\n"})
		tok := e.token(nil)
		r := e.do("GET", "/notes", tok, nil)
		e.wantStatus(r, 200)
		up := e.wantSignedAt(e.up, "app-notes")
		if tp, ts := header(up, "Traceparent"), header(up, "Tracestate"); tp != "" || ts != "" {
			t.Fatalf("tracing off added traceparent %q tracestate %q", tp, ts)
		}
		if r.header.Get("Traceparent") != "" {
			t.Fatal("tracing off: traceparent on the response")
		}
		if pt := e.core.ProjectionTraceparents(); len(pt) != 1 || pt[0] != "" {
			t.Fatalf("tracing off: projection fetch traceparents %q", pt)
		}
		e.up.Reset()
		e.wantStatus(e.do("GET", "/notes", tok, map[string]string{"traceparent": clientTraceparent, "tracestate": clientTracestate,
			"baggage": clientBaggage}), 200)
		up = e.wantSignedAt(e.up, "app-notes")
		want, wantState, wantBaggage := "", "", ""
		if trusted {
			want, wantState, wantBaggage = clientTraceparent, clientTracestate, clientBaggage
		}
		if tp, ts := header(up, "Traceparent"), header(up, "Tracestate"); tp != want || ts != wantState {
			t.Fatalf("trusted=%v: upstream got traceparent %q tracestate %q, want %q %q", trusted, tp, ts, want, wantState)
		}
		// W3C Baggage travels with the trace context (OpenTelemetry's
		// default propagators read both): a trusted peer's alone.
		if b := header(up, "Baggage"); b != wantBaggage {
			t.Fatalf("trusted=%v: upstream got baggage %q, want %q", trusted, b, wantBaggage)
		}
		for _, line := range accessLines(t, e) {
			if _, ok := line["trace_id"]; ok {
				t.Fatalf("tracing off: access log has a trace_id: %v", line)
			}
			if _, ok := line["duration_ms"].(float64); !ok {
				t.Fatalf("duration_ms not a number: %v", line)
			}
		}
	}
}

// The access log names who the request was for; a traced request's error
// lines carry its request id and trace id.
func TestTracingLogFields(t *testing.T) {
	t.Parallel()
	e, exp := tracedEnv(t, "always_on", nil)
	tok := e.token(nil)
	first := e.do("GET", "/notes", tok, map[string]string{"X-Request-Id": "req-trace-1"})
	e.wantStatus(first, 200)
	lines := accessLines(t, e)
	if len(lines) != 1 {
		t.Fatalf("%d access lines", len(lines))
	}
	l := lines[0]
	tid := spanNamed(t, exp.GetSpans(), "GET /notes").SpanContext.TraceID().String()
	for k, want := range map[string]any{"principal": "user", "user_id": userID, "tenant_id": tenantID, "upstream": "notes",
		"route": "/notes", "request_id": first.header.Get("X-Request-Id"), "client_request_id": "req-trace-1", "trace_id": tid} {
		if l[k] != want {
			t.Errorf("access log %s = %v, want %v", k, l[k], want)
		}
	}
	if d, ok := l["duration_ms"].(float64); !ok || d <= 0 {
		t.Errorf("duration_ms = %v, want a positive number", l["duration_ms"])
	}
	if _, ok := l["duration_us"]; ok {
		t.Error("duration_us still logged")
	}
	// The same token again, answered from the caches (the warm path,
	// which reads the ids from the claims only to write this line).
	e.wantStatus(e.do("GET", "/notes", tok, nil), 200)
	if l := accessLines(t, e)[1]; l["principal"] != "user" || l["user_id"] != userID || l["tenant_id"] != tenantID {
		t.Errorf("warm request logged as %v / %v / %v", l["principal"], l["user_id"], l["tenant_id"])
	}
	// An anonymous refusal: principal anonymous, no user.
	e.wantStatus(e.do("GET", "/notes", "", nil), 401)
	if l := accessLines(t, e)[2]; l["principal"] != "anonymous" || l["user_id"] != "" {
		t.Errorf("refused request logged as %v / %v", l["principal"], l["user_id"])
	}

	// The projection service fails: the error line has both ids.
	exp.Reset()
	e.core.Shutdown()
	other := e.token(func(c testenv.Claims) { c["sub"] = "44444444-4444-4444-8444-444444444444" })
	r := e.do("GET", "/notes", other, map[string]string{"X-Request-Id": "req-trace-2"})
	if r.status != 503 {
		t.Fatalf("status %d with coreapi down, want 503", r.status)
	}
	tid = spanNamed(t, exp.GetSpans(), "GET /notes").SpanContext.TraceID().String()
	var found bool
	for _, line := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(line, `"msg":"projection fetch"`) {
			found = true
			if !strings.Contains(line, `"request_id":"`+r.header.Get("X-Request-Id")+`"`) || !strings.Contains(line, `"trace_id":"`+tid+`"`) {
				t.Fatalf("error line without the request and trace ids: %s", line)
			}
		}
	}
	if !found {
		t.Fatalf("no projection fetch error logged:\n%s", e.logs)
	}
	if s := spanNamed(t, exp.GetSpans(), "projection"); s.Status.Code.String() != "Error" {
		t.Fatalf("failed projection span status %v", s.Status)
	}
}

// A traced WebSocket closed because access was withdrawn: the log line
// says so with the request's id and trace id.
func TestTracingStreamLog(t *testing.T) {
	t.Parallel()
	c, err := tracing.Load(func(string) string { return "" }, "authproxy")
	if err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	p, err := tracing.NewWith(c, sdktrace.WithSyncer(exp))
	if err != nil {
		t.Fatal(err)
	}
	a := newStreamApp(t)
	e := start(t, envOpt{rules: a.rules(""), tracing: p})
	e.core.SetProjection(notesProjection())
	ws, _, err := e.dialWS("/notes/ws", bearer(e.token(nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	echo(t, ws, "x")
	pr := notesProjection()
	pr.Permissions = []string{"tenant:read"}
	e.core.SetProjection(pr)
	e.publish("auth.invalidate.user." + userID)
	wantClosed(t, ws, 5*time.Second)
	testenv.Eventually(t, func() error { return testenv.Contains("the log", e.logs.String(), "stream closed: access withdrawn") })
	for _, line := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(line, "stream closed: access withdrawn") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatal(err)
			}
			tid, _ := m["trace_id"].(string)
			if len(tid) != 32 || m["request_id"] == "" {
				t.Fatalf("stream log line without trace and request ids: %s", line)
			}
			found := false
			for _, s := range exp.GetSpans() {
				found = found || s.SpanContext.TraceID().String() == tid
			}
			if !found {
				t.Fatalf("trace id %s names no exported span", tid)
			}
		}
	}
}

// TestAccessLineAsLogged: the buffered access line is the line the logger
// writes (ACCESS_LOG without Hooks.Lines): the same keys in the same
// order, the same values but for the request's own (time, id, duration).
func TestAccessLineAsLogged(t *testing.T) {
	keys := func(line string) []string {
		dec := json.NewDecoder(strings.NewReader(line))
		var ks []string
		depth := 0
		for {
			tok, err := dec.Token()
			if err != nil {
				return ks
			}
			switch v := tok.(type) {
			case json.Delim:
				if v == '{' {
					depth++
				} else if v == '}' {
					depth--
				}
			case string:
				if depth == 1 && dec.More() {
					ks = append(ks, v)
					_, _ = dec.Token() // its value (all scalars)
				}
			}
		}
	}
	var lines [2]map[string]any
	var raw [2]string
	for i, slogAccess := range []bool{false, true} {
		e := start(t, envOpt{rules: notesRules, realClock: true, slogAccess: slogAccess, vars: map[string]string{"ACCESS_LOG": "true"}})
		e.core.SetProjection(notesProjection())
		e.wantStatus(e.do("GET", "/notes/1?q=\"x\"", e.token(nil), nil), 200)
		got := accessLines(t, e)
		if len(got) != 1 {
			t.Fatalf("slog %v: %d access lines", slogAccess, len(got))
		}
		lines[i] = got[0]
		for _, l := range strings.Split(e.logs.String(), "\n") {
			if strings.Contains(l, `"msg":"request"`) {
				raw[i] = l
			}
		}
	}
	if a, b := keys(raw[0]), keys(raw[1]); strings.Join(a, ",") != strings.Join(b, ",") || len(a) < 15 {
		t.Fatalf("keys\n buffered %v\n logged   %v", a, b)
	}
	for k, v := range lines[1] {
		switch k {
		case "time", "request_id", "duration_ms", "user_id", "tenant_id":
			if _, ok := lines[0][k]; !ok {
				t.Errorf("%s missing from the buffered line", k)
			}
			continue
		}
		if lines[0][k] != v {
			t.Errorf("%s: buffered %v, logged %v", k, lines[0][k], v)
		}
	}
	if _, err := time.Parse(time.RFC3339, lines[0]["time"].(string)); err != nil {
		t.Errorf("time %v: %v", lines[0]["time"], err)
	}
	if lines[0]["user_id"] != userID || lines[0]["principal"] != "user" || lines[0]["outcome"] == "" {
		t.Errorf("buffered line %v", lines[0])
	}
}

// TestStripPrefixLoggedAsRequested: the access line and the span of a
// request on a strip_prefix route name the client's path (normalized), not
// the one forwarded.
func TestStripPrefixLoggedAsRequested(t *testing.T) {
	t.Parallel()
	p, exp := memTracer(t, "always_on")
	e := start(t, envOpt{vars: map[string]string{"ACCESS_LOG": "true"}, tracing: p, rules: appUpstream +
		"routes:\n  - {prefix: /billing, upstream: notes, access: protected, strip_prefix: true}\n"})
	e.wantStatus(e.do("GET", "/billing/a/../invoices/7?due=1", e.token(nil), nil), 200)
	if got := e.up.Last(t).URI; got != "/invoices/7?due=1" {
		t.Fatalf("forwarded %s", got)
	}
	if got := attr(spanNamed(t, exp.GetSpans(), "GET /billing"), "url.path"); got != "/billing/invoices/7" {
		t.Fatalf("span url.path %q", got)
	}
	testenv.Eventually(t, func() error {
		lines := accessLines(t, e)
		if len(lines) != 1 {
			return fmt.Errorf("%d access lines", len(lines))
		}
		return testenv.Want("access line path", lines[0]["path"], any("/billing/invoices/7"))
	})
}

// The trace context of the other propagation formats an app's tracer may
// read (B3, Jaeger, OpenTracing, X-Ray, Google Cloud, Datadog, Sentry,
// Envoy's forced traces) reaches the app only from a trusted peer, as W3C's does:
// from anyone else an app reading B3 or Datadog took the client's trace id
// and its forced sampling decision, and one reading Jaeger or OpenTracing
// baggage took its tenant id, beside the proxy's traceparent.
func TestTracingOtherFormatsOnlyFromTrustedPeers(t *testing.T) {
	t.Parallel()
	sent := map[string]string{"b3": clientTrace + "-" + clientSpan + "-d", "X-B3-TraceId": clientTrace, "X-B3-SpanId": clientSpan,
		"X-B3-Flags": "1", "uber-trace-id": clientTrace + ":" + clientSpan + ":0:1", "uberctx-tenant.id": "someone-else",
		"jaeger-debug-id": "force", "ot-tracer-traceid": clientTrace, "ot-baggage-tenant.id": "someone-else",
		"X-Amzn-Trace-Id": "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1", "X-Cloud-Trace-Context": clientTrace + "/1;o=1",
		"x-datadog-trace-id": "4242", "x-datadog-sampling-priority": "2", "x-envoy-force-trace": "true", "x-client-trace-id": clientTrace,
		"elastic-apm-traceparent": clientTraceparent, "newrelic": "eyJ2IjpbMCwxXX0=", "sw8": "1-" + clientTrace + "-x-0-c2VydmljZQ==-aW5zdA==-L25vdGVz-YWRkcg==",
		"sw8-correlation": "dGVuYW50Lmlk:c29tZW9uZS1lbHNl", "X-Instana-T": clientSpan, "X-Instana-L": "1", "x-dynatrace": "FW4;0;1;2;3;0;4;5",
		"sentry-trace": clientTrace + "-" + clientSpan + "-1"}
	for _, trusted := range []bool{false, true} {
		t.Run(fmt.Sprintf("trusted=%v", trusted), func(t *testing.T) {
			vars := map[string]string{"TRUSTED_PROXY_CIDRS": "10.0.0.0/8"}
			if trusted {
				vars["TRUSTED_PROXY_CIDRS"] = "127.0.0.0/8"
			}
			e, _ := tracedEnv(t, "always_on", vars)
			tok := e.token(nil)
			for name, value := range sent { // each alone: the scan must know it
				e.up.Reset()
				e.wantStatus(e.do("GET", "/notes", tok, map[string]string{name: value}), 200)
				got := e.wantSignedAt(e.up, "app-notes").Headers
				var reached []string
				for k, vs := range got {
					if strings.EqualFold(k, name) {
						reached = vs
					}
				}
				if want := trusted; (len(reached) == 1 && reached[0] == value) != want {
					t.Errorf("%s: the upstream got %q, want the client's value %v", name, reached, want)
				}
			}
		})
	}
}

// An API key the proxy resolves at coreapi is traced as a child span of
// the request's, "api key", and the resolve carries that span's
// traceparent, so coreapi's side joins the client's trace under it. A key
// served from the cache costs no span. The resolve was neither traced nor
// linked: coreapi's span of it started a trace of its own.
func TestTracingAPIKeyResolve(t *testing.T) {
	t.Parallel()
	e, exp := tracedEnv(t, "always_on", nil)
	secret, _ := e.newAPIKey("tenant:read")
	e.wantStatus(e.do("GET", "/notes/1", "", map[string]string{"X-API-Key": secret}), 200)

	spans := exp.GetSpans()
	srv := spanNamed(t, spans, "GET /notes")
	key := spanNamed(t, spans, "api key")
	if key.Parent.SpanID() != srv.SpanContext.SpanID() || key.SpanContext.TraceID() != srv.SpanContext.TraceID() {
		t.Fatalf("the api key span is not a child of the request's span")
	}
	if attr(srv, "tollgate.principal") != "api_key" {
		t.Fatalf("principal %q, want api_key", attr(srv, "tollgate.principal"))
	}
	kt := e.core.KeyTraceparents()
	if len(kt) != 1 {
		t.Fatalf("%d key resolves, want 1", len(kt))
	}
	if gt, gs, flags := parseTP(t, kt[0]); gt != srv.SpanContext.TraceID().String() || gs != key.SpanContext.SpanID().String() || flags != "01" {
		t.Fatalf("resolve traceparent %s, want trace %s under span %s", kt[0], srv.SpanContext.TraceID(), key.SpanContext.SpanID())
	}
	for _, s := range spans {
		for _, a := range s.Attributes {
			if strings.Contains(a.Value.String(), secret) {
				t.Fatalf("span %s attribute %s holds the key", s.Name, a.Key)
			}
		}
	}

	// Warm: from the cache, no resolve and no span of it.
	exp.Reset()
	e.wantStatus(e.do("GET", "/notes/2", "", map[string]string{"X-API-Key": secret}), 200)
	if spans := exp.GetSpans(); len(spans) != 1 {
		t.Fatalf("warm key request: %d spans, want the server span only", len(spans))
	}
	if n := len(e.core.KeyTraceparents()); n != 1 {
		t.Fatalf("%d key resolves after a cached key, want 1", n)
	}
}

// A trusted peer's tracestate split over several fields (W3C Trace
// Context: one list, which may be sent as several header fields, to be
// combined) is adopted whole and travels on as one field. Only its first
// field was read, and the others removed: the vendors' entries of the
// later fields were lost.
func TestTracingTrustedTracestateFieldsCombined(t *testing.T) {
	t.Parallel()
	e, exp := tracedEnv(t, "always_on", map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"})
	tok := e.token(nil)
	e.wantStatus(e.raw("GET /notes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+tok+"\r\ntraceparent: "+clientTraceparent+
		"\r\ntracestate: vendor=opaque,other=1\r\ntracestate: third=x\r\nConnection: close\r\n\r\n"), 200)
	srv := spanNamed(t, exp.GetSpans(), "GET /notes")
	if got, want := srv.SpanContext.TraceState().String(), "vendor=opaque,other=1,third=x"; got != want {
		t.Fatalf("span tracestate %q, want %q", got, want)
	}
	up := e.wantSignedAt(e.up, "app-notes")
	if ts := up.Headers["Tracestate"]; len(ts) != 1 || ts[0] != "vendor=opaque,other=1,third=x" {
		t.Fatalf("upstream tracestate %q, want [vendor=opaque,other=1,third=x]", ts)
	}
}

// A URL's query, where coreapi's mailed links carry their token and an
// identity provider's callback its code and state, reaches neither the
// access log nor the span: both name the normalized path alone (and the
// route's prefix), while the query goes on to coreapi as it came.
func TestSecretQueryNotRecorded(t *testing.T) {
	t.Parallel()
	e, exp := tracedEnv(t, "always_on", nil)
	for _, target := range []string{
		"/verify-email?token=Secret1VerifyToken",
		"/reset-password?token=Secret2ResetToken",
		"/accept-invitation?token=Secret3InviteToken",
		"/api/v1/auth/oauth/google/callback?state=Secret4State&code=Secret5Code",
	} {
		e.core.Reset()
		e.do("GET", target, "", nil)
		if got := e.core.Last(t).URI; got != target {
			t.Errorf("coreapi got %q, want %q", got, target)
		}
	}
	lines := accessLines(t, e)
	if len(lines) != 4 {
		t.Fatalf("%d access lines, want 4", len(lines))
	}
	if strings.Contains(e.logs.String(), "Secret") {
		t.Errorf("a query's secret in the log:\n%s", e.logs.String())
	}
	for _, l := range lines {
		if p, _ := l["path"].(string); strings.Contains(p, "?") {
			t.Errorf("access log path %q holds a query", p)
		}
	}
	spans := exp.GetSpans()
	if len(spans) < 4 {
		t.Fatalf("%d spans, want at least 4", len(spans))
	}
	for _, s := range spans {
		for _, a := range s.Attributes {
			if strings.Contains(a.Value.String(), "Secret") || strings.Contains(a.Value.String(), "?") {
				t.Errorf("span %q attribute %s = %q", s.Name, a.Key, a.Value.String())
			}
		}
		if strings.Contains(s.Name, "Secret") {
			t.Errorf("span name %q", s.Name)
		}
	}
	if got := attr(spanNamed(t, spans, "GET /api/v1/auth/oauth"), "url.path"); got != "/api/v1/auth/oauth/google/callback" {
		t.Errorf("callback span url.path %q", got)
	}
}

// A path's length is the client's to choose, up to the header buffer: the
// access line and the span's url.path hold its first
// logging.MaxPathBytes, so that a line stays one line to the container
// runtime (16 KiB) and a span stays small. Both ways of writing the
// access line clip: buffered (Hooks.Lines) and through the logger.
func TestLongPathClipped(t *testing.T) {
	t.Parallel()
	for _, slogAccess := range []bool{false, true} {
		t.Run(fmt.Sprintf("slog=%v", slogAccess), func(t *testing.T) {
			e, exp := tracedEnvOpt(t, "always_on", envOpt{slogAccess: slogAccess})
			path := "/notes/" + strings.Repeat("a", 12<<10)
			e.wantStatus(e.do("GET", path, "", nil), 401)
			lines := accessLines(t, e)
			if len(lines) != 1 {
				t.Fatalf("%d access lines, want 1", len(lines))
			}
			if got, _ := lines[0]["path"].(string); got != path[:logging.MaxPathBytes] {
				t.Errorf("access log path of %d bytes, want the first %d", len(got), logging.MaxPathBytes)
			}
			if got := attr(spanNamed(t, exp.GetSpans(), "GET /notes"), "url.path"); got != path[:logging.MaxPathBytes] {
				t.Errorf("span url.path of %d bytes, want the first %d", len(got), logging.MaxPathBytes)
			}
		})
	}
}

// A WebSocket upgrade and an event stream carry the proxy's trace context
// to the app, as any forwarded request does: the traceparent the app gets
// names the proxy's server span, never the one an untrusted client sent
// (nor does the client's tracestate travel on).
func TestTracingStreamsCarryTheProxysTraceparent(t *testing.T) {
	t.Parallel()
	p, exp := memTracer(t, "always_on")
	a := newStreamApp(t)
	e := start(t, envOpt{rules: a.rules(""), tracing: p, vars: map[string]string{"TRUSTED_PROXY_CIDRS": "10.0.0.0/8"}})
	e.core.SetProjection(notesProjection())
	tok := e.token(nil)
	client := http.Header{"Traceparent": {clientTraceparent}, "Tracestate": {clientTracestate}}
	check := func(kind string) {
		t.Helper()
		got := a.last(t)
		tp := got.header.Get("Traceparent")
		if tp == "" {
			t.Fatalf("%s: the app got no traceparent", kind)
		}
		tid, sid, _ := parseTP(t, tp)
		if tid == clientTrace || sid == clientSpan {
			t.Fatalf("%s: the app got the untrusted client's trace context %s", kind, tp)
		}
		if ts := got.header.Get("Tracestate"); ts != "" {
			t.Fatalf("%s: the client's tracestate reached the app: %q", kind, ts)
		}
		// The span covers the stream's opening: it is exported once the
		// answer went out.
		testenv.Eventually(t, func() error {
			for _, s := range exp.GetSpans() {
				if s.SpanContext.TraceID().String() == tid && s.SpanContext.SpanID().String() == sid {
					if s.SpanKind != trace.SpanKindServer || s.Parent.IsValid() {
						return fmt.Errorf("%s: the app's parent span %s is a %v span under %v, want the proxy's root server span", kind, sid, s.SpanKind, s.Parent)
					}
					return nil
				}
			}
			return fmt.Errorf("%s: the app's traceparent %s names no span of the proxy", kind, tp)
		})
	}

	h := bearer(tok)
	for k, v := range client {
		h[k] = v
	}
	ws, _, err := e.dialWS("/notes/ws", h)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	echo(t, ws, "x")
	check("websocket")

	req, _ := http.NewRequest("GET", "http://"+e.addr+"/notes/events", nil)
	req.Header = h.Clone()
	req.Header.Set("Accept", "text/event-stream")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("event stream answer %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	check("event stream")
}

// A collector that takes the export and never answers slows no request:
// the spans that find the export queue (here 4) full are dropped, never
// waited for, so a hundred requests complete while the only export sent
// is still held by the collector; and the proxy's shutdown gives the
// stuck export no more than its 5 s bound, not the exporter's timeout
// (here a minute).
func TestTracingCollectorDownSlowsNoRequest(t *testing.T) {
	t.Parallel()
	exports, release := make(chan struct{}, 64), make(chan struct{})
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		exports <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); collector.Close() })
	e := start(t, envOpt{rules: appUpstream + "routes:\n  - {prefix: /notes, upstream: notes, access: protected, permissions: [tenant:read]}\n",
		vars: map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL, "OTEL_TRACES_SAMPLER": "always_on",
			"OTEL_BSP_MAX_QUEUE_SIZE": "4", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1", "OTEL_BSP_SCHEDULE_DELAY": "10",
			"OTEL_EXPORTER_OTLP_TIMEOUT": "60000", "OTEL_BSP_EXPORT_TIMEOUT": "60000",
		}})
	tok := e.token(nil)
	e.wantStatus(e.do("GET", "/notes", tok, nil), 200)
	select {
	case <-exports: // the exporter is stuck on the collector from now on
	case <-time.After(10 * time.Second):
		t.Fatal("no export reached the collector")
	}
	done := make(chan error, 1)
	began := time.Now()
	go func() {
		for i := 0; i < 100; i++ {
			req, _ := http.NewRequest("GET", "http://"+e.addr+"/notes", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			r, err := e.client.Do(req)
			if err != nil {
				done <- fmt.Errorf("request %d: %w", i, err)
				return
			}
			r.Body.Close()
			if r.StatusCode != 200 {
				done <- fmt.Errorf("request %d: status %d", i, r.StatusCode)
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("100 requests not done within 5 s while the collector holds an export: requests wait for the exporter")
	}
	t.Logf("100 requests in %v with the collector stuck", time.Since(began))
	if n := len(exports); n != 0 {
		t.Fatalf("%d more exports reached the collector; want the first one still held", n)
	}
	e.cancel()
	began = time.Now()
	select {
	case err := <-e.done:
		e.done <- err // for the cleanup
	case <-time.After(15 * time.Second):
		t.Fatal("the proxy did not stop within 15 s: its shutdown waits for the stuck export")
	}
	if d := time.Since(began); d > 8*time.Second {
		t.Fatalf("shutdown took %v; the tracing shutdown's bound is 5 s", d)
	}
	t.Logf("shutdown in %v with the collector stuck", time.Since(began))
}
