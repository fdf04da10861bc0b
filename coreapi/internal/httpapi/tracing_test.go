package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/tracing"
	"github.com/tollgate-auth/tollgate/shared/tracing/otlptest"
)

// The proxy's span, as its traceparent names it.
const (
	proxyTrace = "0af7651916cd43dd8448eb211c80319c"
	proxySpan  = "b7ad6b7169203331"
)

func attrOf(s tracetest.SpanStub, key string) (string, bool) {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.String(), true
		}
	}
	return "", false
}

// A request carrying the proxy's traceparent gets a server span under the
// proxy's, named after the route template, and each of its database round
// trips a span under that one (as many as the round-trip counter counts);
// its access log line carries the trace id, the caller and the duration
// in milliseconds.
func TestTracedRequest(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p, err := tracing.NewWith(tracing.Config{ServiceName: "coreapi", Sampler: "parentbased_always_on"}, sdktrace.WithSyncer(exp))
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.LogBuffer{}
	e := apitest.Start(t, apitest.Options{Tracing: p, Configure: func(o *httpapi.Options) {
		o.Logger = slog.New(tracing.LogHandler{Handler: logging.NewHandler(logs, slog.LevelInfo)})
	}})
	tn := e.SeedTenant(t, "Traced")
	id := e.SeedUserIn(t, tn.ID, "traced@example.com", "owner")
	exp.Reset()
	r := e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/users/" + id.UserID, As: &id,
		Header: http.Header{"Traceparent": {"00-" + proxyTrace + "-" + proxySpan + "-01"}}})
	apitest.WantStatus(t, r, 200)

	spans := exp.GetSpans()
	var srv *tracetest.SpanStub
	for i, s := range spans {
		if s.Name == "GET /api/v1/users/:id" {
			srv = &spans[i]
		}
	}
	if srv == nil {
		t.Fatalf("no span named after the route template among %d", len(spans))
	}
	if srv.SpanContext.TraceID().String() != proxyTrace || srv.Parent.SpanID().String() != proxySpan {
		t.Fatalf("server span trace %s parent %s, want the proxy's", srv.SpanContext.TraceID(), srv.Parent.SpanID())
	}
	for k, want := range map[string]string{"http.route": "/api/v1/users/:id", "http.response.status_code": "200",
		"tollgate.principal": "user", "tollgate.user_id": id.UserID, "tollgate.tenant_id": tn.ID} {
		if got, _ := attrOf(*srv, k); got != want {
			t.Errorf("span attribute %s = %q, want %q", k, got, want)
		}
	}
	parent := map[string]string{}
	for _, s := range spans {
		parent[s.SpanContext.SpanID().String()] = s.Parent.SpanID().String()
	}
	// under reports whether span id descends from the server span.
	under := func(id string) bool {
		for i := 0; i < 10 && id != ""; i++ {
			if id = parent[id]; id == srv.SpanContext.SpanID().String() {
				return true
			}
		}
		return false
	}
	var queries int64
	for _, s := range spans {
		if s.InstrumentationScope.Name != "github.com/exaring/otelpgx" {
			continue
		}
		if s.SpanContext.TraceID() != srv.SpanContext.TraceID() || !under(s.SpanContext.SpanID().String()) {
			t.Errorf("SQL span %q is not under the request's span", s.Name)
		}
		_, prepared := attrOf(s, "pgx.prepare_stmt.name")
		if text, ok := attrOf(s, "db.query.text"); ok && !prepared {
			queries++
			if strings.Contains(text, "traced@example.com") {
				t.Errorf("a query's arguments in its span: %s", text)
			}
		}
		if s.Name == "batch start" {
			queries++
		}
	}
	if queries == 0 || queries != r.Stats.Queries {
		t.Fatalf("%d query spans, the round-trip counter says %d", queries, r.Stats.Queries)
	}

	var line map[string]any
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `"msg":"request"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	for k, want := range map[string]any{"trace_id": proxyTrace, "principal": "user", "user_id": id.UserID, "tenant_id": tn.ID,
		"route": "/api/v1/users/:id"} {
		if line[k] != want {
			t.Errorf("access log %s = %v, want %v (%v)", k, line[k], want, line)
		}
	}
	if _, ok := line["duration_ms"].(float64); !ok {
		t.Errorf("duration_ms = %v, want a number", line["duration_ms"])
	}
}

// Without Options.Tracing nothing is traced and no line has a trace id,
// whatever traceparent the request carries.
func TestUntracedRequest(t *testing.T) {
	logs := &testkit.LogBuffer{}
	e := apitest.Start(t, apitest.Options{Configure: func(o *httpapi.Options) {
		o.Logger = logging.New(logs, slog.LevelInfo)
	}})
	tn := e.SeedTenant(t, "Untraced")
	id := e.SeedUserIn(t, tn.ID, "untraced@example.com", "owner")
	r := e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/users/me", As: &id,
		Header: http.Header{"Traceparent": {"00-" + proxyTrace + "-" + proxySpan + "-01"}}})
	apitest.WantStatus(t, r, 200)
	if strings.Contains(logs.String(), "trace_id") || !strings.Contains(logs.String(), `"principal":"user"`) {
		t.Fatalf("log:\n%s", logs)
	}
}

// TestAccessLinesThroughAccessLogger: with an AccessLogger (the command's
// buffered one), access lines go to it and the other records to Logger.
func TestAccessLinesThroughAccessLogger(t *testing.T) {
	logs, access := &testkit.LogBuffer{}, &testkit.LogBuffer{}
	e := apitest.Start(t, apitest.Options{Configure: func(o *httpapi.Options) {
		o.Logger = slog.New(logging.NewHandler(logs, slog.LevelInfo))
		o.AccessLogger = slog.New(logging.NewHandler(access, slog.LevelInfo))
	}})
	tn := e.SeedTenant(t, "Lines")
	id := e.SeedUserIn(t, tn.ID, "lines@example.com", "owner")
	apitest.WantStatus(t, e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/users/" + id.UserID, As: &id}), 200)
	if !strings.Contains(access.String(), `"msg":"request"`) || !strings.Contains(access.String(), id.UserID) {
		t.Fatalf("no access line through AccessLogger: %q", access.String())
	}
	if strings.Contains(logs.String(), `"msg":"request"`) {
		t.Fatalf("an access line through Logger: %q", logs.String())
	}
}

// A URL's query, where an identity provider's callback carries its code
// and state (and the mailed links their token), reaches neither the access
// log nor the span: both name the path (and the route template) alone.
func TestSecretQueryNotRecorded(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p, err := tracing.NewWith(tracing.Config{ServiceName: "coreapi", Sampler: "parentbased_always_on"}, sdktrace.WithSyncer(exp))
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.LogBuffer{}
	e := apitest.Start(t, apitest.Options{Tracing: p, Configure: func(o *httpapi.Options) {
		o.Logger = slog.New(tracing.LogHandler{Handler: logging.NewHandler(logs, slog.LevelInfo)})
	}})
	// The mailed links' pages are not served here (their package's tests
	// drive them); the access line and span are the middleware's, the same
	// for every route.
	targets := []string{"/api/v1/auth/oauth/google/callback?state=Secret4State&code=Secret5Code",
		"/api/v1/auth/oauth/google/callback?code=Secret6Code&state=Secret7State&error=access_denied"}
	for _, target := range targets {
		e.Do(t, apitest.Request{Method: "GET", Path: target,
			Header: http.Header{"Traceparent": {"00-" + proxyTrace + "-" + proxySpan + "-01"}}})
	}
	if n := strings.Count(logs.String(), `"msg":"request"`); n != len(targets) {
		t.Fatalf("%d access lines, want %d", n, len(targets))
	}
	if strings.Contains(logs.String(), "Secret") {
		t.Errorf("a query's secret in the log:\n%s", logs.String())
	}
	spans := exp.GetSpans()
	if len(spans) < len(targets) {
		t.Fatalf("%d spans, want at least %d", len(spans), len(targets))
	}
	for _, s := range spans {
		if strings.Contains(s.Name, "Secret") {
			t.Errorf("span name %q", s.Name)
		}
		for _, a := range s.Attributes {
			if strings.Contains(a.Value.String(), "Secret") {
				t.Errorf("span %q attribute %s = %q", s.Name, a.Key, a.Value.String())
			}
		}
	}
}

// TestUnsignedTraceparentNotAdopted: a request without an identity
// signature (not a proxy's: every request a proxy sends is signed) starts
// a trace of its own, whatever traceparent it carries; a signed one joins
// the proxy's trace.
func TestUnsignedTraceparentNotAdopted(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p, err := tracing.NewWith(tracing.Config{ServiceName: "coreapi", Sampler: "parentbased_always_on"}, sdktrace.WithSyncer(exp))
	if err != nil {
		t.Fatal(err)
	}
	e := apitest.Start(t, apitest.Options{Tracing: p})
	tp := http.Header{"Traceparent": {"00-" + proxyTrace + "-" + proxySpan + "-01"}}
	for _, tt := range []struct {
		name     string
		unsigned bool
		adopted  bool
	}{
		{"unsigned", true, false},
		{"signed", false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			exp.Reset()
			r := e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/health", Unsigned: tt.unsigned, Header: tp})
			apitest.WantStatus(t, r, 200)
			var srv *tracetest.SpanStub
			for i, s := range exp.GetSpans() {
				if s.Name == "GET /api/v1/health" {
					srv = &exp.GetSpans()[i]
				}
			}
			if srv == nil {
				t.Fatal("no server span")
			}
			if adopted := srv.SpanContext.TraceID().String() == proxyTrace; adopted != tt.adopted || adopted != srv.Parent.IsValid() {
				t.Errorf("trace %s, parent %s: adopted %v, want %v", srv.SpanContext.TraceID(), srv.Parent.SpanID(), adopted, tt.adopted)
			}
		})
	}
}

// TestEarlyRefusalsTraced: the requests refused before any middleware
// runs (a body over the limit, declared or chunked, 413; header fields
// too large, 431; a malformed head, 400; a method the server does not
// know, 501) get a server span, as the requests the router answers do (no
// such route, 404; a forged identity, 401, on its route): named after the
// route unmatched, with the status and the request id, under the proxy's span
// when the head carrying its traceparent was read. They had none. The
// spans are read from what the OTLP exporter sent.
func TestEarlyRefusalsTraced(t *testing.T) {
	rcv, err := otlptest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rcv.Close() })
	vars := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.URL(), "OTEL_TRACES_SAMPLER": "parentbased_always_on"}
	c, err := tracing.Load(func(k string) string { return vars[k] }, "coreapi")
	if err != nil {
		t.Fatal(err)
	}
	p, err := tracing.New(context.Background(), c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	e := apitest.Start(t, apitest.Options{Tracing: p, AllowUndocumented: true, Configure: func(o *httpapi.Options) { o.MaxBodyBytes = 4096 }})
	// As a proxy sends it: signed (the signature is not what is tested).
	traceparent := "X-Auth-Signature: v2=unverified\r\nTraceparent: 00-" + proxyTrace + "-" + proxySpan + "-01\r\n"
	big := strings.Repeat("x", 5000)
	for _, tt := range []struct {
		name, raw, method string
		status            int
		underProxy        bool
		route             string
	}{
		{"body over the limit", "POST /api/v1/auth/token HTTP/1.1\r\nHost: coreapi\r\n" + traceparent +
			"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n" + big, "POST", 413, true, "unmatched"},
		{"chunked body over the limit", "PATCH /api/v1/users/me HTTP/1.1\r\nHost: coreapi\r\n" + traceparent +
			"Transfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(big), big), "PATCH", 413, true, "unmatched"},
		{"header fields too large", "GET /api/v1/users HTTP/1.1\r\nHost: coreapi\r\nX-Padding: " + strings.Repeat("a", 17<<10) + "\r\n\r\n",
			"GET", 431, false, "unmatched"},
		{"malformed head", "GET /api/v1/users HTTP/1.1\r\nHost: coreapi\r\nContent-Length: many\r\n\r\n", "GET", 400, false, "unmatched"},
		{"unknown method", "PROPFIND /api/v1/users HTTP/1.1\r\nHost: coreapi\r\n" + traceparent + "\r\n", "_OTHER", 501, true, "unmatched"},
		{"no such route", "GET /api/v1/nope HTTP/1.1\r\nHost: coreapi\r\n" + traceparent + "\r\n", "GET", 404, true, "unmatched"},
		{"forged identity", "GET /api/v1/users HTTP/1.1\r\nHost: coreapi\r\n" + traceparent +
			"X-Request-Id: forged-rid\r\n\r\n", "GET", 401, true, "/api/v1/users"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rawRequest(t, e, tt.raw)
			if resp.StatusCode != tt.status {
				t.Fatalf("%d %s, want %d", resp.StatusCode, body, tt.status)
			}
			rid := resp.Header.Get("X-Request-Id")
			if err := p.ForceFlush(context.Background()); err != nil {
				t.Fatal(err)
			}
			var got *otlptest.Span
			for _, s := range rcv.Spans() {
				if s.Attrs["tollgate.request_id"] == rid && s.Kind == "SPAN_KIND_SERVER" {
					got = &s
				}
			}
			if got == nil {
				t.Fatalf("no server span of request %s among %d", rid, len(rcv.Spans()))
			}
			route := tt.route
			if want := tt.method + " " + route; got.Name != want {
				t.Errorf("span name %q, want %q", got.Name, want)
			}
			if got.Attrs["http.response.status_code"] != strconv.Itoa(tt.status) || got.Attrs["http.route"] != route {
				t.Errorf("span attributes %v", got.Attrs)
			}
			if tt.underProxy && (got.TraceID != proxyTrace || got.ParentSpanID != proxySpan) {
				t.Errorf("span in trace %s under %s, want the proxy's", got.TraceID, got.ParentSpanID)
			}
		})
	}
	if errs := rcv.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
}

// A path's length is the client's to choose, up to the header buffer: the
// access line and the span's url.path hold its first
// logging.MaxPathBytes, so that a line stays one line to the container
// runtime (16 KiB) and a span stays small.
func TestLongPathClipped(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p, err := tracing.NewWith(tracing.Config{ServiceName: "coreapi", Sampler: "parentbased_always_on"}, sdktrace.WithSyncer(exp))
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.LogBuffer{}
	e := apitest.Start(t, apitest.Options{Tracing: p, AllowUndocumented: true, Configure: func(o *httpapi.Options) {
		o.Logger = slog.New(tracing.LogHandler{Handler: logging.NewHandler(logs, slog.LevelInfo)})
	}})
	path := "/api/v1/nope/" + strings.Repeat("a", 12<<10)
	apitest.WantStatus(t, e.Do(t, apitest.Request{Method: "GET", Path: path}), 404)
	var line map[string]any
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `"msg":"request"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got, _ := line["path"].(string); got != path[:logging.MaxPathBytes] {
		t.Errorf("access log path of %d bytes, want the first %d", len(got), logging.MaxPathBytes)
	}
	var srv *tracetest.SpanStub
	for i, s := range exp.GetSpans() {
		if s.Name == "GET unmatched" {
			srv = &exp.GetSpans()[i]
		}
	}
	if srv == nil {
		t.Fatal("no server span")
	}
	if got, _ := attrOf(*srv, "url.path"); got != path[:logging.MaxPathBytes] {
		t.Errorf("span url.path of %d bytes, want the first %d", len(got), logging.MaxPathBytes)
	}
}

