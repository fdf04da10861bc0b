package apikeys_test

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apikeys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

var coverage = apitest.NewCoverage()

var operations = []string{"listAPIKeys", "createAPIKey", "revokeAPIKey", "listMyAPIKeys", "createMyAPIKey",
	"revokeMyAPIKey", "resolveAPIKey", "reportAPIKeysUsed"}

// TestMain fails a full run that leaves one of the package's operations
// without a successful, document-conforming response.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if code != 0 || flag.Lookup("test.run").Value.String() != "" || testing.Short() {
		os.Exit(code)
	}
	if missing := coverage.WithoutSuccess(operations); len(missing) > 0 {
		fmt.Printf("FAIL: apikeys operations never validated with a 2xx response: %v\n", missing)
		os.Exit(1)
	}
	os.Exit(code)
}

var pepper = []byte("0123456789abcdef0123456789abcdef")

type env struct {
	*apitest.Env
	svc *apikeys.Service
}

func start(t *testing.T, pep []byte) *env {
	t.Helper()
	return startWith(t, apikeys.Options{Pepper: pep})
}

// startAt is start with now as the service's clock (nil: time.Now).
func startAt(t *testing.T, pep []byte, now func() time.Time) *env {
	t.Helper()
	return startWith(t, apikeys.Options{Pepper: pep, Now: now})
}

// startWith starts the service with o, its Logger and Pool the server's.
func startWith(t *testing.T, o apikeys.Options) *env {
	t.Helper()
	x := &env{}
	x.Env = apitest.Start(t, apitest.Options{Coverage: coverage, Configure: func(ho *httpapi.Options) {
		o.Logger, o.Pool = ho.Logger, ho.Pool
		svc, err := apikeys.New(o)
		if err != nil {
			t.Fatal(err)
		}
		x.svc = svc
		ho.Register = append(ho.Register, svc.Register)
		ho.ErrorMappers = append(ho.ErrorMappers, apikeys.MapError)
	}})
	return x
}

type created struct {
	apikeys.Key
	Secret string `json:"secret"`
}

var secretRE = regexp.MustCompile(`^tg_[a-z0-9]{16}_[A-Za-z0-9]{43}$`)

func (x *env) create(t *testing.T, as identity.Identity, path string, body any) created {
	t.Helper()
	r := x.Send(t, &as, http.MethodPost, path, body)
	if r.Status != http.StatusCreated {
		t.Fatalf("POST %s: %d %s", path, r.Status, r.Body)
	}
	var k created
	r.JSON(t, &k)
	if !secretRE.MatchString(k.Secret) || k.Secret[3:19] != k.PublicID {
		t.Fatalf("secret %q (public id %q) not in the key format", k.Secret, k.PublicID)
	}
	if r.Header.Get("Location") == "" || r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("201 headers: %v", r.Header)
	}
	return k
}

func (x *env) resolve(t *testing.T, key string) apitest.Response {
	t.Helper()
	return x.Do(t, apitest.Request{Method: http.MethodPost, Path: apikey.ResolvePath, Body: apikey.ResolveRequest{Key: key}, Service: true})
}

func (x *env) resolved(t *testing.T, key string) apikey.Projection {
	t.Helper()
	r := x.resolve(t, key)
	if r.Status != http.StatusOK {
		t.Fatalf("resolve: %d %s", r.Status, r.Body)
	}
	var p apikey.Projection
	r.JSON(t, &p)
	return p
}

func (x *env) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	var n int
	if err := x.DB.Pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func (x *env) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	if _, err := x.DB.Pool.Exec(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func wantProblem(t *testing.T, r apitest.Response, status int, code string) {
	t.Helper()
	apitest.WantProblem(t, r, status, code)
}

func (x *env) list(t *testing.T, as identity.Identity, path string) ([]apikeys.Key, string) {
	t.Helper()
	r := x.Get(t, &as, path)
	if r.Status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
	}
	var l struct{ Data []apikeys.Key }
	r.JSON(t, &l)
	return l.Data, string(r.Body)
}

// TestTenantKeyLifecycle: create (secret shown once, never listed), use
// (resolve), revoke (audit, outbox invalidation), and a revoked key's
// right secret answers 410 and is audited.
func TestTenantKeyLifecycle(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	exp := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	k := x.create(t, admin, "/api/v1/api-keys", map[string]any{"name": "ci", "permissions": []string{"users:read", "roles:read"}, "expires_at": exp})
	if k.Kind != apikeys.KindTenant || k.Name != "ci" || !slices.Equal(k.Permissions, []string{"roles:read", "users:read"}) ||
		k.ExpiresAt == nil || !k.ExpiresAt.Equal(exp) || k.UserID != admin.UserID {
		t.Fatalf("created %+v", k)
	}
	// Only the HMAC is stored.
	if n := x.count(t, `SELECT count(*) FROM api_keys WHERE secret_hash = sha256($1::bytea) OR encode(secret_hash, 'escape') LIKE '%' || $2 || '%'`,
		[]byte(k.Secret), k.Secret[20:]); n != 0 {
		t.Fatal("the secret (or its plain SHA-256) is stored")
	}
	keys, body := x.list(t, admin, "/api/v1/api-keys")
	if len(keys) != 1 || keys[0].ID != k.ID || strings.Contains(body, k.Secret[20:]) || strings.Contains(body, "secret") {
		t.Fatalf("list = %s", body)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'api_key.created' AND target_id = $1 AND actor_user_id = $2`, k.ID, admin.UserID); n != 1 {
		t.Fatalf("%d creation audit events", n)
	}

	p := x.resolved(t, k.Secret)
	if p.KeyID != k.ID || p.PublicID != k.PublicID || p.UserID != admin.UserID || p.TenantID != ten.ID || !p.Active() ||
		!slices.Equal(p.Permissions, []string{"roles:read", "users:read"}) || len(p.Roles) != 0 || p.ExpiresAt == nil {
		t.Fatalf("projection %+v", p)
	}

	r := x.Send(t, &admin, http.MethodDelete, "/api/v1/api-keys/"+k.ID, nil)
	if r.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	if n := x.count(t, `SELECT count(*) FROM outbox WHERE subject = $1`, invalidation.APIKeySubject(k.PublicID)); n != 1 {
		t.Fatalf("%d invalidations of the key", n)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'api_key.revoked' AND target_id = $1`, k.ID); n != 1 {
		t.Fatalf("%d revocation audit events", n)
	}
	wantProblem(t, x.Send(t, &admin, http.MethodDelete, "/api/v1/api-keys/"+k.ID, nil), 404, "not_found")
	if keys, _ := x.list(t, admin, "/api/v1/api-keys"); len(keys) != 0 {
		t.Fatalf("revoked key still listed: %+v", keys)
	}
	wantProblem(t, x.resolve(t, k.Secret), 410, "api_key_revoked")
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'api_key.used_after_revocation' AND target_id = $1`, k.ID); n != 1 {
		t.Fatalf("%d use-after-revocation audit events", n)
	}
	wantProblem(t, x.Send(t, &admin, http.MethodDelete, "/api/v1/api-keys/nope", nil), 400, "invalid_id")
}

// TestPersonalKeys: any member may hold personal keys; only the owner
// lists and revokes them under /users/me; an admin sees and may revoke
// them under /api-keys.
func TestPersonalKeys(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	m1 := x.SeedUserIn(t, ten.ID, "m1@acme.test", "member")
	m2 := x.SeedUserIn(t, ten.ID, "m2@acme.test", "member")
	k1 := x.create(t, m1, "/api/v1/users/me/api-keys", map[string]any{"name": "laptop", "permissions": []string{}})
	k1b := x.create(t, m1, "/api/v1/users/me/api-keys", map[string]any{"name": "ci", "permissions": []string{}})
	if k1.Kind != apikeys.KindPersonal || k1.ExpiresAt != nil {
		t.Fatalf("created %+v", k1)
	}
	wantProblem(t, x.Get(t, &m1, "/api/v1/api-keys"), 403, "insufficient_scope")
	if mine, _ := x.list(t, m1, "/api/v1/users/me/api-keys"); len(mine) != 2 || mine[0].ID != k1b.ID {
		t.Fatalf("m1's keys = %+v", mine)
	}
	if theirs, _ := x.list(t, m2, "/api/v1/users/me/api-keys"); len(theirs) != 0 {
		t.Fatalf("m2 sees %+v", theirs)
	}
	wantProblem(t, x.Send(t, &m2, http.MethodDelete, "/api/v1/users/me/api-keys/"+k1.ID, nil), 404, "not_found")
	if all, _ := x.list(t, admin, "/api/v1/api-keys"); len(all) != 2 {
		t.Fatalf("admin sees %+v", all)
	}
	if r := x.Send(t, &m1, http.MethodDelete, "/api/v1/users/me/api-keys/"+k1.ID, nil); r.Status != 204 {
		t.Fatalf("owner's delete: %d %s", r.Status, r.Body)
	}
	if r := x.Send(t, &admin, http.MethodDelete, "/api/v1/api-keys/"+k1b.ID, nil); r.Status != 204 {
		t.Fatalf("admin's delete of a personal key: %d %s", r.Status, r.Body)
	}
	if mine, _ := x.list(t, m1, "/api/v1/users/me/api-keys"); len(mine) != 0 {
		t.Fatalf("after revocation: %+v", mine)
	}
}

// TestCreateRefused: escalation, a key creating a key, and bad fields.
func TestCreateRefused(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	member := x.SeedUserIn(t, ten.ID, "m@acme.test", "member")
	// Beyond the creator's permissions.
	wantProblem(t, x.Send(t, &member, http.MethodPost, "/api/v1/users/me/api-keys",
		map[string]any{"name": "x", "permissions": []string{"users:write"}}), 403, "insufficient_scope")
	if slices.Contains(admin.Permissions, "tenant:write") {
		t.Fatal("admin holds tenant:write: the test needs a permission the admin lacks")
	}
	wantProblem(t, x.Send(t, &admin, http.MethodPost, "/api/v1/api-keys",
		map[string]any{"name": "x", "permissions": []string{"users:read", "tenant:write"}}), 403, "insufficient_scope")
	// Without api-keys:write.
	wantProblem(t, x.Send(t, &member, http.MethodPost, "/api/v1/api-keys",
		map[string]any{"name": "x", "permissions": []string{}}), 403, "insufficient_scope")
	// A key never creates a key, even one holding api-keys:write.
	asKey := admin
	asKey.Principal = identity.PrincipalAPIKey
	for _, path := range []string{"/api/v1/api-keys", "/api/v1/users/me/api-keys"} {
		wantProblem(t, x.Send(t, &asKey, http.MethodPost, path, map[string]any{"name": "x", "permissions": []string{}}), 403, "principal_not_allowed")
	}
	for name, body := range map[string]any{
		"no name":                map[string]any{"name": " ", "permissions": []string{}},
		"long name":              map[string]any{"name": strings.Repeat("n", 201), "permissions": []string{}},
		"bidi override in name":  map[string]any{"name": "deploy\u202egnp.exe", "permissions": []string{}},
		"invisible name":         map[string]any{"name": "\ufeff\u3164", "permissions": []string{}},
		"no permissions":         map[string]any{"name": "x"},
		"unknown perm":           map[string]any{"name": "x", "permissions": []string{"nukes:launch"}},
		"past expiry":            map[string]any{"name": "x", "permissions": []string{}, "expires_at": time.Now().Add(-time.Minute)},
		"expiry not a date-time": map[string]any{"name": "x", "permissions": []string{}, "expires_at": "tomorrow"},
		// In year 10000 once in UTC: stored, it could never be written
		// back as RFC 3339 (a 500 then, and on every later list).
		"expiry past year 9999": map[string]any{"name": "x", "permissions": []string{}, "expires_at": "9999-12-31T23:00:00-23:00"},
	} {
		t.Run(name, func(t *testing.T) {
			wantProblem(t, x.Send(t, &admin, http.MethodPost, "/api/v1/api-keys", body), 422, "validation_failed")
		})
	}
	wantProblem(t, x.Send(t, &admin, http.MethodPost, "/api/v1/api-keys", map[string]any{"name": "x", "permissions": []string{}, "secret": "tg_x"}), 422, "unknown_field")
	if n := x.count(t, `SELECT count(*) FROM api_keys`); n != 0 {
		t.Fatalf("%d keys stored by refused requests", n)
	}
}

// TestExpiryNotADateTime: an expires_at that is no date-time, a string
// not in RFC 3339 form or another JSON type (a number, an object), is 422
// validation_failed naming expires_at, as every wrong type is; another
// type was 400 malformed_json (time.Time's own error, which names no
// member), and a bad string named "(body)".
func TestExpiryNotADateTime(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	for _, tt := range []struct{ value, got string }{
		{`"tomorrow"`, `got "tomorrow"`},
		{`1798761600`, "got number"},
		{`{"t": "2027-01-31T00:00:00Z"}`, "got object"},
		{`["2027-01-31T00:00:00Z"]`, "got array"},
		{`true`, "got boolean"},
	} {
		r := x.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/api-keys", As: &admin,
			Body: `{"name": "x", "permissions": [], "expires_at": ` + tt.value + `}`})
		wantProblem(t, r, 422, "validation_failed")
		p := r.Problem(t)
		if len(p.Errors) != 1 || p.Errors[0].Field != "expires_at" || !strings.HasSuffix(p.Errors[0].Message, tt.got) {
			t.Errorf("expires_at %s: errors %+v, want expires_at ... %s", tt.value, p.Errors, tt.got)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM api_keys`); n != 0 {
		t.Fatalf("%d keys stored by refused requests", n)
	}
	// null is the one expires_at the document declares besides a
	// date-time (a key that never expires); the permissions, a list, take
	// none (httpapi.DecodeJSON).
	r := x.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/api-keys", As: &admin,
		Body: `{"name": "x", "permissions": null}`})
	wantProblem(t, r, 422, "validation_failed")
	if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "permissions" || !strings.Contains(p.Errors[0].Message, "got null") {
		t.Errorf("permissions null: errors %+v, want permissions ... got null", p.Errors)
	}
	if k := x.create(t, admin, "/api/v1/api-keys", `{"name": "x", "permissions": [], "expires_at": null}`); k.ExpiresAt != nil {
		t.Errorf("expires_at null made a key expiring at %v", k.ExpiresAt)
	}
}

