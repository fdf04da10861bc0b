package app

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// keyRules routes /notes (API keys and tokens) to the app.
const keyRules = appUpstream + "routes:\n  - {prefix: /notes, upstream: notes, access: protected, permissions: [tenant:read]}\n"

// postSignIn sends a sign-in (the password grant) through the proxy: a
// built-in route, forwarded to coreapi.
func (e *env) postSignIn(body string) result {
	e.t.Helper()
	resp, err := e.client.Post("http://"+e.addr+rules.TokenPath, "application/json", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	r := result{status: resp.StatusCode, header: resp.Header, body: b}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), problem.ContentType) {
		if err := json.Unmarshal(b, &r.prob); err != nil {
			e.t.Fatalf("problem body %q: %v", b, err)
		}
	}
	return r
}

// An https:// IDENTITY_URL is reached over TLS on every path, coreapi's
// certificate verified against IDENTITY_CA_FILE: the key set (the proxy
// becomes ready), a projection fetch, an API-key resolution, and the
// forwarding of a built-in route (a sign-in, its body intact).
func TestHTTPSIdentityURL(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: keyRules, tlsCore: true, prepare: func(e *env, vars map[string]string) {
		vars["IDENTITY_CA_FILE"] = e.coreCA.WriteCA(t)
	}})
	if !strings.HasPrefix(e.core.URL(), "https://") {
		t.Fatalf("core URL %s", e.core.URL())
	}
	if e.core.JWKSFetches.Load() == 0 {
		t.Fatal("ready without a key set fetch")
	}

	// A user's request: the projection comes from core over TLS, then the
	// request goes to core's route.
	e.wantStatus(e.do("GET", "/api/v1/users/me", e.token(nil), nil), 200)
	if n := e.core.ProjectionFetches.Load(); n != 1 {
		t.Fatalf("projection fetches = %d, want 1", n)
	}
	e.wantSigned()

	// An API key is resolved over TLS.
	secret, _ := e.newAPIKey("tenant:read")
	e.wantStatus(e.do("GET", "/notes/1", secret, nil), 200)
	if n := e.core.KeyFetches.Load(); n != 1 {
		t.Fatalf("API-key resolutions = %d, want 1", n)
	}
	e.wantKeyIdentity(e.up, testenv.AppKey.ID, "tenant:read")

	// A sign-in: the password crosses to coreapi over TLS, signed.
	e.core.Reset()
	const body = `{"grant_type":"password","email":"a@example.com","password":"correct horse battery staple"}`
	e.wantStatus(e.postSignIn(body), 200)
	r := e.core.Last(t)
	if r.URI != rules.TokenPath || string(r.Body) != body || !r.Signed || r.VerifyErr != nil ||
		r.Identity.KeyID != "core" || r.Identity.Principal != identity.PrincipalAnonymous {
		t.Fatalf("core received %s %q signed=%v err=%v identity %+v", r.URI, r.Body, r.Signed, r.VerifyErr, r.Identity)
	}
}

// A coreapi certificate the proxy does not trust is never sent a
// request, and nothing falls back to plain HTTP: the key set fetch fails
// with a log line naming the certificate problem, so the proxy is not
// ready, and a sign-in is answered 503 (upstream errors labelled tls).
// UPSTREAM_CA_FILE, which trusts the apps' CA, does not vouch for
// coreapi: here it holds coreapi's CA, and coreapi is still refused.
func TestHTTPSIdentityURLUntrusted(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{noPublish: true, tlsCore: true, prepare: func(e *env, vars map[string]string) {
		vars["UPSTREAM_CA_FILE"] = e.coreCA.WriteCA(t)
	}})
	e.core.Publish(e.key)
	testenv.Eventually(t, func() error {
		return testenv.Contains("log", e.logs.String(), `"msg":"jwks fetch"`, "certificate signed by unknown authority")
	})
	if code, _ := get(t, "http://"+e.admin+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz = %d, want 503", code)
	}
	e.wantProblem(e.postSignIn(`{"grant_type":"password","email":"a@example.com","password":"p"}`), 503, problem.CodeUpstreamDown)
	if n := testutil.ToFloat64(e.app.Metrics.UpstreamErrors.WithLabelValues("forward", "tls")); n != 1 {
		t.Errorf("upstream errors (forward, tls) = %v, want 1", n)
	}
	if got := e.core.Received(); len(got) != 0 || e.core.JWKSFetches.Load() != 0 {
		t.Fatalf("the untrusted core answered %d requests and %d key set fetches", len(got), e.core.JWKSFetches.Load())
	}
	if !strings.Contains(e.logs.String(), "certificate signed by unknown authority") {
		t.Fatal("no log line names the certificate problem")
	}
}
