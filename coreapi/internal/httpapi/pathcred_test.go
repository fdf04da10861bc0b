package httpapi_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/tracing"
)

// TestCredentialInPathNotRecorded: a path segment that holds one of our
// credentials (an API key, an access token, a refresh or one-time link
// token) is recorded as "[redacted]" in the access line and the span's
// url.path; it was written out whole, where a query's is never recorded.
func TestCredentialInPathNotRecorded(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p, err := tracing.NewWith(tracing.Config{ServiceName: "coreapi", Sampler: "parentbased_always_on"}, sdktrace.WithSyncer(exp))
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.LogBuffer{}
	e := apitest.Start(t, apitest.Options{Tracing: p, AllowUndocumented: true, Configure: func(o *httpapi.Options) {
		o.Logger = slog.New(tracing.LogHandler{Handler: logging.NewHandler(logs, slog.LevelInfo)})
	}})
	sum := sha256.Sum256([]byte("a refresh token"))
	refresh := base64.RawURLEncoding.EncodeToString(sum[:])
	key := "tg_abcdefghij012345_Q7xk2LmN9pRsT4vWyZ1aBcDeFgHiJkLmNoPqRsTuVwX"
	jwt := "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiYXQrand0In0." +
		"eyJzdWIiOiIxMTExMTExMS0xMTExLTQxMTEtODExMS0xMTExMTExMTExMTEifQ." +
		"MEUCIQDx3kQm7Vv9YpQ2ZtN0aLr5sJw8uXcHbGfEd1IkOoPqRsTuVwXyZaBcDeFgHiJkLmNo"
	for _, tc := range []struct{ name, cred, secret string }{
		{"api key", key, key[len("tg_abcdefghij012345_"):]},
		{"access token", jwt, jwt[strings.LastIndexByte(jwt, '.')+1:]},
		{"refresh token", refresh, refresh},
	} {
		exp.Reset()
		path := "/api/v1/nope/" + tc.cred
		apitest.WantStatus(t, e.Do(t, apitest.Request{Method: "GET", Path: path, Undocumented: true}), 404)
		var line map[string]any
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, `"msg":"request"`) {
				if err := json.Unmarshal([]byte(l), &line); err != nil {
					t.Fatal(err)
				}
			}
		}
		if got := line["path"]; got != "/api/v1/nope/[redacted]" {
			t.Errorf("%s: access log path %q", tc.name, got)
		}
		var found bool
		for _, s := range exp.GetSpans() {
			if s.Name == "GET unmatched" {
				found = true
				if got, _ := attrOf(s, "url.path"); got != "/api/v1/nope/[redacted]" {
					t.Errorf("%s: span url.path %q", tc.name, got)
				}
			}
		}
		if !found {
			t.Fatalf("%s: no server span", tc.name)
		}
		if strings.Contains(logs.String(), tc.secret) {
			t.Errorf("%s written to the log:\n%s", tc.name, logs.String())
		}
	}
}