// TestResolve: the internal answers for a wrong secret, an unknown key,
// an expired key, a suspended tenant, a creator who lost permissions or
// whose membership is gone while the key is live (deleted in SQL: a
// removal through the API revokes the keys, TestRemovedMemberKeysRevoked).
func TestResolve(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	k := x.create(t, admin, "/api/v1/api-keys", map[string]any{"name": "ci", "permissions": []string{"users:read", "users:write"}})

	wrong := wrongSecret(k.Secret)
	wantProblem(t, x.resolve(t, wrong), 401, "invalid_token")
	other, _ := apikey.New()
	wantProblem(t, x.resolve(t, other), 404, "api_key_unknown")
	wantProblem(t, x.resolve(t, "tg_short"), 404, "api_key_unknown")
	// Resolving costs two queries (the key, the projection).
	if r := x.resolve(t, k.Secret); r.Stats.Queries != 2 {
		t.Errorf("resolve: %d queries, want 2", r.Stats.Queries)
	}

	// The creator loses users:write: the key's permissions shrink.
	x.exec(t, `DELETE FROM membership_roles WHERE tenant_id = $1 AND user_id = $2`, ten.ID, admin.UserID)
	x.SeedMember(t, ten.ID, x.SeedUser(t, "other@acme.test", ""), "owner") // keep an owner
	x.Tx(t, func(tx pgx.Tx) error {
		_, err := tx.Exec(context.Background(), `INSERT INTO membership_roles (tenant_id, user_id, role_id)
SELECT $1, $2, id FROM roles WHERE tenant_id = $1 AND name = 'member'`, ten.ID, admin.UserID)
		return err
	})
	if p := x.resolved(t, k.Secret); slices.Contains(p.Permissions, "users:write") || !p.Active() {
		t.Fatalf("after the creator lost users:write: %+v", p.Permissions)
	}

	x.exec(t, `UPDATE tenants SET status = 'suspended' WHERE id = $1`, ten.ID)
	if p := x.resolved(t, k.Secret); p.Active() || p.TenantStatus != identity.StatusSuspended {
		t.Fatalf("suspended tenant: %+v", p)
	}
	x.exec(t, `UPDATE tenants SET status = 'active' WHERE id = $1`, ten.ID)

	x.exec(t, `DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2`, ten.ID, admin.UserID)
	if p := x.resolved(t, k.Secret); p.Active() || len(p.Permissions) != 0 || p.MembershipStatus != apikeys.StatusGone {
		t.Fatalf("creator removed: %+v", p)
	}

	x.exec(t, `UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1`, k.ID)
	wantProblem(t, x.resolve(t, k.Secret), 410, "api_key_expired")
	// A wrong secret is still only a wrong secret.
	wantProblem(t, x.resolve(t, wrong), 401, "invalid_token")
}

// wrongSecret is key with its last character changed: same public id,
// another secret.
func wrongSecret(key string) string {
	last := byte('a')
	if key[len(key)-1] == 'a' {
		last = 'b'
	}
	return key[:len(key)-1] + string(last)
}

// TestRevokeAPIKey: RFC 7009 semantics of the exported revocation.
func TestRevokeAPIKey(t *testing.T) {
	x := start(t, pepper)
	ctx := context.Background()
	ten := x.SeedTenant(t, "Acme")
	other := x.SeedTenant(t, "Other")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	k := x.create(t, admin, "/api/v1/api-keys", map[string]any{"name": "ci", "permissions": []string{}})
	unknown, _ := apikey.New()
	for name, c := range map[string]struct{ tenant, secret string }{
		"malformed":     {ten.ID, "tg_nope"},
		"unknown":       {ten.ID, unknown},
		"wrong secret":  {ten.ID, wrongSecret(k.Secret)},
		"other tenant":  {other.ID, k.Secret},
		"bad tenant id": {"x", k.Secret},
		"a JWT":         {ten.ID, "eyJhbGciOiJFZERTQSJ9.e30.c2ln"},
	} {
		if ok, err := x.svc.RevokeAPIKey(ctx, c.tenant, c.secret, "", ""); ok || err != nil {
			t.Errorf("%s: RevokeAPIKey = %v, %v; want false, nil", name, ok, err)
		}
	}
	if x.count(t, `SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL`) != 0 {
		t.Fatal("a refused revocation revoked the key")
	}
	if ok, err := x.svc.RevokeAPIKey(ctx, strings.ToUpper(ten.ID), k.Secret, "", ""); !ok || err != nil {
		t.Fatalf("RevokeAPIKey = %v, %v; want true", ok, err)
	}
	if n := x.count(t, `SELECT count(*) FROM outbox WHERE subject = $1`, invalidation.APIKeySubject(k.PublicID)); n != 1 {
		t.Fatalf("%d invalidations", n)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'api_key.revoked' AND target_id = $1 AND data->>'via' = 'oauth_revoke'`, k.ID); n != 1 {
		t.Fatalf("%d audit events", n)
	}
	if ok, err := x.svc.RevokeAPIKey(ctx, ten.ID, k.Secret, "", ""); ok || err != nil {
		t.Fatalf("second RevokeAPIKey = %v, %v; want false, nil", ok, err)
	}
	wantProblem(t, x.resolve(t, k.Secret), 410, "api_key_revoked")
}

// TestRevocationsCoveredByTheKeysUser: every revocation's invalidation
// (its event unchanged) is covered by the user subject of the user the
// key acts as (its user_id), not of whoever revoked it: a request that
// also names that user leaves the key's subject out of
// X-Auth-Invalidated (outbox.Row.CoveredBy; a proxy's entry of the key
// misses on the user's invalidation). So for a revocation by id, an RFC
// 7009 revocation and RevokeUserKeys, for tenant and personal keys.
func TestRevocationsCoveredByTheKeysUser(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	owner := x.SeedUserIn(t, ten.ID, "owner@acme.test", "owner")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	body := map[string]any{"name": "k", "permissions": []string{}}
	actor := roles.Actor{UserID: owner.UserID, Permissions: owner.Permissions, RequestID: "r"}
	keyUser, revoker := invalidation.UserSubject(admin.UserID), invalidation.UserSubject(owner.UserID)
	for _, tc := range []struct {
		name   string
		path   string
		revoke func(ctx context.Context, k created) error
	}{
		{"by id", "/api/v1/api-keys", func(ctx context.Context, k created) error {
			return x.svc.Store().Revoke(ctx, ten.ID, k.ID, "", actor)
		}},
		{"by RFC 7009", "/api/v1/users/me/api-keys", func(ctx context.Context, k created) error {
			if ok, err := x.svc.RevokeAPIKey(ctx, ten.ID, k.Secret, owner.UserID, "r"); !ok || err != nil {
				return fmt.Errorf("RevokeAPIKey = %v, %v", ok, err)
			}
			return nil
		}},
		{"every key of the user", "/api/v1/users/me/api-keys", func(ctx context.Context, k created) error {
			return pgx.BeginFunc(ctx, x.DB.Pool, func(tx pgx.Tx) error {
				_, err := apikeys.RevokeUserKeys(ctx, tx, ten.ID, admin.UserID, owner.UserID, "r", "test.cause")
				return err
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := x.create(t, admin, tc.path, body)
			var c outbox.Collector
			ctx := outbox.WithCollector(context.Background(), &c)
			if err := tc.revoke(ctx, k); err != nil {
				t.Fatal(err)
			}
			sub := invalidation.APIKeySubject(k.PublicID)
			name := func(subject string) {
				t.Helper()
				if err := pgx.BeginFunc(ctx, x.DB.Pool, func(tx pgx.Tx) error {
					return outbox.Write(ctx, tx, outbox.Row{Subject: subject, Reason: "test"})
				}); err != nil {
					t.Fatal(err)
				}
			}
			for _, step := range []struct {
				name string
				want string
			}{
				{"", sub},
				{revoker, sub + " " + revoker},
				{keyUser, revoker + " " + keyUser},
			} {
				if step.name != "" {
					name(step.name)
				}
				if got := c.Header(); got != step.want {
					t.Fatalf("with %q written: Header() = %q, want %q", step.name, got, step.want)
				}
			}
			if n := x.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = $2`,
				sub, invalidation.ReasonAPIKeyRevoked); n != 1 {
				t.Fatalf("%d invalidations of the key, want 1", n)
			}
		})
	}
}