// A request made with an API key has the key's id on its span, beside
// the principal, user and tenant: the proxy sends it as the session id of
// an api_key principal (httpapi.APIKeyOf). A user's span has none.
func TestAPIKeyIDTraced(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p, err := tracing.NewWith(tracing.Config{ServiceName: "coreapi", Sampler: "parentbased_always_on"}, sdktrace.WithSyncer(exp))
	if err != nil {
		t.Fatal(err)
	}
	e := apitest.Start(t, apitest.Options{Tracing: p})
	tn := e.SeedTenant(t, "Keyed")
	user := e.SeedUserIn(t, tn.ID, "keyed@example.com", "owner")
	const keyID = "5f0c6a8e-3b1d-4c2e-9a7f-1e2d3c4b5a69"
	asKey := user
	asKey.Principal, asKey.SessionID = identity.PrincipalAPIKey, keyID

	serverSpan := func(as *identity.Identity) tracetest.SpanStub {
		t.Helper()
		exp.Reset()
		apitest.WantStatus(t, e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/users/" + user.UserID, As: as}), 200)
		for _, s := range exp.GetSpans() {
			if s.Name == "GET /api/v1/users/:id" {
				return s
			}
		}
		t.Fatal("no server span")
		return tracetest.SpanStub{}
	}
	s := serverSpan(&asKey)
	for k, want := range map[string]string{"tollgate.principal": "api_key", "tollgate.user_id": user.UserID,
		"tollgate.tenant_id": tn.ID, "tollgate.api_key_id": keyID} {
		if got, _ := attrOf(s, k); got != want {
			t.Errorf("span attribute %s = %q, want %q", k, got, want)
		}
	}
	if got, ok := attrOf(serverSpan(&user), "tollgate.api_key_id"); ok {
		t.Errorf("a user's span has tollgate.api_key_id %q", got)
	}
}
