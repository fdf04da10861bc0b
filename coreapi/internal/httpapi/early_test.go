package httpapi_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/logging"
)

// TestEarlyRefusalsRecorded: the requests refused before any middleware
// runs (a body over the limit, 413; a method the server does not know,
// 501) get what every other request gets: an access line, the request
// metrics (route unmatched; an unknown method counted as _OTHER, so a
// client cannot mint series, and named as sent in the line) and the
// Observe record. They had none: an
// operator saw neither the 413s nor the 501s in the logs or the metrics.
func TestEarlyRefusalsRecorded(t *testing.T) {
	t.Parallel()
	access := &testkit.LogBuffer{}
	e := start(t, apitest.Options{Configure: func(o *httpapi.Options) {
		o.MaxBodyBytes = 4096
		o.AccessLogger = slog.New(logging.NewHandler(access, slog.LevelInfo))
	}})
	ten := e.SeedTenant(t, "Acme")
	owner := e.SeedUserIn(t, ten.ID, "o@acme.test", "owner")
	big := `{"display_name": "` + strings.Repeat("x", 5000) + `"}`
	for _, tt := range []struct {
		name   string
		req    apitest.Request
		status int
		method string // the metric's and Observe's label
	}{
		{"body over the limit", apitest.Request{Method: "PATCH", Path: "/api/v1/users/me", Body: big, As: &owner,
			Header: http.Header{"X-Request-Id": {"early-rid-413"}}}, 413, "PATCH"},
		{"unknown method", apitest.Request{Method: "PROPFIND", Path: "/api/v1/users", Unsigned: true, Undocumented: true,
			Header: http.Header{"X-Request-Id": {"early-rid-501"}}}, 501, "_OTHER"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rid := tt.req.Header.Get("X-Request-Id")
			r := e.Do(t, tt.req)
			apitest.WantStatus(t, r, tt.status)
			if r.Stats.RequestID != rid || r.Stats.Status != tt.status || r.Stats.Route != "unmatched" || r.Stats.Method != tt.method {
				t.Errorf("observed %+v, want request %s answered %d on route unmatched, method %s", r.Stats, rid, tt.status, tt.method)
			}
			if n := histogramCount(t, e, "coreapi_http_request_duration_seconds", map[string]string{
				"method": tt.method, "route": "unmatched", "code": strconv.Itoa(tt.status)}); n != 1 {
				t.Errorf("coreapi_http_request_duration_seconds count = %d, want 1", n)
			}
			if line := accessLine(t, access.String(), rid); line == nil {
				t.Errorf("no access line for %s:\n%s", rid, access.String())
			} else if line["status"] != float64(tt.status) || line["route"] != "unmatched" || line["path"] != tt.req.Path ||
				line["method"] != tt.req.Method {
				t.Errorf("access line %v", line)
			}
		})
	}
	// No series names the unknown method itself.
	if n := histogramCount(t, e, "coreapi_http_request_duration_seconds", map[string]string{"method": "PROPFIND"}); n != 0 {
		t.Errorf("a series is labelled with the client's method PROPFIND")
	}
}

// histogramCount sums the sample counts of the histogram name's series
// whose labels include every pair of want.
func histogramCount(t *testing.T, e *apitest.Env, name string, want map[string]string) uint64 {
	t.Helper()
	mfs, err := e.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			match := true
			for k, v := range want {
				match = match && got[k] == v
			}
			if match {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

// accessLine is the access line of request id rid in log, decoded; nil
// when there is none.
func accessLine(t *testing.T, log, rid string) map[string]any {
	t.Helper()
	for _, l := range strings.Split(log, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil {
			continue
		}
		if m["msg"] == "request" && m["request_id"] == rid {
			return m
		}
	}
	return nil
}