// TestUsedReport: last_used_at is written at most once a minute per key,
// however often it is reported.
func TestUsedReport(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	a := x.create(t, admin, "/api/v1/api-keys", map[string]any{"name": "a", "permissions": []string{}})
	b := x.create(t, admin, "/api/v1/api-keys", map[string]any{"name": "b", "permissions": []string{}})
	report := func(keys ...string) {
		t.Helper()
		r := x.Do(t, apitest.Request{Method: http.MethodPost, Path: apikey.UsedPath, Body: apikey.UsedRequest{Keys: keys}, Service: true})
		if r.Status != http.StatusNoContent {
			t.Fatalf("report: %d %s", r.Status, r.Body)
		}
	}
	report(a.PublicID)
	var first time.Time
	if err := x.DB.Pool.QueryRow(context.Background(), `SELECT last_used_at FROM api_keys WHERE id = $1`, a.ID).Scan(&first); err != nil {
		t.Fatalf("last_used_at after a report: %v", err)
	}
	if x.count(t, `SELECT count(*) FROM api_keys WHERE id = $1 AND last_used_at IS NULL`, b.ID) != 1 {
		t.Fatal("an unreported key got a last_used_at")
	}
	n, err := x.svc.Store().MarkUsed(context.Background(), []string{a.PublicID, b.PublicID})
	if err != nil || n != 1 {
		t.Fatalf("second report within the minute wrote %d rows (%v), want 1 (b only)", n, err)
	}
	x.exec(t, `UPDATE api_keys SET last_used_at = now() - interval '61 seconds' WHERE id = $1`, a.ID)
	if n, _ := x.svc.Store().MarkUsed(context.Background(), []string{a.PublicID, b.PublicID}); n != 1 {
		t.Fatalf("after a minute: wrote %d rows, want 1 (a only)", n)
	}
	keys, _ := x.list(t, admin, "/api/v1/api-keys")
	for _, k := range keys {
		if k.LastUsedAt == nil {
			t.Errorf("key %s listed without last_used_at", k.Name)
		}
	}
	wantProblem(t, x.Do(t, apitest.Request{Method: http.MethodPost, Path: apikey.UsedPath, Body: apikey.UsedRequest{Keys: []string{"NOT-AN-ID"}}, Service: true}), 422, "validation_failed")
	// Only the proxy may report.
	wantProblem(t, x.Do(t, apitest.Request{Method: http.MethodPost, Path: apikey.UsedPath, Body: apikey.UsedRequest{Keys: []string{a.PublicID}}, As: &admin}), 401, "unauthenticated")
	wantProblem(t, x.Do(t, apitest.Request{Method: http.MethodPost, Path: apikey.ResolvePath, Body: apikey.ResolveRequest{Key: a.Secret}, As: &admin}), 401, "unauthenticated")
}

// TestWithoutPepper: keys can be neither created nor resolved.
func TestWithoutPepper(t *testing.T) {
	x := start(t, nil)
	ten := x.SeedTenant(t, "Acme")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	wantProblem(t, x.Send(t, &admin, http.MethodPost, "/api/v1/api-keys", map[string]any{"name": "x", "permissions": []string{}}), 503, "api_keys_unavailable")
	k, _ := apikey.New()
	wantProblem(t, x.resolve(t, k), 503, "api_keys_unavailable")
	if _, err := apikeys.New(apikeys.Options{Logger: nil}); err == nil {
		t.Error("New without a pool accepted")
	}
}

// TestRevokeUserKeys: every live key acting as one user in one tenant is
// revoked inside the caller's transaction, each audited and announced like
// an explicit revocation; other users' keys, the user's keys in another
// tenant and already revoked keys are untouched; a rollback revokes
// nothing; and a creation in flight commits first and is revoked too.
func TestRevokeUserKeys(t *testing.T) {
	x := start(t, pepper)
	ctx := context.Background()
	ten := x.SeedTenant(t, "Acme")
	other := x.SeedTenant(t, "Other")
	owner := x.SeedUserIn(t, ten.ID, "owner@acme.test", "owner")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	x.SeedMember(t, other.ID, admin.UserID, "admin")
	adminThere := x.IdentityOf(t, admin.UserID, other.ID)
	body := map[string]any{"name": "k", "permissions": []string{}}
	mine := []created{x.create(t, admin, "/api/v1/api-keys", body), x.create(t, admin, "/api/v1/users/me/api-keys", body)}
	before := x.create(t, admin, "/api/v1/api-keys", body)
	if r := x.Send(t, &owner, http.MethodDelete, "/api/v1/api-keys/"+before.ID, nil); r.Status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	untouched := []created{x.create(t, owner, "/api/v1/api-keys", body), x.create(t, adminThere, "/api/v1/api-keys", body)}

	revoke := func(tx pgx.Tx) (int, error) {
		return apikeys.RevokeUserKeys(ctx, tx, ten.ID, admin.UserID, owner.UserID, "req-1", "test.cause")
	}
	// Rolled back with the caller's transaction: nothing revoked or announced.
	tx, err := x.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := revoke(tx); n != 2 || err != nil {
		t.Fatalf("RevokeUserKeys = %d, %v; want 2", n, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	x.resolved(t, mine[0].Secret)
	if n := x.count(t, `SELECT count(*) FROM outbox WHERE subject = $1`, invalidation.APIKeySubject(mine[0].PublicID)); n != 0 {
		t.Fatalf("a rolled-back revocation left %d invalidations", n)
	}

	x.Tx(t, func(tx pgx.Tx) error {
		n, err := revoke(tx)
		if n != 2 {
			t.Errorf("revoked %d keys, want 2", n)
		}
		return err
	})
	for _, k := range mine {
		wantProblem(t, x.resolve(t, k.Secret), 410, "api_key_revoked")
		if n := x.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = $2`,
			invalidation.APIKeySubject(k.PublicID), invalidation.ReasonAPIKeyRevoked); n != 1 {
			t.Errorf("%d invalidations of %s, want 1", n, k.Kind)
		}
		if n := x.count(t, `SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND action = 'api_key.revoked' AND target_id = $2
AND actor_user_id = $3 AND request_id = 'req-1' AND data->>'via' = 'test.cause' AND data->>'kind' = $4`, ten.ID, k.ID, owner.UserID, k.Kind); n != 1 {
			t.Errorf("%d audit events of %s, want 1", n, k.Kind)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'api_key.revoked' AND target_id = $1`, before.ID); n != 1 {
		t.Errorf("the key revoked before: %d revocation events, want 1", n)
	}
	for _, k := range untouched {
		x.resolved(t, k.Secret)
	}
	x.Tx(t, func(tx pgx.Tx) error {
		n, err := revoke(tx)
		if n != 0 {
			t.Errorf("again: revoked %d keys, want 0", n)
		}
		return err
	})

	// A creation in flight (it holds the tenant's key lock, as Create
	// does, and has inserted its row): the revocation waits for it and
	// revokes its key too.
	inFlight, err := x.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer inFlight.Rollback(ctx) //nolint:errcheck // committed below
	var lateID string
	if _, err := inFlight.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('api_keys:' || $1, 0))`, ten.ID); err != nil {
		t.Fatal(err)
	}
	_, pid := apikey.New()
	if err := inFlight.QueryRow(ctx, `INSERT INTO api_keys (public_id, tenant_id, user_id, kind, name, secret_hash)
VALUES ($1, $2, $3, 'tenant', 'late', sha256('x')) RETURNING id::text`, pid, ten.ID, admin.UserID).Scan(&lateID); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() {
		var n int
		err := pgx.BeginFunc(ctx, x.DB.Pool, func(tx pgx.Tx) error {
			var err error
			n, err = revoke(tx)
			return err
		})
		if err != nil {
			t.Error(err)
		}
		done <- n
	}()
	select {
	case n := <-done:
		t.Fatalf("the revocation did not wait for the creation in flight (revoked %d)", n)
	case <-time.After(300 * time.Millisecond):
	}
	if err := inFlight.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := <-done; n != 1 {
		t.Fatalf("after the creation committed: revoked %d keys, want 1", n)
	}
	if n := x.count(t, `SELECT count(*) FROM api_keys WHERE id = $1 AND revoked_at IS NOT NULL`, lateID); n != 1 {
		t.Fatal("the key created in flight outlived the revocation")
	}
}

// TestRemovedMemberKeysRevoked: removing a member from a tenant
// (DELETE /users/{id}) revokes every live key acting as them there, in the
// removal's transaction: each is audited as api_key.revoked (the remover
// as actor, the removal's request id, via member.removed) and announced on
// its own subject, so the keys answer 410 and proxies drop them at once.
// Re-adding the person brings none back. A member leaving
// (DELETE /users/me) is a removal too. Their keys in another tenant,
// other members' keys and a key revoked before are untouched, and a
// refused removal revokes nothing.
func TestRemovedMemberKeysRevoked(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	other := x.SeedTenant(t, "Other")
	owner := x.SeedUserIn(t, ten.ID, "owner@acme.test", "owner")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	gone := x.SeedUserIn(t, ten.ID, "gone@acme.test", "admin")
	x.SeedMember(t, other.ID, gone.UserID, "admin")
	goneThere := x.IdentityOf(t, gone.UserID, other.ID)
	body := map[string]any{"name": "k", "permissions": []string{"users:read"}}
	keys := []created{x.create(t, gone, "/api/v1/api-keys", body), x.create(t, gone, "/api/v1/users/me/api-keys", body)}
	before := x.create(t, gone, "/api/v1/users/me/api-keys", body)
	if r := x.Send(t, &gone, http.MethodDelete, "/api/v1/users/me/api-keys/"+before.ID, nil); r.Status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	kept := []created{x.create(t, admin, "/api/v1/api-keys", body), x.create(t, owner, "/api/v1/users/me/api-keys", body),
		x.create(t, goneThere, "/api/v1/api-keys", body)}

	// Refused (an admin may not remove the owner): nothing revoked.
	wantProblem(t, x.Send(t, &admin, http.MethodDelete, "/api/v1/users/"+owner.UserID, nil), 403, "forbidden")
	if p := x.resolved(t, kept[1].Secret); !p.Active() {
		t.Fatalf("the owner's key after a refused removal: %+v", p)
	}

	r := x.Send(t, &owner, http.MethodDelete, "/api/v1/users/"+gone.UserID, nil)
	if r.Status != http.StatusNoContent {
		t.Fatalf("remove member: %d %s", r.Status, r.Body)
	}
	var reqID string
	if err := x.DB.Pool.QueryRow(context.Background(), `SELECT request_id FROM audit_events
WHERE tenant_id = $1 AND action = 'member.removed' AND target_id = $2`, ten.ID, gone.UserID).Scan(&reqID); err != nil || reqID == "" {
		t.Fatalf("member.removed request id %q: %v", reqID, err)
	}
	for _, k := range keys {
		wantProblem(t, x.resolve(t, k.Secret), 410, "api_key_revoked")
		if n := x.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = $2`,
			invalidation.APIKeySubject(k.PublicID), invalidation.ReasonAPIKeyRevoked); n != 1 {
			t.Errorf("%d invalidations of the %s key, want 1", n, k.Kind)
		}
		if n := x.count(t, `SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND action = 'api_key.revoked' AND target_id = $2
AND actor_user_id = $3 AND request_id = $4 AND data->>'via' = 'member.removed' AND data->>'public_id' = $5`,
			ten.ID, k.ID, owner.UserID, reqID, k.PublicID); n != 1 {
			t.Errorf("%d revocation audit events of the %s key, want 1", n, k.Kind)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'api_key.revoked' AND target_id = $1`, before.ID); n != 1 {
		t.Errorf("the key revoked before: %d revocation events, want 1", n)
	}
	for _, k := range kept {
		if p := x.resolved(t, k.Secret); !p.Active() {
			t.Errorf("another key after the removal: %+v", p)
		}
	}
	listed, _ := x.list(t, owner, "/api/v1/api-keys")
	for _, k := range listed {
		if k.UserID == gone.UserID {
			t.Errorf("the removed member's key %s is still listed", k.ID)
		}
	}

	// Added back: the keys stay revoked.
	x.SeedMember(t, ten.ID, gone.UserID, "admin")
	for _, k := range keys {
		wantProblem(t, x.resolve(t, k.Secret), 410, "api_key_revoked")
	}

	// Leaving (DELETE /users/me, for a member holding users:write) is a
	// removal too, with the leaver as actor.
	leaver := x.SeedUserIn(t, ten.ID, "leaver@acme.test", "admin")
	lk := x.create(t, leaver, "/api/v1/users/me/api-keys", body)
	if r := x.Send(t, &leaver, http.MethodDelete, "/api/v1/users/me", nil); r.Status != http.StatusNoContent {
		t.Fatalf("leave: %d %s", r.Status, r.Body)
	}
	wantProblem(t, x.resolve(t, lk.Secret), 410, "api_key_revoked")
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'api_key.revoked' AND target_id = $1
AND actor_user_id = $2 AND data->>'via' = 'member.removed'`, lk.ID, leaver.UserID); n != 1 {
		t.Errorf("%d revocation audit events of the leaver's key, want 1", n)
	}
}

