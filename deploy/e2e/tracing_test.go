package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/tracing/otlptest"
)

// logLines decodes a service's JSON log lines (others are skipped).
func logLines(t *testing.T, svc *service) []map[string]any {
	t.Helper()
	f, err := os.Open(svc.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// linesWith are a service's log lines whose key k equals v, waited for
// up to logDelay when there are none yet (the proxy writes its access
// lines in batches).
func linesWith(t *testing.T, svc *service, k, v string) []map[string]any {
	deadline := time.Now().Add(logDelay)
	for {
		var out []map[string]any
		for _, l := range logLines(t, svc) {
			if l[k] == v {
				out = append(out, l)
			}
		}
		if len(out) > 0 || time.Now().After(deadline) {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logDelay bounds how long a line takes to reach a service's log: the
// proxy writes its access lines every 100 ms.
const logDelay = 3 * time.Second

// traceSpans is one trace's spans, with lookups (find's name may end in *).
type traceSpans []otlptest.Span

func (tr traceSpans) find(service, name string) (otlptest.Span, bool) {
	for _, s := range tr {
		if s.Service == service && (s.Name == name || strings.HasSuffix(name, "*") && strings.HasPrefix(s.Name, name[:len(name)-1])) {
			return s, true
		}
	}
	return otlptest.Span{}, false
}

// descends reports whether span id has ancestor anc within the trace.
func (tr traceSpans) descends(id, anc string) bool {
	parent := map[string]string{}
	for _, s := range tr {
		parent[s.SpanID] = s.ParentSpanID
	}
	for i := 0; i < 20 && id != ""; i++ {
		if id = parent[id]; id == anc {
			return true
		}
	}
	return false
}

func (tr traceSpans) String() string {
	var b strings.Builder
	for _, s := range tr {
		fmt.Fprintf(&b, "  %s %q %s parent=%s scope=%s\n", s.Service, s.Name, s.SpanID, s.ParentSpanID, s.Scope)
	}
	return b.String()
}

// A request through proxy A to core A (tracing on in both, exported over
// OTLP/HTTP to the suite's receiver) is one trace: the proxy's server
// span; under it the projection span, under which core A's projection
// route and its SQL; and core A's span of the request itself with its SQL.
// Both services' log lines of the request carry the trace id.
func TestTraceAcrossProxyCoreAndSQL(t *testing.T) {
	a := signup(t, sys.proxyA)
	r, err := sendWith("GET", sys.proxyA.url("/api/v1/users/me"), a.Tokens.AccessToken, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, r, http.StatusOK)
	rid := r.Header.Get("X-Request-Id") // the proxy's: the suite's client is no trusted peer

	var tr traceSpans
	var proxy, core otlptest.Span
	deadline := time.Now().Add(10 * time.Second)
	for {
		all := sys.otlp.Spans()
		tr = nil
		for _, s := range all {
			if s.Service == "authproxy" && s.Attrs["tollgate.request_id"] == rid && s.Kind == "SPAN_KIND_SERVER" {
				proxy = s
			}
		}
		if proxy.TraceID != "" {
			for _, s := range all {
				if s.TraceID == proxy.TraceID {
					tr = append(tr, s)
				}
			}
		}
		var ok bool
		core, ok = tr.find("coreapi", "GET /api/v1/users/me")
		_, okProj := tr.find("coreapi", "GET /internal/v1/projections/*")
		if ok && okProj {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no complete trace for request %s after 10 s (receiver errors %v); spans of its trace:\n%s", rid, sys.otlp.Errors(), tr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // the SQL spans of the last batch
	for _, s := range sys.otlp.Spans() {
		if s.TraceID == proxy.TraceID && s.Scope == "github.com/exaring/otelpgx" {
			tr = append(tr, s)
		}
	}
	if proxy.ParentSpanID != "" || !strings.HasPrefix(proxy.Name, "GET /api/v1/users") {
		t.Errorf("proxy span %q parent %q: want a root named after the route", proxy.Name, proxy.ParentSpanID)
	}
	if proxy.Attrs["tollgate.principal"] != "user" || proxy.Attrs["tollgate.user_id"] != a.UserID || proxy.Attrs["http.response.status_code"] != "200" ||
		proxy.Attrs["tollgate.upstream"] != "core" {
		t.Errorf("proxy span attributes %v", proxy.Attrs)
	}
	if core.ParentSpanID != proxy.SpanID {
		t.Errorf("core span's parent %s, want the proxy's span %s:\n%s", core.ParentSpanID, proxy.SpanID, tr)
	}
	projSpan, ok := tr.find("authproxy", "projection")
	if !ok || projSpan.ParentSpanID != proxy.SpanID {
		t.Fatalf("no projection span under the proxy's:\n%s", tr)
	}
	coreProj, _ := tr.find("coreapi", "GET /internal/v1/projections/*")
	if coreProj.ParentSpanID != projSpan.SpanID {
		t.Errorf("core's projection span's parent %s, want the proxy's projection span %s", coreProj.ParentSpanID, projSpan.SpanID)
	}
	var sqlUnderCore, sqlUnderProj int
	for _, s := range tr {
		if s.Scope != "github.com/exaring/otelpgx" {
			continue
		}
		if s.Service != "coreapi" {
			t.Errorf("SQL span from %s", s.Service)
		}
		switch {
		case tr.descends(s.SpanID, core.SpanID):
			sqlUnderCore++
		case tr.descends(s.SpanID, coreProj.SpanID):
			sqlUnderProj++
		default:
			t.Errorf("SQL span %q outside both core spans:\n%s", s.Name, tr)
		}
		if strings.Contains(s.Attrs["db.query.text"], a.Email) {
			t.Errorf("a query's argument in its span: %v", s.Attrs)
		}
	}
	if sqlUnderCore == 0 || sqlUnderProj == 0 {
		t.Fatalf("SQL spans: %d under the request, %d under the projection; want some of each:\n%s", sqlUnderCore, sqlUnderProj, tr)
	}

	// The trace id is in the log lines of the request in both services.
	for _, svc := range []*service{sys.proxyA, sys.coreA} {
		lines := linesWith(t, svc, "request_id", rid)
		if len(lines) == 0 {
			t.Fatalf("%s: no log line with request_id %s", svc.name, rid)
		}
		for _, l := range lines {
			if l["trace_id"] != proxy.TraceID {
				t.Errorf("%s: line %v has trace_id %v, want %s", svc.name, l["msg"], l["trace_id"], proxy.TraceID)
			}
		}
	}
	// Proxy B and core B trace nothing: no trace id in their lines.
	for _, svc := range []*service{sys.proxyB, sys.coreB} {
		for _, l := range logLines(t, svc) {
			if _, ok := l["trace_id"]; ok {
				t.Fatalf("%s (tracing off) logged a trace id: %v", svc.name, l)
			}
		}
	}
}
