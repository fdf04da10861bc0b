package serviceaccounts_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apikeys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/keys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/keys/keytest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/projection"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/serviceaccounts"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// coverage records which documented operations this package's tests saw
// answer with a document-conforming response.
var coverage = apitest.NewCoverage()

var operations = []string{"getAuthorizationServerMetadata", "getOpenIDConfiguration", "introspectToken", "revokeToken",
	"listServiceAccounts", "createServiceAccount", "deleteServiceAccount", "createClientSecret", "deleteClientSecret"}

// TestMain fails a full run that leaves one of the package's operations
// without a successful, document-conforming response.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if code != 0 || flag.Lookup("test.run").Value.String() != "" || testing.Short() {
		os.Exit(code)
	}
	if missing := coverage.WithoutSuccess(operations); len(missing) > 0 {
		fmt.Printf("FAIL: operations never validated with a 2xx response: %v\n", missing)
		os.Exit(1)
	}
	os.Exit(code)
}

const (
	issuer   = "http://localhost:8080"
	audience = "tollgate"
	pw       = "correct horse battery"
	base     = "https://api.example.test"
)

// revoker is a test API-key revoker: it knows one secret per tenant.
type revoker struct {
	mu    sync.Mutex
	keys  map[string]string // secret -> tenant
	calls []string          // "tenant secret"
}

func (r *revoker) RevokeAPIKey(_ context.Context, tenantID, secret, _, _ string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, tenantID+" "+secret)
	if r.keys[secret] != tenantID {
		return false, nil
	}
	delete(r.keys, secret)
	return true, nil
}

type env struct {
	*apitest.Env
	ring *keys.Ring
	sa   *serviceaccounts.Service
}

type startOpts struct {
	apiKeys serviceaccounts.APIKeyRevoker
	baseURL string
	// keyRoutes serves the API-key routes too (with a pepper), so service
	// accounts can mint keys and the proxy's resolve can be asked; the
	// API-key service is then the revocation endpoint's revoker (unless
	// apiKeys names another).
	keyRoutes bool
	// logs, when set, receives the service's log lines (warnings and up).
	logs *testkit.LogBuffer
	// limits are the service's (a zero field: the default).
	limits serviceaccounts.Limits
	// catalog is the server's permission catalog (nil: the built-in one).
	catalog *permissions.Catalog
	// db, when set, is another env's database: a second coreapi pod of
	// the same deployment (nil: a new one).
	db *dbtest.DB
}