// TestDisabledMemberKeysPaused: disabling a member (PATCH /users/{id})
// keeps their keys but makes them do nothing: the key resolves with the
// disabled membership (not active: a proxy refuses it, 401), the user's
// invalidation makes proxies refetch, and nothing is revoked.
// Enabling the member again gives the keys back, with the member's
// permissions.
func TestDisabledMemberKeysPaused(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	owner := x.SeedUserIn(t, ten.ID, "owner@acme.test", "owner")
	m := x.SeedUserIn(t, ten.ID, "m@acme.test", "member")
	k := x.create(t, m, "/api/v1/users/me/api-keys", map[string]any{"name": "laptop", "permissions": []string{"tenant:read"}})
	if p := x.resolved(t, k.Secret); !p.Active() || !slices.Equal(p.Permissions, []string{"tenant:read"}) {
		t.Fatalf("before: %+v", p)
	}
	setStatus := func(status string) {
		t.Helper()
		r := x.Send(t, &owner, http.MethodPatch, "/api/v1/users/"+m.UserID, map[string]any{"membership_status": status})
		if r.Status != http.StatusOK {
			t.Fatalf("PATCH membership_status %s: %d %s", status, r.Status, r.Body)
		}
	}

	setStatus(identity.StatusDisabled)
	p := x.resolved(t, k.Secret)
	if p.Active() || p.MembershipStatus != identity.StatusDisabled || p.UserStatus != identity.StatusActive {
		t.Fatalf("disabled: %+v", p)
	}
	if n := x.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = $2`,
		invalidation.UserSubject(m.UserID), invalidation.ReasonMemberStatus(identity.StatusDisabled)); n != 1 {
		t.Fatalf("%d invalidations of the disabled member, want 1", n)
	}
	if n := x.count(t, `SELECT count(*) FROM api_keys WHERE id = $1 AND revoked_at IS NULL`, k.ID); n != 1 {
		t.Fatal("disabling the member revoked the key")
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'api_key.revoked'`) +
		x.count(t, `SELECT count(*) FROM outbox WHERE subject = $1`, invalidation.APIKeySubject(k.PublicID)); n != 0 {
		t.Fatalf("disabling the member wrote %d revocation rows", n)
	}
	if mine, _ := x.list(t, owner, "/api/v1/api-keys"); len(mine) != 1 || mine[0].ID != k.ID {
		t.Fatalf("keys listed while disabled: %+v", mine)
	}

	setStatus(identity.StatusActive)
	if p := x.resolved(t, k.Secret); !p.Active() || !slices.Equal(p.Permissions, []string{"tenant:read"}) {
		t.Fatalf("enabled again: %+v", p)
	}
}

// TestNoKeyAfterRemoval: a request still carrying a removed member's
// identity (a proxy that has not yet heard of the removal) creates no key:
// 403 no_membership, nothing stored, and the member's keys stay revoked.
func TestNoKeyAfterRemoval(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	owner := x.SeedUserIn(t, ten.ID, "owner@acme.test", "owner")
	gone := x.SeedUserIn(t, ten.ID, "gone@acme.test", "admin")
	body := map[string]any{"name": "k", "permissions": []string{}}
	x.create(t, gone, "/api/v1/users/me/api-keys", body)
	if r := x.Send(t, &owner, http.MethodDelete, "/api/v1/users/"+gone.UserID, nil); r.Status != http.StatusNoContent {
		t.Fatalf("remove member: %d %s", r.Status, r.Body)
	}
	// The removal also revoked the member's session (401 invalid_token);
	// the refusal under test is the membership's, which holds whatever
	// the session.
	gone.SessionID = ""
	for _, path := range []string{"/api/v1/api-keys", "/api/v1/users/me/api-keys"} {
		wantProblem(t, x.Send(t, &gone, http.MethodPost, path, body), 403, "no_membership")
	}
	if n := x.count(t, `SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL`, gone.UserID); n != 0 {
		t.Fatalf("%d live keys of the removed member", n)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'api_key.created' AND actor_user_id = $1`, gone.UserID); n != 1 {
		t.Fatalf("%d creation audit events, want 1 (the key made before the removal)", n)
	}
}

// TestListsPage: both key lists page as every list does (limit, cursor,
// next_cursor; newest first, ties by id), refuse include_total=true, a
// bad or repeated page parameter (400 invalid_query) and a cursor of
// another list, tenant or user (400 invalid_cursor).
func TestListsPage(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	m := x.SeedUserIn(t, ten.ID, "m@acme.test", "member")
	body := map[string]any{"name": "k", "permissions": []string{}}
	var all, mine []string
	for range 3 {
		all = append(all, x.create(t, admin, "/api/v1/api-keys", body).ID)
	}
	for range 4 {
		k := x.create(t, m, "/api/v1/users/me/api-keys", body)
		all, mine = append(all, k.ID), append(mine, k.ID)
	}
	// Three keys made in the same microsecond: their order is the id's.
	x.exec(t, `UPDATE api_keys SET created_at = '2026-01-01T00:00:00Z' WHERE id = ANY($1::uuid[])`, []string{all[1], all[3], all[5]})
	order := func(q string, args ...any) []string {
		t.Helper()
		rows, err := x.DB.Pool.Query(context.Background(), q, args...)
		if err != nil {
			t.Fatal(err)
		}
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	wantAll := order(`SELECT id::text FROM api_keys WHERE tenant_id = $1 ORDER BY created_at DESC, id`, ten.ID)
	wantMine := order(`SELECT id::text FROM api_keys WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at DESC, id`, ten.ID, m.UserID)
	if got := slices.Sorted(slices.Values(wantMine)); !slices.Equal(got, slices.Sorted(slices.Values(mine))) {
		t.Fatalf("the member's keys %v, want the %d made", got, len(mine))
	}

	type page struct {
		Data       []apikeys.Key `json:"data"`
		NextCursor *string       `json:"next_cursor"`
		Total      *int          `json:"total"`
	}
	walk := func(as identity.Identity, path string) ([]string, []string) {
		t.Helper()
		var got, cursors []string
		next := path + "?limit=2"
		for range 10 {
			r := x.Get(t, &as, next)
			if r.Status != http.StatusOK {
				t.Fatalf("GET %s: %d %s", next, r.Status, r.Body)
			}
			var p page
			r.JSON(t, &p)
			if p.Total != nil || len(p.Data) > 2 {
				t.Fatalf("GET %s: %s", next, r.Body)
			}
			for _, k := range p.Data {
				got = append(got, k.ID)
			}
			if p.NextCursor == nil {
				return got, cursors
			}
			cursors = append(cursors, *p.NextCursor)
			next = path + "?limit=2&cursor=" + url.QueryEscape(*p.NextCursor)
		}
		t.Fatalf("GET %s: more than 10 pages", path)
		return nil, nil
	}
	gotAll, allCursors := walk(admin, "/api/v1/api-keys")
	if !slices.Equal(gotAll, wantAll) {
		t.Errorf("tenant list pages = %v, want %v", gotAll, wantAll)
	}
	gotMine, mineCursors := walk(m, "/api/v1/users/me/api-keys")
	if !slices.Equal(gotMine, wantMine) {
		t.Errorf("personal list pages = %v, want %v", gotMine, wantMine)
	}
	// A full page is the whole list when it fits.
	if keys, body := x.list(t, admin, "/api/v1/api-keys"); len(keys) != len(all) || !strings.Contains(body, `"next_cursor":null`) {
		t.Errorf("first page: %s", body)
	}

	// A cursor is bound to its list and scope.
	other := x.SeedTenant(t, "Other")
	adminThere := x.SeedUserIn(t, other.ID, "admin@other.test", "admin")
	x.SeedMember(t, other.ID, m.UserID, "member")
	mThere := x.IdentityOf(t, m.UserID, other.ID)
	for _, c := range []struct {
		as   identity.Identity
		path string
	}{
		{admin, "/api/v1/api-keys?cursor=" + url.QueryEscape(mineCursors[0])},
		{m, "/api/v1/users/me/api-keys?cursor=" + url.QueryEscape(allCursors[0])},
		{adminThere, "/api/v1/api-keys?cursor=" + url.QueryEscape(allCursors[0])},
		{mThere, "/api/v1/users/me/api-keys?cursor=" + url.QueryEscape(mineCursors[0])},
		{admin, "/api/v1/users/me/api-keys?cursor=" + url.QueryEscape(mineCursors[0])},
		{admin, "/api/v1/api-keys?cursor=forged"},
	} {
		wantProblem(t, x.Get(t, &c.as, c.path), http.StatusBadRequest, "invalid_cursor")
	}
	for _, path := range []string{"/api/v1/api-keys", "/api/v1/users/me/api-keys"} {
		for _, q := range []string{"limit=0", "limit=201", "limit=x", "include_total=maybe", "include_total=true", "include_total=1",
			"limit=1&limit=2", "include_total=false&include_total=false", "cursor=" + url.QueryEscape(allCursors[0]) + "&cursor=x"} {
			r := x.Get(t, &admin, path+"?"+q)
			wantProblem(t, r, http.StatusBadRequest, "invalid_query")
			if strings.HasPrefix(q, "include_total=") && !strings.Contains(q, "&") {
				if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "include_total" {
					t.Errorf("%s?%s: errors = %+v, want one naming include_total", path, q, p.Errors)
				}
			}
		}
		if r := x.Get(t, &admin, path+"?include_total=false"); r.Status != http.StatusOK {
			t.Errorf("%s?include_total=false: %d %s", path, r.Status, r.Body)
		}
	}
}

// TestDemotedCreatorRefused: a request signed with the permissions its
// caller held before being demoted or disabled (in flight as that
// committed, or authorized from a projection its invalidation had not
// reached) creates no key with what it lost, and revokes no one's key
// without api-keys:write: what the caller holds is read again when the
// change runs.
func TestDemotedCreatorRefused(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	owner := x.SeedUserIn(t, ten.ID, "owner@acme.test", "owner")
	// stale is an admin's identity as signed before its demotion to member.
	stale := x.SeedUserIn(t, ten.ID, "stale@acme.test", "admin", "member")
	disabled := x.SeedUserIn(t, ten.ID, "disabled@acme.test", "admin")
	if r := x.Send(t, &owner, http.MethodDelete, "/api/v1/users/"+stale.UserID+"/roles/admin", nil); r.Status != http.StatusOK {
		t.Fatalf("demote: %d %s", r.Status, r.Body)
	}
	if r := x.Send(t, &owner, http.MethodPatch, "/api/v1/users/"+disabled.UserID, map[string]any{"membership_status": "disabled"}); r.Status != http.StatusOK {
		t.Fatalf("disable: %d %s", r.Status, r.Body)
	}
	// A key acting as the demoted admin holds no more than it does now.
	asKey := x.AsKey(t, stale)
	noKeys := func(t *testing.T, as identity.Identity) {
		t.Helper()
		if n := x.count(t, `SELECT count(*) FROM api_keys WHERE user_id = $1 AND permissions <> '{tenant:read}' AND id::text <> $2`,
			as.UserID, asKey.SessionID); n != 0 {
			t.Fatalf("%d keys created with lost permissions", n)
		}
	}
	for name, as := range map[string]identity.Identity{"demoted": stale, "disabled": disabled, "demoted's key": asKey} {
		if as.Principal != identity.PrincipalAPIKey { // a key creates no key (TestCreateRefused)
			t.Run(name+" creates a tenant key", func(t *testing.T) {
				wantProblem(t, x.Send(t, &as, http.MethodPost, "/api/v1/api-keys", map[string]any{"name": "x", "permissions": []string{}}), 403, "forbidden")
				noKeys(t, as)
			})
		}
		t.Run(name+" revokes another's key", func(t *testing.T) {
			victim := x.create(t, owner, "/api/v1/api-keys", map[string]any{"name": "prod", "permissions": []string{"users:read"}})
			wantProblem(t, x.Send(t, &as, http.MethodDelete, "/api/v1/api-keys/"+victim.ID, nil), 403, "forbidden")
			if n := x.count(t, `SELECT count(*) FROM api_keys WHERE id = $1 AND revoked_at IS NULL`, victim.ID); n != 1 {
				t.Fatal("the key was revoked")
			}
		})
	}
	t.Run("demoted creates a personal key with what it lost", func(t *testing.T) {
		wantProblem(t, x.Send(t, &stale, http.MethodPost, "/api/v1/users/me/api-keys",
			map[string]any{"name": "x", "permissions": []string{"users:write"}}), 403, "forbidden")
		noKeys(t, stale)
		// What the member still holds it may still hand its keys.
		x.create(t, stale, "/api/v1/users/me/api-keys", map[string]any{"name": "laptop", "permissions": []string{"tenant:read"}})
	})
	t.Run("disabled creates a personal key", func(t *testing.T) {
		wantProblem(t, x.Send(t, &disabled, http.MethodPost, "/api/v1/users/me/api-keys",
			map[string]any{"name": "x", "permissions": []string{"users:read"}}), 403, "forbidden")
		noKeys(t, disabled)
	})
}

// TestRevokeNeedsWhatTheKeyMayDo: revoking a key cuts off whoever uses it
// with what it may do now (its permissions that its creator still holds),
// so it needs every one of them, as removing, disabling or demoting its
// creator does: a holder of api-keys:write who holds less cannot end the
// owner's integrations. A key listing a permission its creator lost may
// be revoked by one who holds the rest. A weaker key of the same person
// cannot revoke a stronger one either, under /api-keys or /users/me.
func TestRevokeNeedsWhatTheKeyMayDo(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	x.exec(t, `INSERT INTO roles (tenant_id, name, permissions) VALUES ($1, 'key-manager', '{api-keys:write,tenant:read}')`, ten.ID)
	owner := x.SeedUserIn(t, ten.ID, "owner@acme.test", "owner")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	keyManager := x.SeedUserIn(t, ten.ID, "keys@acme.test", "key-manager")
	member := x.SeedUserIn(t, ten.ID, "member@acme.test", "member")
	live := func(t *testing.T, k created) bool {
		t.Helper()
		return x.count(t, `SELECT count(*) FROM api_keys WHERE id = $1 AND revoked_at IS NULL`, k.ID) == 1
	}

	strong := x.create(t, owner, "/api/v1/api-keys", map[string]any{"name": "billing", "permissions": []string{"tenant:write", "users:read"}})
	strongMine := x.create(t, owner, "/api/v1/users/me/api-keys", map[string]any{"name": "laptop", "permissions": []string{"tenant:write"}})
	for name, as := range map[string]identity.Identity{"admin": admin, "key manager": keyManager} {
		for _, k := range []created{strong, strongMine} {
			wantProblem(t, x.Send(t, &as, http.MethodDelete, "/api/v1/api-keys/"+k.ID, nil), 403, "forbidden")
			if !live(t, k) {
				t.Fatalf("%s revoked the owner's key %s", name, k.Name)
			}
		}
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'api_key.revoked'`); n != 0 {
		t.Fatalf("%d revocations audited", n)
	}

	// A weaker key of the owner, holding api-keys:write, revokes neither.
	weakKey := x.AsKey(t, owner)
	weakKey.Permissions = []string{"api-keys:write", "tenant:read"}
	wantProblem(t, x.Send(t, &weakKey, http.MethodDelete, "/api/v1/api-keys/"+strong.ID, nil), 403, "forbidden")
	wantProblem(t, x.Send(t, &weakKey, http.MethodDelete, "/api/v1/users/me/api-keys/"+strongMine.ID, nil), 403, "forbidden")
	if !live(t, strong) || !live(t, strongMine) {
		t.Fatal("a weaker key revoked a stronger one")
	}

	// What the key may do now is what counts: the admin's key listing
	// users:write, once its creator is demoted to member, may do
	// tenant:read only, which the key manager holds.
	demoted := x.create(t, admin, "/api/v1/api-keys", map[string]any{"name": "sync", "permissions": []string{"tenant:read", "users:write"}})
	wantProblem(t, x.Send(t, &keyManager, http.MethodDelete, "/api/v1/api-keys/"+demoted.ID, nil), 403, "forbidden")
	x.exec(t, `DELETE FROM membership_roles mr USING roles r WHERE r.id = mr.role_id AND r.name = 'admin' AND mr.user_id = $1`, admin.UserID)
	x.exec(t, `INSERT INTO membership_roles (tenant_id, user_id, role_id) SELECT $1, $2, id FROM roles WHERE tenant_id = $1 AND name = 'member'`, ten.ID, admin.UserID)
	if r := x.Send(t, &keyManager, http.MethodDelete, "/api/v1/api-keys/"+demoted.ID, nil); r.Status != http.StatusNoContent {
		t.Fatalf("key manager revoking the demoted admin's key: %d %s", r.Status, r.Body)
	}

	// Within what they hold they revoke as before: a member's key, their
	// own; and the owner revokes anything.
	mk := x.create(t, member, "/api/v1/users/me/api-keys", map[string]any{"name": "cli", "permissions": []string{"tenant:read"}})
	own := x.create(t, keyManager, "/api/v1/api-keys", map[string]any{"name": "mine", "permissions": []string{"api-keys:write"}})
	for _, k := range []created{mk, own} {
		if r := x.Send(t, &keyManager, http.MethodDelete, "/api/v1/api-keys/"+k.ID, nil); r.Status != http.StatusNoContent {
			t.Fatalf("key manager revoking %s: %d %s", k.Name, r.Status, r.Body)
		}
	}
	if r := x.Send(t, &owner, http.MethodDelete, "/api/v1/users/me/api-keys/"+strongMine.ID, nil); r.Status != http.StatusNoContent {
		t.Fatalf("the owner revoking their key: %d %s", r.Status, r.Body)
	}
	if r := x.Send(t, &owner, http.MethodDelete, "/api/v1/api-keys/"+strong.ID, nil); r.Status != http.StatusNoContent {
		t.Fatalf("the owner revoking their tenant key: %d %s", r.Status, r.Body)
	}
}