func start(t testing.TB, so startOpts) *env {
	t.Helper()
	ring, _ := keytest.Ring(t)
	if so.baseURL == "" {
		so.baseURL = base
	}
	e := &env{ring: ring}
	h := password.New(password.Params{Memory: 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}, 0)
	e.Env = apitest.Start(t, apitest.Options{Coverage: coverage, Passwords: h, DB: so.db, Configure: func(o *httpapi.Options) {
		if so.catalog != nil {
			o.Catalog = so.catalog
		}
		store := sessions.New(o.Pool, time.Hour, 10*time.Second)
		var ks *apikeys.Service
		if so.keyRoutes {
			var err error
			ks, err = apikeys.New(apikeys.Options{Logger: o.Logger, Pool: o.Pool, Pepper: []byte("0123456789abcdef0123456789abcdef"), Catalog: o.Catalog})
			if err != nil {
				t.Fatal(err)
			}
			if so.apiKeys == nil {
				so.apiKeys = ks
			}
		}
		saLog := o.Logger
		if so.logs != nil {
			saLog = slog.New(slog.NewJSONHandler(so.logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		}
		sa, err := serviceaccounts.New(serviceaccounts.Options{
			Logger: saLog, Pool: o.Pool, Keys: ring, Sessions: store,
			Projections: projection.NewStore(o.Pool, 16*time.Minute, o.Catalog), Limiter: ratelimit.New(o.Pool),
			Catalog: o.Catalog, Issuer: issuer, Audience: audience, AccessTTL: 15 * time.Minute,
			PublicBaseURL: so.baseURL + "/", APIKeys: so.apiKeys, Limits: so.limits,
		})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := auth.New(auth.Options{
			Logger: o.Logger, Pool: o.Pool, Keys: ring, Passwords: h, Sessions: store,
			Issuer: issuer, Audience: audience, AccessTTL: 15 * time.Minute, ClientCredentials: sa,
		})
		if err != nil {
			t.Fatal(err)
		}
		e.sa = sa
		o.Register = append(o.Register, svc.Register, sa.Register)
		o.ErrorMappers = append(o.ErrorMappers, serviceaccounts.ErrorProblem)
		if ks != nil {
			o.Register = append(o.Register, ks.Register)
			o.ErrorMappers = append(o.ErrorMappers, apikeys.MapError)
		}
	}})
	return e
}

type tokens struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
	TenantID     string `json:"tenant_id"`
}

// owner signs up a tenant and returns its owner's tokens and identity.
func (e *env) owner(t testing.TB, email string) (tokens, *identity.Identity) {
	t.Helper()
	r := e.Send(t, nil, http.MethodPost, "/api/v1/auth/signup",
		map[string]string{"email": email, "password": pw, "tenant_name": "T " + email, "display_name": "D"})
	if r.Status != http.StatusCreated {
		t.Fatalf("signup %s: %d %s", email, r.Status, r.Body)
	}
	var tk tokens
	r.JSON(t, &tk)
	c := claimsOf(t, tk.AccessToken)
	id := e.IdentityOf(t, c["sub"].(string), c["tid"].(string))
	id.SessionID = c["sid"].(string)
	return tk, &id
}

func claimsOf(t testing.TB, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

type account struct {
	ID       string   `json:"id"`
	ClientID string   `json:"client_id"`
	Name     string   `json:"name"`
	Roles    []string `json:"roles"`
	Secrets  []struct {
		ID         string     `json:"id"`
		LastUsedAt *time.Time `json:"last_used_at"`
	} `json:"secrets"`
}

type secret struct {
	ID           string `json:"id"`
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
}

func (e *env) createAccount(t testing.TB, as *identity.Identity, name string, roles ...string) account {
	t.Helper()
	body := map[string]any{"name": name}
	if roles != nil {
		body["roles"] = roles
	}
	r := e.Send(t, as, http.MethodPost, "/api/v1/service-accounts", body)
	if r.Status != http.StatusCreated {
		t.Fatalf("create service account: %d %s", r.Status, r.Body)
	}
	var a account
	r.JSON(t, &a)
	return a
}

func (e *env) createSecret(t testing.TB, as *identity.Identity, id string) secret {
	t.Helper()
	r := e.Send(t, as, http.MethodPost, "/api/v1/service-accounts/"+id+"/secrets", nil)
	if r.Status != http.StatusCreated {
		t.Fatalf("create secret: %d %s", r.Status, r.Body)
	}
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("secret answer Cache-Control %q, want no-store", cc)
	}
	var s secret
	r.JSON(t, &s)
	return s
}

// basic is the RFC 6749 section 2.3.1 Authorization header.
func basic(id, secret string) http.Header {
	h := http.Header{}
	h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret))))
	return h
}

// form posts a form-encoded body, unsigned-as-anonymous like the proxy's
// public and optional routes.
func (e *env) form(t testing.TB, path string, vals url.Values, hdr http.Header) apitest.Response {
	t.Helper()
	return e.Do(t, apitest.Request{Method: http.MethodPost, Path: path, Body: vals.Encode(),
		ContentType: "application/x-www-form-urlencoded", Header: hdr})
}

func (e *env) clientToken(t testing.TB, s secret, scope string) tokens {
	t.Helper()
	v := url.Values{"grant_type": {"client_credentials"}}
	if scope != "" {
		v.Set("scope", scope)
	}
	r := e.form(t, "/api/v1/auth/token", v, basic(s.ClientID, s.ClientSecret))
	if r.Status != http.StatusOK {
		t.Fatalf("client_credentials: %d %s", r.Status, r.Body)
	}
	var tk tokens
	r.JSON(t, &tk)
	return tk
}

// oauthProblem checks an RFC 6749 error answer and returns it.
func oauthProblem(t testing.TB, r apitest.Response, status int, code string) problem.Problem {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	p := r.Problem(t)
	if p.OAuthError != code || p.OAuthErrorDescription == "" {
		t.Fatalf("error %q (%q), want %q: %s", p.OAuthError, p.OAuthErrorDescription, code, r.Body)
	}
	return p
}

func (e *env) count(t testing.TB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := e.DB.Pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func (e *env) exec(t testing.TB, q string, args ...any) {
	t.Helper()
	if _, err := e.DB.Pool.Exec(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func (e *env) introspect(t testing.TB, s secret, tok string) map[string]any {
	t.Helper()
	r := e.form(t, "/api/v1/auth/introspect", url.Values{"token": {tok}}, basic(s.ClientID, s.ClientSecret))
	if r.Status != http.StatusOK {
		t.Fatalf("introspect: %d %s", r.Status, r.Body)
	}
	var m map[string]any
	r.JSON(t, &m)
	return m
}