// TestLiveKeyLimit: a tenant holds at most MaxLivePerTenant live keys;
// revoked and expired ones do not count, so keys that expire on their own
// (one per CI job, say) never fill the tenant up. They counted, and such a
// tenant was refused every new key once it had made 500.
func TestLiveKeyLimit(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	seed := func(prefix string, n int, expires, revoked string) {
		t.Helper()
		x.exec(t, `
INSERT INTO api_keys (public_id, tenant_id, user_id, kind, name, secret_hash, expires_at, revoked_at)
SELECT $1 || lpad(i::text, 15, '0'), $2, $3, 'tenant', 'seeded', sha256(($1 || i)::bytea), `+expires+`, `+revoked+`
FROM generate_series(1, $4) AS i`, prefix, ten.ID, admin.UserID, n)
	}
	seed("a", apikeys.MaxLivePerTenant-1, "NULL", "NULL")
	seed("b", 20, "now() - interval '1 hour'", "NULL")
	seed("c", 20, "NULL", "now()")
	body := map[string]any{"name": "ci", "permissions": []string{}}
	x.create(t, admin, "/api/v1/api-keys", body)
	wantProblem(t, x.Send(t, &admin, http.MethodPost, "/api/v1/api-keys", body), 409, "conflict")
	// One more expires: there is room for one more.
	x.exec(t, `UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE public_id = 'a000000000000001'`)
	x.create(t, admin, "/api/v1/api-keys", body)
	wantProblem(t, x.Send(t, &admin, http.MethodPost, "/api/v1/api-keys", body), 409, "conflict")
	// Personal keys count apart, per member: the tenant's keys being at
	// their limit leaves a member's own.
	x.create(t, admin, "/api/v1/users/me/api-keys", body)
}

// TestPersonalKeyLimit: a member holds at most MaxLivePersonalPerMember
// live personal keys, and they do not count against the tenant's
// MaxLivePerTenant. A member holding no permission at all could make
// personal keys until the tenant held 500 live ones, and every tenant key
// (a CI job's, a service account's) and every other member's personal key
// was then refused with 409 until an admin found and revoked them.
func TestPersonalKeyLimit(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	m1 := x.SeedUserIn(t, ten.ID, "m1@acme.test", "member")
	m2 := x.SeedUserIn(t, ten.ID, "m2@acme.test", "member")
	seed := func(prefix string, n int, expires, revoked string) {
		t.Helper()
		x.exec(t, `
INSERT INTO api_keys (public_id, tenant_id, user_id, kind, name, secret_hash, expires_at, revoked_at)
SELECT $1 || lpad(i::text, 15, '0'), $2, $3, 'personal', 'seeded', sha256(($1 || i)::bytea), `+expires+`, `+revoked+`
FROM generate_series(1, $4) AS i`, prefix, ten.ID, m1.UserID, n)
	}
	seed("a", apikeys.MaxLivePersonalPerMember-1, "NULL", "NULL")
	seed("b", 20, "now() - interval '1 hour'", "NULL")
	seed("c", 20, "NULL", "now()")
	body := map[string]any{"name": "laptop", "permissions": []string{}}
	x.create(t, m1, "/api/v1/users/me/api-keys", body)
	wantProblem(t, x.Send(t, &m1, http.MethodPost, "/api/v1/users/me/api-keys", body), 409, "conflict")
	// Another member's and the tenant's keys are not affected.
	x.create(t, m2, "/api/v1/users/me/api-keys", body)
	x.create(t, admin, "/api/v1/api-keys", body)
	// A member at their limit fills no tenant: with the tenant's own keys
	// one short of theirs, one more tenant key still fits.
	x.exec(t, `
INSERT INTO api_keys (public_id, tenant_id, user_id, kind, name, secret_hash)
SELECT 'd' || lpad(i::text, 15, '0'), $1, $2, 'tenant', 'seeded', sha256(('d' || i)::bytea)
FROM generate_series(1, $3) AS i`, ten.ID, admin.UserID, apikeys.MaxLivePerTenant-2)
	x.create(t, admin, "/api/v1/api-keys", body)
	wantProblem(t, x.Send(t, &admin, http.MethodPost, "/api/v1/api-keys", body), 409, "conflict")
	// One of m1's expires: there is room for one more.
	x.exec(t, `UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE public_id = 'a000000000000001'`)
	x.create(t, m1, "/api/v1/users/me/api-keys", body)
}

// TestSweep: keys revoked or expired more than SweepKeep ago are deleted;
// live keys, and keys revoked or expired since, stay. Neither the
// live-key limit nor the listing counts such keys, so without the sweep a
// caller making short-lived keys grew the table without end.
func TestSweep(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	mk := func(name string) string {
		return x.create(t, admin, "/api/v1/api-keys", map[string]any{"name": name, "permissions": []string{}}).ID
	}
	live, revokedOld, revokedNew, expiredOld, expiredNew := mk("live"), mk("revoked-old"), mk("revoked-new"), mk("expired-old"), mk("expired-new")
	old := apikeys.SweepKeep + time.Hour
	x.exec(t, `UPDATE api_keys SET revoked_at = now() - make_interval(secs => $2) WHERE id = $1`, revokedOld, old.Seconds())
	x.exec(t, `UPDATE api_keys SET revoked_at = now() - interval '1 hour' WHERE id = $1`, revokedNew)
	x.exec(t, `UPDATE api_keys SET expires_at = now() - make_interval(secs => $2) WHERE id = $1`, expiredOld, old.Seconds())
	x.exec(t, `UPDATE api_keys SET expires_at = now() - interval '1 hour' WHERE id = $1`, expiredNew)
	n, err := x.svc.Store().Sweep(context.Background(), apikeys.SweepKeep)
	if err != nil || n != 2 {
		t.Fatalf("Sweep = %d, %v; want 2 keys", n, err)
	}
	for id, want := range map[string]int{live: 1, revokedNew: 1, expiredNew: 1, revokedOld: 0, expiredOld: 0} {
		if got := x.count(t, `SELECT count(*) FROM api_keys WHERE id = $1`, id); got != want {
			t.Errorf("key %s: %d rows after the sweep, want %d", id, got, want)
		}
	}
}

// TestRevokedKeyUseAuditsTheClient: the audit row of a revoked key's use
// names the address of the client that presented the key, as the proxy
// tells it in the resolve, not the address of the proxy asking (the
// resolve is the proxy's own call, whose signature names no client): the
// row said where every use came from was the proxy, and a leaked key
// still in use could not be traced. A resolve naming no client records
// none; one naming something that is no address is refused.
func TestRevokedKeyUseAuditsTheClient(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	k := x.create(t, admin, "/api/v1/api-keys", map[string]any{"name": "ci", "permissions": []string{"users:read"}})
	if r := x.Send(t, &admin, http.MethodDelete, "/api/v1/api-keys/"+k.ID, nil); r.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	resolve := func(ip string) apitest.Response {
		return x.Do(t, apitest.Request{Method: http.MethodPost, Path: apikey.ResolvePath,
			Body: apikey.ResolveRequest{Key: k.Secret, ClientIP: ip}, Service: true})
	}
	audited := func() []string {
		t.Helper()
		rows, err := x.DB.Pool.Query(context.Background(), `
SELECT data->>'client_ip' FROM audit_events WHERE action = 'api_key.used_after_revocation' AND target_id = $1 ORDER BY id`, k.ID)
		if err != nil {
			t.Fatal(err)
		}
		ips, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return ips
	}
	wantProblem(t, resolve("203.0.113.7"), 410, "api_key_revoked")
	wantProblem(t, resolve("2001:DB8::7"), 410, "api_key_revoked")
	wantProblem(t, resolve("::ffff:198.51.100.9"), 410, "api_key_revoked")
	wantProblem(t, resolve(""), 410, "api_key_revoked")
	if got, want := audited(), []string{"203.0.113.7", "2001:db8::7", "198.51.100.9", ""}; !slices.Equal(got, want) {
		t.Fatalf("audited client addresses %q, want %q", got, want)
	}
	for _, bad := range []string{"proxy", "203.0.113.7:443", "203.0.113.7, 10.0.0.1", strings.Repeat("1", 100)} {
		r := resolve(bad)
		wantProblem(t, r, http.StatusUnprocessableEntity, "validation_failed")
	}
	if n := len(audited()); n != 4 {
		t.Fatalf("%d use-after-revocation events after refused resolves, want 4", n)
	}
}

// TestRevokedKeyUsesAuditedUpToALimit: a revoked key presented again and
// again (a leaked key in a loop, through proxies that each remember the
// refusal only for NEGATIVE_CACHE_TTL) is refused every time, and audited
// at most RevokedUseAuditLimit times in the window: the rows filled the
// tenant's audit log without bound. Another key has its own budget.
func TestRevokedKeyUsesAuditedUpToALimit(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	var keys []created
	for _, name := range []string{"ci", "cd"} {
		k := x.create(t, admin, "/api/v1/api-keys", map[string]any{"name": name, "permissions": []string{"users:read"}})
		if r := x.Send(t, &admin, http.MethodDelete, "/api/v1/api-keys/"+k.ID, nil); r.Status != http.StatusNoContent {
			t.Fatalf("delete: %d %s", r.Status, r.Body)
		}
		keys = append(keys, k)
	}
	resolve := func(k created) apitest.Response {
		return x.Do(t, apitest.Request{Method: http.MethodPost, Path: apikey.ResolvePath,
			Body: apikey.ResolveRequest{Key: k.Secret, ClientIP: "203.0.113.7"}, Service: true})
	}
	limit := apikeys.DefaultLimits().RevokedUseAudit.N
	for range limit + 5 {
		wantProblem(t, resolve(keys[0]), 410, "api_key_revoked")
	}
	wantProblem(t, resolve(keys[1]), 410, "api_key_revoked")
	for i, want := range []int{limit, 1} {
		if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'api_key.used_after_revocation' AND target_id = $1`, keys[i].ID); n != want {
			t.Errorf("key %d: %d use-after-revocation events, want %d", i, n, want)
		}
	}
}

// TestPersonalCreationsLimited: a member creates at most
// Limits.PersonalCreations.N personal keys in a tenant in its window, revoked
// and expired ones included, then 429 with Retry-After and nothing
// written; another member and tenant keys are not held
// back, and a creation refused otherwise is not counted. Without it a
// member holding no permission created and revoked keys without end: a
// row, an audit row and an invalidation to every proxy each.
func TestPersonalCreationsLimited(t *testing.T) {
	x := startWith(t, apikeys.Options{Pepper: pepper, Limits: apikeys.Limits{PersonalCreations: ratelimit.Limit{N: 3, Window: time.Hour}}})
	ten := x.SeedTenant(t, "Acme")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	m := x.SeedUserIn(t, ten.ID, "m@acme.test", "member")
	m2 := x.SeedUserIn(t, ten.ID, "m2@acme.test", "member")
	body := map[string]any{"name": "laptop", "permissions": []string{}}
	// Refused for another reason: not counted.
	wantProblem(t, x.Send(t, &m, http.MethodPost, "/api/v1/users/me/api-keys",
		map[string]any{"name": "laptop", "permissions": []string{"tenant:write"}}), 403, "insufficient_scope")
	for i := range 3 {
		k := x.create(t, m, "/api/v1/users/me/api-keys", body)
		if i == 0 {
			if r := x.Send(t, &m, http.MethodDelete, "/api/v1/users/me/api-keys/"+k.ID, nil); r.Status != http.StatusNoContent {
				t.Fatalf("revoke: %d %s", r.Status, r.Body)
			}
		}
		if i == 1 {
			x.exec(t, `UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE id = $1`, k.ID)
		}
	}
	before := x.count(t, `SELECT count(*) FROM api_keys`)
	r := x.Send(t, &m, http.MethodPost, "/api/v1/users/me/api-keys", body)
	wantProblem(t, r, http.StatusTooManyRequests, "too_many_requests")
	if r.Header.Get("Retry-After") == "" {
		t.Errorf("429 without Retry-After: %v", r.Header)
	}
	if after := x.count(t, `SELECT count(*) FROM api_keys`); after != before {
		t.Fatalf("%d keys after the refusal, %d before", after, before)
	}
	x.create(t, m2, "/api/v1/users/me/api-keys", body)
	x.create(t, admin, "/api/v1/api-keys", body)
}

// TestTenantCreationsLimited: a tenant creates at most
// Limits.TenantCreations tenant keys in a window, revoked and expired ones included (anyone can
// own a tenant, and each revocation reaches every proxy); a creation
// refused for another reason does not count, another tenant and the
// members' personal keys have budgets of their own.
func TestTenantCreationsLimited(t *testing.T) {
	x := startWith(t, apikeys.Options{Pepper: pepper, Limits: apikeys.Limits{TenantCreations: ratelimit.Limit{N: 3, Window: time.Hour}}})
	ten := x.SeedTenant(t, "Acme")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	m := x.SeedUserIn(t, ten.ID, "m@acme.test", "member")
	other := x.SeedTenant(t, "Other")
	otherAdmin := x.SeedUserIn(t, other.ID, "admin@other.test", "admin")
	body := map[string]any{"name": "ci", "permissions": []string{}}
	// Refused for another reason: not counted.
	wantProblem(t, x.Send(t, &admin, http.MethodPost, "/api/v1/api-keys",
		map[string]any{"name": "ci", "permissions": []string{"tenant:write"}}), 403, "insufficient_scope")
	for i := range 3 {
		k := x.create(t, admin, "/api/v1/api-keys", body)
		if i == 0 {
			if r := x.Send(t, &admin, http.MethodDelete, "/api/v1/api-keys/"+k.ID, nil); r.Status != http.StatusNoContent {
				t.Fatalf("revoke: %d %s", r.Status, r.Body)
			}
		}
		if i == 1 {
			x.exec(t, `UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE id = $1`, k.ID)
		}
	}
	before := x.count(t, `SELECT count(*) FROM api_keys`)
	r := x.Send(t, &admin, http.MethodPost, "/api/v1/api-keys", body)
	wantProblem(t, r, http.StatusTooManyRequests, "too_many_requests")
	if r.Header.Get("Retry-After") == "" {
		t.Errorf("429 without Retry-After: %v", r.Header)
	}
	if d := r.Problem(t).Detail; !strings.Contains(d, "API_KEY_CREATIONS_PER_HOUR") {
		t.Errorf("detail %q does not name the setting", d)
	}
	if after := x.count(t, `SELECT count(*) FROM api_keys`); after != before {
		t.Fatalf("%d keys after the refusal, %d before", after, before)
	}
	x.create(t, otherAdmin, "/api/v1/api-keys", body)
	x.create(t, m, "/api/v1/users/me/api-keys", body)
}

// TestExpiryAtLeastAMinuteAhead: an expires_at is checked as stored, to
// the microsecond, and must be at least MinLifetime ahead. One less than a
// microsecond after the clock passed "in the future" and was stored
// truncated, before it: the key was created expired (201, a secret that
// never worked). Both it and one a few seconds ahead are 422 naming
// expires_at, nothing written; MinLifetime ahead is created.
func TestExpiryAtLeastAMinuteAhead(t *testing.T) {
	// A clock a few hundred nanoseconds into a microsecond.
	at := time.Now().UTC().Truncate(time.Microsecond).Add(300 * time.Nanosecond)
	x := startAt(t, pepper, func() time.Time { return at })
	ten := x.SeedTenant(t, "Acme")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	for name, exp := range map[string]time.Time{
		"under a microsecond ahead": at.Add(500 * time.Nanosecond),
		"a few seconds ahead":       at.Add(5 * time.Second),
		"just under a minute ahead": at.Add(apikeys.MinLifetime - time.Microsecond),
	} {
		r := x.Send(t, &admin, http.MethodPost, "/api/v1/api-keys",
			map[string]any{"name": "ci", "permissions": []string{}, "expires_at": exp.Format(time.RFC3339Nano)})
		if r.Status != http.StatusUnprocessableEntity {
			t.Errorf("%s: %d %s", name, r.Status, r.Body)
			continue
		}
		if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "expires_at" {
			t.Errorf("%s: errors %+v, want one on expires_at", name, p.Errors)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM api_keys`); n != 0 {
		t.Fatalf("%d keys stored by refused requests", n)
	}
	exp := at.Add(apikeys.MinLifetime).Truncate(time.Microsecond).Add(time.Microsecond)
	k := x.create(t, admin, "/api/v1/api-keys", map[string]any{"name": "ci", "permissions": []string{}, "expires_at": exp})
	if k.ExpiresAt == nil || !k.ExpiresAt.Equal(exp) {
		t.Fatalf("expires_at %v, want %v", k.ExpiresAt, exp)
	}
}

// TestUseReportBesideARevocation: a use report and a revocation of a
// user's keys (a member's removal, a service account or its secret
// deleted) never wait for each other in turn. The report reached the rows
// by their public ids, the revocation by their user, in other orders:
// each held a row the other waited for, and PostgreSQL failed one of them
// (the report, or the removal with a 500). The report locks in the order
// of the ids, as the revocation does, and skips the keys another
// transaction holds (marked by a later report): it does not wait behind
// the revocation, which completes once what it waits for commits.
func TestUseReportBesideARevocation(t *testing.T) {
	x := start(t, pepper)
	ctx := context.Background()
	ten := x.SeedTenant(t, "Acme")
	owner := x.SeedUserIn(t, ten.ID, "owner@acme.test", "owner")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	body := map[string]any{"name": "k", "permissions": []string{}}
	first, second := x.create(t, admin, "/api/v1/api-keys", body), x.create(t, admin, "/api/v1/api-keys", body)
	// The row written first gets the public id that sorts last.
	x.exec(t, `UPDATE api_keys SET public_id = 'zzzzzzzzzzzzzzzz' WHERE id = $1`, first.ID)
	x.exec(t, `UPDATE api_keys SET public_id = 'aaaaaaaaaaaaaaaa' WHERE id = $1`, second.ID)
	// Keys enough of others that each statement reads its rows through its
	// index, as on a server: the report by public id, the removal by user.
	x.exec(t, `INSERT INTO api_keys (public_id, tenant_id, user_id, kind, name, secret_hash)
SELECT lpad(to_hex(i), 16, '0'), $1, $2, 'tenant', 'other', sha256(i::text::bytea) FROM generate_series(1, 5000) i`, ten.ID, owner.UserID)
	x.exec(t, `ANALYZE api_keys`)
	waiting := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); x.count(t, `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'`) < n; {
			if time.Now().After(deadline) {
				t.Fatalf("fewer than %d transactions waiting for a lock", n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	hold, err := x.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, `SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE`, first.ID); err != nil {
		t.Fatal(err)
	}
	revoked := make(chan error, 1)
	go func() {
		revoked <- pgx.BeginFunc(ctx, x.DB.Pool, func(tx pgx.Tx) error {
			_, err := apikeys.RevokeUserKeys(ctx, tx, ten.ID, admin.UserID, owner.UserID, "req-1", "test.cause")
			return err
		})
	}()
	waiting(1)
	// The report returns while the revocation still waits: it skips the
	// keys held, and waits for none.
	if _, err := x.svc.Store().MarkUsed(ctx, []string{"zzzzzzzzzzzzzzzz", "aaaaaaaaaaaaaaaa"}); err != nil {
		t.Errorf("MarkUsed beside a revocation = %v", err)
	}
	select {
	case err := <-revoked:
		t.Fatalf("the revocation returned (%v) while a key it revokes was held", err)
	default:
	}
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-revoked; err != nil {
		t.Errorf("RevokeUserKeys beside a use report = %v", err)
	}
	if n := x.count(t, `SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NOT NULL`, admin.UserID); n != 2 {
		t.Errorf("%d keys revoked, want 2", n)
	}
}

// TestSweepBesideARevocation: the sweep passes over the keys another
// transaction holds, so it cannot deadlock with a revocation of a user's
// keys, which locks them in the order of their ids while the sweep read
// them in the table's: each held a row the other waited for, and
// PostgreSQL failed one of them (the sweep, or a member's removal with a
// 500). A key passed over is swept next time.
func TestSweepBesideARevocation(t *testing.T) {
	x := start(t, pepper)
	ctx := context.Background()
	ten := x.SeedTenant(t, "Acme")
	owner := x.SeedUserIn(t, ten.ID, "owner@acme.test", "owner")
	admin := x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	body := map[string]any{"name": "k", "permissions": []string{}}
	low, high := x.create(t, admin, "/api/v1/api-keys", body).ID, x.create(t, admin, "/api/v1/api-keys", body).ID
	if high < low {
		low, high = high, low
	}
	// Expired long ago, written again in the order opposite to their ids'.
	old := (apikeys.SweepKeep + time.Hour).Seconds()
	x.exec(t, `UPDATE api_keys SET expires_at = now() - make_interval(secs => $2) WHERE id = $1`, high, old)
	x.exec(t, `UPDATE api_keys SET expires_at = now() - make_interval(secs => $2) WHERE id = $1`, low, old)
	waiters := func() int {
		return x.count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`)
	}
	hold, err := x.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, `SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE`, low); err != nil {
		t.Fatal(err)
	}
	revoked := make(chan error, 1)
	go func() {
		revoked <- pgx.BeginFunc(ctx, x.DB.Pool, func(tx pgx.Tx) error {
			_, err := apikeys.RevokeUserKeys(ctx, tx, ten.ID, admin.UserID, owner.UserID, "req-1", "test.cause")
			return err
		})
	}()
	for deadline := time.Now().Add(10 * time.Second); waiters() < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the revocation is not waiting for the key held")
		}
	}
	swept := dbtest.AnsweredOrWaitingFor(t, x.DB, 2, func() error {
		_, err := x.svc.Store().Sweep(ctx, apikeys.SweepKeep)
		return err
	})
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-revoked; err != nil {
		t.Errorf("RevokeUserKeys beside the sweep = %v", err)
	}
	if sweepErr := swept(); sweepErr != nil {
		t.Errorf("Sweep beside a revocation = %v", sweepErr)
	}
	if n := x.count(t, `SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL`, admin.UserID); n != 0 {
		t.Errorf("%d keys neither revoked nor swept", n)
	}
}

// TestSweepReadsItsIndexes: the sweep finds the keys revoked or expired
// long ago through the partial indexes of revoked_at and expires_at
// (migration 00047); with none, it read every key of every tenant each
// round, however few it deleted.
func TestSweepReadsItsIndexes(t *testing.T) {
	x := start(t, pepper)
	ctx := context.Background()
	ten := x.SeedTenant(t, "Acme")
	x.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	old := (apikeys.SweepKeep + time.Hour).Seconds()
	// 20,000 live keys, 10 revoked and 10 expired long ago.
	x.exec(t, `
INSERT INTO api_keys (public_id, tenant_id, user_id, kind, name, secret_hash, revoked_at, expires_at)
SELECT lpad(to_hex(i), 16, '0'), m.tenant_id, m.user_id, 'tenant', 'k', sha256(i::text::bytea),
       CASE WHEN i <= 10 THEN now() - make_interval(secs => $2) END,
       CASE WHEN i BETWEEN 11 AND 20 THEN now() - make_interval(secs => $2) END
FROM generate_series(1, 20020) i, (SELECT tenant_id, user_id FROM memberships WHERE tenant_id = $1 LIMIT 1) m`, ten.ID, old)
	x.exec(t, `ANALYZE api_keys`)
	plan := x.DB.Plan(t, apikeys.QSweep, apikeys.SweepKeep.Seconds(), sweep.Batch)
	for _, idx := range []string{"api_keys_revoked_at_idx", "api_keys_expires_at_idx"} {
		if !strings.Contains(plan, idx) {
			t.Errorf("the sweep's plan does not read %s:\n%s", idx, plan)
		}
	}
	if strings.Contains(plan, "Seq Scan on api_keys") {
		t.Errorf("the sweep's plan reads the whole table:\n%s", plan)
	}
	if n, err := x.svc.Store().Sweep(ctx, apikeys.SweepKeep); err != nil || n != 20 {
		t.Errorf("Sweep = %d, %v; want the 20 keys ended long ago", n, err)
	}
}

// TestKeyReachesOnlyItsTenantsPersonalKeys: an API key acts in its own
// tenant only. Through GET and DELETE /users/me/api-keys it sees and
// revokes its creator's personal keys of that tenant, never those the
// creator made in another tenant (404, the key kept).
func TestKeyReachesOnlyItsTenantsPersonalKeys(t *testing.T) {
	x := start(t, pepper)
	a, b := x.SeedTenant(t, "Acme"), x.SeedTenant(t, "Bravo")
	inA := x.SeedUserIn(t, a.ID, "two@acme.test", "admin")
	x.SeedMember(t, b.ID, inA.UserID, "admin")
	inB := x.IdentityOf(t, inA.UserID, b.ID)
	mineA := x.create(t, inA, "/api/v1/users/me/api-keys", map[string]any{"name": "a", "permissions": []string{"tenant:read"}})
	mineB := x.create(t, inB, "/api/v1/users/me/api-keys", map[string]any{"name": "b", "permissions": []string{}})
	asKey := x.AsKey(t, inA)
	keys, _ := x.list(t, asKey, "/api/v1/users/me/api-keys")
	if len(keys) != 1 || keys[0].ID != mineA.ID {
		t.Fatalf("a key of tenant A lists %+v, want only its tenant's %s", keys, mineA.ID)
	}
	wantProblem(t, x.Send(t, &asKey, http.MethodDelete, "/api/v1/users/me/api-keys/"+mineB.ID, nil), 404, "not_found")
	if n := x.count(t, `SELECT count(*) FROM api_keys WHERE id = $1 AND revoked_at IS NULL`, mineB.ID); n != 1 {
		t.Fatal("a key of tenant A revoked its creator's key of tenant B")
	}
}

// TestNoPersonalKeyOfAnInactiveAccount: a personal key is not created by
// an account that is disabled, disabled in the tenant, or of a suspended
// tenant (403 user_disabled), whose bearer a proxy that has not yet heard
// of the change still forwards, not even one without permissions (which
// holds nothing the account lost, so the narrowing to what the caller
// holds now let it through): whoever held the bearer would keep a key
// that works again, for every route that asks no permission, the moment
// the account is active again. Nothing is stored; once active, the key
// is created.
func TestNoPersonalKeyOfAnInactiveAccount(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	x.SeedUserIn(t, ten.ID, "owner@acme.test", "owner")
	m := x.SeedUserIn(t, ten.ID, "m@acme.test", "member")
	body := map[string]any{"name": "laptop", "permissions": []string{}}
	states := []struct{ name, off, on string }{
		{"disabled account", `UPDATE users SET status = 'disabled' WHERE id = $1`, `UPDATE users SET status = 'active' WHERE id = $1`},
		{"disabled membership", `UPDATE memberships SET status = 'disabled' WHERE user_id = $1`, `UPDATE memberships SET status = 'active' WHERE user_id = $1`},
		{"suspended tenant", `UPDATE tenants SET status = 'suspended' WHERE id IN (SELECT tenant_id FROM memberships WHERE user_id = $1)`,
			`UPDATE tenants SET status = 'active' WHERE id IN (SELECT tenant_id FROM memberships WHERE user_id = $1)`},
	}
	for _, tc := range states {
		x.exec(t, tc.off, m.UserID)
		wantProblem(t, x.Send(t, &m, http.MethodPost, "/api/v1/users/me/api-keys", body), http.StatusForbidden, "user_disabled")
		x.exec(t, tc.on, m.UserID)
	}
	if n := x.count(t, `SELECT count(*) FROM api_keys WHERE user_id = $1`, m.UserID); n != 0 {
		t.Fatalf("%d keys of an inactive account", n)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'api_key.created'`); n != 0 {
		t.Fatalf("%d creation audit events of refused creations", n)
	}
	x.create(t, m, "/api/v1/users/me/api-keys", body)
}

// TestKeyRevokesOnlyKeysItCovers: a key acting through
// DELETE /users/me/api-keys/{id} revokes its creator's personal keys as
// its creator would, but only those whose every permission it holds: a
// weaker one (or one as strong), never a stronger one, one with a
// permission it lacks beside those it holds, or, holding nothing, one
// that holds anything (403 forbidden, the key kept).
func TestKeyRevokesOnlyKeysItCovers(t *testing.T) {
	x := start(t, pepper)
	ten := x.SeedTenant(t, "Acme")
	owner := x.SeedUserIn(t, ten.ID, "owner@acme.test", "owner")
	mine := func(name string, perms ...string) created {
		return x.create(t, owner, "/api/v1/users/me/api-keys", map[string]any{"name": name, "permissions": append([]string{}, perms...)})
	}
	asKey := func(perms ...string) identity.Identity {
		k := owner
		k.Principal, k.SessionID, k.Roles, k.Permissions = identity.PrincipalAPIKey, "", nil, append([]string{}, perms...)
		return k
	}
	live := func(k created) bool {
		return x.count(t, `SELECT count(*) FROM api_keys WHERE id = $1 AND revoked_at IS NULL`, k.ID) == 1
	}
	for _, tc := range []struct {
		name   string
		key    identity.Identity
		target []string
		want   int
	}{
		{"stronger", asKey("tenant:read"), []string{"tenant:read", "users:write"}, http.StatusForbidden},
		{"disjoint", asKey("users:read"), []string{"tenant:read"}, http.StatusForbidden},
		{"holding nothing", asKey(), []string{"tenant:read"}, http.StatusForbidden},
		{"as strong", asKey("tenant:read"), []string{"tenant:read"}, http.StatusNoContent},
		{"weaker", asKey("tenant:read", "users:read"), []string{"users:read"}, http.StatusNoContent},
		{"holding nothing, of nothing", asKey(), nil, http.StatusNoContent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := mine(tc.name, tc.target...)
			r := x.Send(t, &tc.key, http.MethodDelete, "/api/v1/users/me/api-keys/"+k.ID, nil)
			if tc.want == http.StatusForbidden {
				wantProblem(t, r, http.StatusForbidden, "forbidden")
			} else if r.Status != tc.want {
				t.Fatalf("DELETE: %d %s, want %d", r.Status, r.Body, tc.want)
			}
			if got := live(k); got != (tc.want == http.StatusForbidden) {
				t.Fatalf("key live after the answer: %v", got)
			}
		})
	}
}
