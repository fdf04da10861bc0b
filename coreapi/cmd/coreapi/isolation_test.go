package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/openapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
	"github.com/tollgate-auth/tollgate/migrations/tenantrows"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/tollgate-auth/tollgate/shared/requestid"
)

// isolationAllowlist are the documented operations that take no id of a
// tenant's resource in their path and answer no tenant's rows, so the walk
// of TestTenantIsolation has nothing to send them. Every other operation
// is driven by the walk or fails it, by name.
var isolationAllowlist = map[string]string{
	// Public: no identity, so no tenant to cross.
	"getOpenAPI":                     "the document",
	"getOpenAPIv1":                   "the document",
	"getHealth":                      "liveness",
	"getJWKS":                        "the public signing keys",
	"getAuthorizationServerMetadata": "static metadata",
	"getOpenIDConfiguration":         "static metadata",
	"pageVerifyEmail":                "an HTML form; the token is posted to verifyEmail",
	"pageResetPassword":              "an HTML form; the token is posted to resetPassword",
	"pageAcceptInvitation":           "takes a one-time token, not an id: shows its invitation's tenant, as acceptInvitation acts on it",
	"oauthAuthorize":                 "{provider} names a configured provider, not a tenant's row",
	"oauthCallback":                  "{provider} names a configured provider; the state is one-time and bound to the browser",
	"oauthOpenLink":                  "{provider} names a configured provider; the ticket is one-time and names the flow its start stored",
	"createAccount":                  "signup makes a new tenant",
	"issueToken":                     "credentials first; then a body tenant_id the account is no active member of, real or made up, is the same 403 (passwordLogin)",
	"forgotPassword":                 "takes an address and answers the same whether it exists",
	"resetPassword":                  "takes a one-time token, not an id",
	"verifyEmail":                    "takes a one-time token, not an id",
	"acceptInvitation":               "takes a one-time token, not an id",
	"introspectToken":                "a service account's client authentication; tokens are opaque",
	"revokeToken":                    "a service account's client authentication; tokens are opaque",
	// Signed in, acting on the caller's own account or current tenant
	// only: no id in the path to point at another tenant.
	"patchMe":                 "the caller's own account",
	"deleteMyAccount":         "the caller's own account",
	"changePassword":          "the caller's own account",
	"logout":                  "the caller's own session(s)",
	"switchTenant":            "a body tenant_id the caller is no active member of, real or made up, is the same 403 (switchTenant)",
	"resendVerification":      "the caller's own address",
	"enrolTOTP":               "the caller's own second factor",
	"confirmTOTP":             "the caller's own second factor",
	"disableTOTP":             "the caller's own second factor",
	"regenerateRecoveryCodes": "the caller's own second factor",
	"patchTenant":             "the caller's current tenant",
	"createRole":              "creates in the caller's current tenant",
	"createAPIKey":            "creates in the caller's current tenant",
	"createMyAPIKey":          "creates in the caller's current tenant",
	"unlinkMyIdentity":        "{provider} names a sign-in provider, not a tenant's row; it removes the caller's own account's link",
	"linkMyIdentity":          "{provider} names a sign-in provider, not a tenant's row; it starts a link to the caller's own account",
	"confirmMyIdentityLink":   "{provider} names a sign-in provider, not a tenant's row; the link code names a flow only the caller's own session started",
}

// isolationBodies are the request bodies the walk sends, by the schema of
// the operation's required JSON body: valid ones, so that the answer is
// the lookup's, not the body's validation.
var isolationBodies = map[string]string{
	"PatchUser": `{"membership_status":"disabled"}`,
	"PatchRole": `{"description":"changed by another tenant"}`,
}

// isolationNoOwnRows are the reads that answer none of tenant B's ids
// although they work.
var isolationNoOwnRows = map[string]string{
	"listPermissions":   "the permission catalog: names, no tenant's rows",
	"listMyInvitations": "invitations from other tenants to the caller's address; none are sent to tenant B's owner, and tenant A's to its own invitee must not show",
	"listMyIdentities":  "the sign-in providers linked to the caller's account: provider names and addresses, no tenant's rows",
}

// isolationRoleBodies are the bodies of the operations whose body names
// roles (by name, unique only within a tenant), by schema; %s is the
// JSON list of names and %d tells the two requests of a probe apart.
var isolationRoleBodies = map[string]string{
	"CreateUser":           `{"email":"probe-%[2]d@bravo.test","password":"a long password","roles":%[1]s}`,
	"CreateInvitation":     `{"email":"probe-%[2]d@bravo.test","roles":%[1]s}`,
	"CreateServiceAccount": `{"name":"probe %[2]d","roles":%[1]s}`,
}

// TestTenantIsolation walks every operation of the OpenAPI document on the
// real serve command, as principals of tenant B holding every permission
// (a user, an API key, a service account, and a person who is a member of
// A too, sent their own rows of A where the path says "me"), against
// tenant A, both seeded with a row of every kind through the API:
//   - an operation with ids in its path, sent a real id of tenant A, must
//     answer as it does to a random id (status, problem code and detail),
//     404 for the user, and leave every row of tenant A as it was;
//   - an operation whose body names roles, sent a role name of tenant A,
//     must answer as it does to a made-up name (422 for the user);
//   - a GET without ids answers none of tenant A's ids, across its pages;
//   - an operation it cannot drive (an unknown path parameter or body)
//     fails it by name, unless isolationAllowlist says why it has no
//     tenant-scoped id.
func TestTenantIsolation(t *testing.T) {
	w := startIsolationWalk(t)
	a := w.seedTenant(t, "alpha")
	b := w.seedTenant(t, "bravo")
	both := w.seedPersonInBoth(t, a, b)
	aIDs, bIDs := w.tenantIDs(t, a.tenant), w.tenantIDs(t, b.tenant)
	for id := range aIDs {
		if bIDs[id] && id != both.UserID {
			t.Fatalf("seed: %s is both tenants'", id)
		}
	}
	delete(aIDs, both.UserID) // a member of B too: B may show it
	before := w.snapshot(t, a.tenant)

	all := permissions.BuiltinNames()
	principals := []isolationPrincipal{
		{name: "user", foreign: a.values, id: identity.Identity{Principal: identity.PrincipalUser, UserID: b.owner, TenantID: b.tenant,
			SessionID: b.session, Roles: []string{"owner"}, Permissions: all, EmailVerified: true, AMR: []string{"pwd"}, AuthTime: time.Now().Unix()}},
		{name: "api_key", foreign: a.values, id: identity.Identity{Principal: identity.PrincipalAPIKey, UserID: b.owner, TenantID: b.tenant,
			Permissions: all, EmailVerified: true}},
		{name: "service", foreign: a.values, id: identity.Identity{Principal: identity.PrincipalService, UserID: b.values["service-accounts/{id}"],
			TenantID: b.tenant, Permissions: all}},
		// A person in both tenants, acting in B, sent its own rows in A
		// where the path says "me": a query keyed by the caller alone,
		// not by the tenant too, shows or changes them.
		{name: "user in both tenants", foreign: both.foreign, id: both.Identity, ownAcross: map[string]string{
			"listSessions":  "a person's sessions are theirs in every tenant (each names its tenant_id)",
			"revokeSession": "a person may sign out their own session in another tenant (audited there)",
			"listMyTenants": "the tenants the person belongs to",
		}},
	}

	ops := isolationOperations(t)
	for name := range isolationAllowlist {
		if !slices.ContainsFunc(ops, func(o isolationOp) bool { return o.ID == name }) {
			t.Errorf("isolationAllowlist names %s, which the document does not have", name)
		}
	}
	driven := 0
	for _, op := range ops {
		if _, ok := isolationAllowlist[op.ID]; ok {
			continue
		}
		params := pathParam.FindAllString(op.Path, -1)
		switch {
		case len(params) == 0 && op.BodyRoles:
			tmpl, ok := isolationRoleBodies[op.Body]
			if !ok {
				t.Errorf("%s (%s %s): its body (%s) names roles, and no body is known for it: add one to isolationRoleBodies", op.ID, op.Method, op.Path, op.Body)
				continue
			}
			driven++
			for _, as := range principals {
				w.checkForeignRoleName(t, op, tmpl, as, a.tenant, before)
			}
		case len(params) == 0 && op.Method == http.MethodGet:
			driven++
			for _, as := range principals {
				w.checkRead(t, op, as, aIDs, bIDs)
			}
		case len(params) == 0:
			t.Errorf("%s (%s %s): takes no id and is no read, so the walk cannot drive it; add it to isolationAllowlist saying why it has no tenant-scoped id",
				op.ID, op.Method, op.Path)
		default:
			body, ok := "", true
			if op.Body != "" {
				body, ok = isolationBodies[op.Body]
			}
			if !ok {
				t.Errorf("%s (%s %s): no body known for schema %s: add one to isolationBodies", op.ID, op.Method, op.Path, op.Body)
				continue
			}
			keys := make([]string, len(params))
			for i, p := range params {
				keys[i] = paramKey(op.Path, p)
				if a.values[keys[i]] == "" || b.values[keys[i]] == "" {
					t.Errorf("%s (%s %s): no seeded value for path parameter %s (%s): teach the walk its kind, or allowlist the operation saying why",
						op.ID, op.Method, op.Path, p, keys[i])
					ok = false
				}
			}
			if !ok {
				continue
			}
			driven++
			for _, as := range principals {
				if _, ok := as.ownAcross[op.ID]; !ok {
					w.checkForeignIDs(t, op, keys, body, as, a.tenant, b.values, before)
				}
			}
		}
	}
	if driven < 25 {
		t.Errorf("only %d operations driven", driven)
	}
	t.Logf("%d operations driven as %d principals, %d requests", driven, len(principals), w.requests)
	// Tenant A as a whole, once more, after every request.
	if diff := tenantrows.Diff(before, w.snapshot(t, a.tenant)); diff != "" {
		t.Errorf("tenant A changed by the walk: %s", diff)
	}
}

// pathParam matches a path template's parameters.
var pathParam = regexp.MustCompile(`\{[a-z_]+\}`)

// paramKey names the kind of value a path parameter takes by the segment
// before it: "users/{id}", "roles/{role}", "secrets/{secret_id}"; under
// /users/me/ it is the caller's own ("me/api-keys/{id}").
func paramKey(path, param string) string {
	before := path[:strings.Index(path, param)]
	segs := strings.Split(strings.Trim(before, "/"), "/")
	k := segs[len(segs)-1] + "/" + param
	if strings.HasPrefix(path, "/api/v1/users/me/") {
		k = "me/" + k
	}
	return k
}

// isolationPrincipal is a caller of tenant B.
type isolationPrincipal struct {
	name string
	id   identity.Identity
	// foreign holds the values of tenant A's it is sent, by paramKey.
	foreign map[string]string
	// ownAcross are the operations that show or change the principal's own
	// rows in every tenant, on purpose, with why.
	ownAcross map[string]string
}

// isolationPerson is a person who is a member of tenants A and B.
type isolationPerson struct {
	identity.Identity                   // acting in tenant B
	foreign           map[string]string // tenant A's values, with the person's own for "me"
}

// seedPersonInBoth signs a person up (their own tenant) and makes them a
// member of A and an owner of B through the store, as the tests of the
// tenant API add members; signs them in to A and to B, and makes them a
// personal API key in each.
func (w *isolationWalk) seedPersonInBoth(t *testing.T, a, b isolationTenant) isolationPerson {
	t.Helper()
	const email = "both@charlie.test"
	var su struct {
		User struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	w.send(t, nil, http.MethodPost, "/api/v1/auth/signup", `{"email":"`+email+`","password":"a long password","tenant_name":"charlie"}`, http.StatusCreated, &su)
	uid := su.User.ID
	if err := pgx.BeginFunc(t.Context(), w.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(t.Context(), `UPDATE users SET email_verified_at = now() WHERE id = $1`, uid); err != nil {
			return err
		}
		if err := tenants.AddMember(t.Context(), tx, a.tenant, uid, "member"); err != nil {
			return err
		}
		return tenants.AddMember(t.Context(), tx, b.tenant, uid, "owner")
	}); err != nil {
		t.Fatal(err)
	}
	signIn := func(tenantID string, roles ...string) identity.Identity {
		var tk struct {
			AccessToken string `json:"access_token"`
		}
		w.send(t, nil, http.MethodPost, "/api/v1/auth/token",
			fmt.Sprintf(`{"grant_type":"password","email":%q,"password":"a long password","tenant_id":%q}`, email, tenantID), http.StatusOK, &tk)
		return identity.Identity{Principal: identity.PrincipalUser, UserID: uid, TenantID: tenantID, SessionID: tokenSessionID(t, tk.AccessToken),
			Roles: roles, Permissions: permissions.BuiltinNames(), EmailVerified: true, AMR: []string{"pwd"}, AuthTime: time.Now().Unix()}
	}
	inA, inB := signIn(a.tenant, "member"), signIn(b.tenant, "owner")
	inA.Permissions = []string{"tenant:read"}
	var key struct {
		ID string `json:"id"`
	}
	w.send(t, &inB, http.MethodPost, "/api/v1/users/me/api-keys", `{"name":"mine in bravo","permissions":["tenant:read"]}`, http.StatusCreated, nil)
	w.send(t, &inA, http.MethodPost, "/api/v1/users/me/api-keys", `{"name":"mine in alpha","permissions":["tenant:read"]}`, http.StatusCreated, &key)
	foreign := maps.Clone(a.values)
	foreign["me/sessions/{id}"], foreign["me/api-keys/{id}"] = inA.SessionID, key.ID
	return isolationPerson{Identity: inB, foreign: foreign}
}

// isolationOp is one documented operation.
type isolationOp struct {
	ID, Method, Path string
	Body             string // schema name of a required JSON body
	Limit            bool   // takes ?limit
	BodyRoles        bool   // the body names roles
}

func isolationOperations(t *testing.T) []isolationOp {
	t.Helper()
	type param struct {
		Ref  string `json:"$ref"`
		Name string `json:"name"`
		In   string `json:"in"`
	}
	var doc struct {
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Parameters map[string]param `json:"parameters"`
			Schemas    map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openapi.Document(), &doc); err != nil {
		t.Fatal(err)
	}
	var ops []isolationOp
	for path, methods := range doc.Paths {
		for method, raw := range methods {
			if method == "parameters" {
				continue
			}
			var o struct {
				OperationID string  `json:"operationId"`
				Parameters  []param `json:"parameters"`
				RequestBody *struct {
					Required bool `json:"required"`
					Content  map[string]struct {
						Schema struct {
							Ref string `json:"$ref"`
						} `json:"schema"`
					} `json:"content"`
				} `json:"requestBody"`
			}
			if err := json.Unmarshal(raw, &o); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			op := isolationOp{ID: o.OperationID, Method: strings.ToUpper(method), Path: path}
			for _, p := range o.Parameters {
				if p.Ref != "" {
					p = doc.Components.Parameters[p.Ref[strings.LastIndex(p.Ref, "/")+1:]]
				}
				op.Limit = op.Limit || p.In == "query" && p.Name == "limit"
			}
			if rb := o.RequestBody; rb != nil && rb.Required {
				op.Body = "(not JSON)"
				if js, ok := rb.Content["application/json"]; ok {
					op.Body = js.Schema.Ref[strings.LastIndex(js.Schema.Ref, "/")+1:]
				}
				_, op.BodyRoles = doc.Components.Schemas[op.Body].Properties["roles"]
			}
			ops = append(ops, op)
		}
	}
	slices.SortFunc(ops, func(x, y isolationOp) int { return strings.Compare(x.ID, y.ID) })
	if len(ops) < 50 {
		t.Fatalf("only %d operations read from the document", len(ops))
	}
	return ops
}

// isolationWalk is the real serve command and a client signing as the
// proxy does.
type isolationWalk struct {
	base      string
	signer    *identity.KeySigner
	validator *openapi.Validator
	pool      *pgxpool.Pool
	requests  int
	probes    int // numbers the bodies of role-name probes
}

func startIsolationWalk(t *testing.T) *isolationWalk {
	t.Helper()
	db := dbtest.New(t)
	env := serveEnv(t, db.URL)
	// Every feature on: API keys and second factors too.
	env["API_KEY_PEPPER"] = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	env["MFA_ENCRYPTION_KEYS"] = "k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))
	base, signer := startServe(t, env)
	v, err := openapi.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	return &isolationWalk{base: base, signer: signer, validator: v, pool: db.Pool}
}

// isolationAnswer is a response, reduced to what a client can tell apart.
type isolationAnswer struct {
	Status int
	Code   string
	Detail string
	Body   []byte
}

func (a isolationAnswer) String() string { return fmt.Sprintf("%d %s", a.Status, a.Body) }

// do sends a request signed for as (nil: unsigned) and checks the answer
// against the document.
func (w *isolationWalk) do(t *testing.T, as *identity.Identity, method, pathQuery, body string) isolationAnswer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, w.base+pathQuery, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rid := rand.Text()
	req.Header.Set(requestid.Header, rid)
	if as != nil {
		r := identity.Request{Timestamp: time.Now().UnixMilli(), RequestID: rid, ClientIP: "192.0.2.1",
			Method: method, PathQuery: pathQuery, BodySHA256: sha256.Sum256([]byte(body))}
		identity.EachHeader(w.signer.KeyID(), as, &r, func(name, v string) {
			if v != "" {
				req.Header.Set(name, v)
			}
		})
		req.Header.Set(identity.HeaderSignature, w.signer.Sign(as, &r))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	w.requests++
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.validator.ValidateResponse(req, []byte(body), resp.StatusCode, resp.Header, rb); err != nil {
		t.Errorf("%s %s -> %d: response does not match the OpenAPI document: %v\nbody: %s", method, pathQuery, resp.StatusCode, err, rb)
	}
	a := isolationAnswer{Status: resp.StatusCode, Body: rb}
	if resp.Header.Get("Content-Type") == problem.ContentType {
		var p problem.Problem
		if err := json.Unmarshal(rb, &p); err != nil {
			t.Fatalf("%s %s: problem %s: %v", method, pathQuery, rb, err)
		}
		a.Code, a.Detail = p.Code, p.Detail
	}
	return a
}

// send is do for a seeding request that must answer want; it decodes the
// answer into v (if not nil).
func (w *isolationWalk) send(t *testing.T, as *identity.Identity, method, path, body string, want int, v any) {
	t.Helper()
	a := w.do(t, as, method, path, body)
	if a.Status != want {
		t.Fatalf("seed: %s %s = %s, want %d", method, path, a, want)
	}
	if v != nil {
		if err := json.Unmarshal(a.Body, v); err != nil {
			t.Fatalf("seed: %s %s: %v", method, path, err)
		}
	}
}

// isolationTenant is a tenant seeded with a row of every kind; values
// holds one real value for each kind of path parameter (paramKey).
type isolationTenant struct {
	tenant, owner, session string
	values                 map[string]string
}

// ownerIdentity is the identity the proxy forwards for the tenant's owner.
func (ten isolationTenant) ownerIdentity() identity.Identity {
	return identity.Identity{Principal: identity.PrincipalUser, UserID: ten.owner, TenantID: ten.tenant, SessionID: ten.session,
		Roles: []string{"owner"}, Permissions: permissions.BuiltinNames(), EmailVerified: true, AMR: []string{"pwd"}, AuthTime: time.Now().Unix()}
}

func (w *isolationWalk) seedTenant(t *testing.T, name string) isolationTenant {
	t.Helper()
	var su struct {
		TenantID    string `json:"tenant_id"`
		AccessToken string `json:"access_token"`
		User        struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	w.send(t, nil, http.MethodPost, "/api/v1/auth/signup",
		fmt.Sprintf(`{"email":"owner@%s.test","password":"a long password","tenant_name":%q}`, name, name), http.StatusCreated, &su)
	sid := tokenSessionID(t, su.AccessToken)
	// A verified address, as the tests of the lifecycle set it: the
	// invitations sent to it can be listed.
	if _, err := w.pool.Exec(t.Context(), `UPDATE users SET email_verified_at = now() WHERE id = $1`, su.User.ID); err != nil {
		t.Fatal(err)
	}
	ten := isolationTenant{tenant: su.TenantID, owner: su.User.ID, session: sid, values: map[string]string{"me/sessions/{id}": sid}}
	id := ten.ownerIdentity()
	owner := &id
	var obj struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}

	role := "auditor-" + name
	w.send(t, owner, http.MethodPost, "/api/v1/roles", fmt.Sprintf(`{"name":%q,"permissions":["audit:read"]}`, role), http.StatusCreated, &obj)
	ten.values["roles/{id}"], ten.values["roles/{role}"] = obj.ID, role
	w.send(t, owner, http.MethodPost, "/api/v1/users",
		fmt.Sprintf(`{"email":"member@%s.test","password":"a long password","roles":["member",%q]}`, name, role), http.StatusCreated, &obj)
	member := obj.ID
	ten.values["users/{id}"] = member
	w.send(t, owner, http.MethodPost, "/api/v1/invitations", fmt.Sprintf(`{"email":"invitee@%s.test"}`, name), http.StatusCreated, &obj)
	ten.values["invitations/{id}"] = obj.ID
	w.send(t, owner, http.MethodPost, "/api/v1/api-keys", `{"name":"tenant key","permissions":["users:read"]}`, http.StatusCreated, &obj)
	ten.values["api-keys/{id}"] = obj.ID
	w.send(t, owner, http.MethodPost, "/api/v1/users/me/api-keys", `{"name":"own key","permissions":["users:read"]}`, http.StatusCreated, &obj)
	ten.values["me/api-keys/{id}"] = obj.ID
	w.send(t, owner, http.MethodPost, "/api/v1/service-accounts", `{"name":"robot","roles":["member"]}`, http.StatusCreated, &obj)
	ten.values["service-accounts/{id}"] = obj.ID
	w.send(t, owner, http.MethodPost, "/api/v1/service-accounts/"+obj.ID+"/secrets", "", http.StatusCreated, &obj)
	ten.values["secrets/{secret_id}"] = obj.ID
	// A pending second factor of the owner, for DELETE /users/{id}/mfa.
	w.send(t, owner, http.MethodPost, "/api/v1/users/me/mfa/totp", "", http.StatusCreated, nil)
	return ten
}

// tokenSessionID reads the sid claim of an access token.
func tokenSessionID(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("access token %q", token)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(raw, &c); err != nil || c.SID == "" {
		t.Fatalf("access token claims %s: %v", raw, err)
	}
	return c.SID
}

// tenantIDs returns every id a client could see of a tenant's rows: each
// uuid, and each text column named id or *_id, of the rows of every table
// with a tenant_id, and the tenant's own id.
func (w *isolationWalk) tenantIDs(t *testing.T, tenantID string) map[string]bool {
	t.Helper()
	const cols = `
SELECT c.table_name, c.column_name FROM information_schema.columns c
JOIN information_schema.columns tc ON tc.table_schema = c.table_schema AND tc.table_name = c.table_name AND tc.column_name = 'tenant_id'
JOIN information_schema.tables tb ON tb.table_schema = c.table_schema AND tb.table_name = c.table_name AND tb.table_type = 'BASE TABLE'
WHERE c.table_schema = 'public'
  AND (c.data_type = 'uuid' OR c.data_type = 'text' AND (c.column_name = 'id' OR c.column_name LIKE '%\_id'))
  AND c.column_name <> 'request_id'
ORDER BY 1, 2`
	rows, err := w.pool.Query(t.Context(), cols)
	if err != nil {
		t.Fatal(err)
	}
	var q []string
	for rows.Next() {
		var tbl, col string
		if err := rows.Scan(&tbl, &col); err != nil {
			t.Fatal(err)
		}
		q = append(q, fmt.Sprintf(`SELECT %q::text FROM %q WHERE tenant_id = $1 AND %q IS NOT NULL`, col, tbl, col))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows, err = w.pool.Query(t.Context(), strings.Join(q, " UNION "), tenantID)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(ids) < 10 {
		t.Fatalf("seed: only %d ids in tenant %s", len(ids), tenantID)
	}
	return ids
}

// snapshot returns, by table, the rows of a tenant (tenantrows.Snapshot).
func (w *isolationWalk) snapshot(t *testing.T, tenantID string) map[string]string {
	t.Helper()
	rows, err := tenantrows.Snapshot(t.Context(), w.pool, tenantID)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// checkRead reads a GET operation without ids, every page of it, as a
// principal of tenant B: the answers hold none of tenant A's ids.
func (w *isolationWalk) checkRead(t *testing.T, op isolationOp, p isolationPrincipal, aIDs, bIDs map[string]bool) {
	t.Helper()
	as := p.id
	_, ownAcross := p.ownAcross[op.ID]
	path := op.Path
	if op.Limit {
		path += "?limit=200"
	}
	own := false // tenant B's rows were read: the read is not empty by mistake
	defer func() {
		if _, ok := isolationNoOwnRows[op.ID]; !ok && !own && as.Principal == identity.PrincipalUser {
			t.Errorf("%s as %s of B: none of tenant B's ids in the answer: the walk does not read its rows", op.ID, p.name)
		}
	}()
	for page := 0; ; page++ {
		got := w.do(t, &as, http.MethodGet, path, "")
		if got.Status != http.StatusOK && as.Principal == identity.PrincipalUser {
			t.Errorf("%s as %s of B: %s, want 200: the walk cannot read it", op.ID, p.name, got)
		}
		for id := range bIDs {
			own = own || bytes.Contains(got.Body, []byte(id))
		}
		for id := range aIDs {
			if !ownAcross && bytes.Contains(got.Body, []byte(id)) {
				t.Errorf("LEAK %s as %s of B shows %s of tenant A: %s", op.ID, p.name, id, got.Body)
			}
		}
		var list struct {
			NextCursor *string `json:"next_cursor"`
		}
		if got.Status != http.StatusOK || json.Unmarshal(got.Body, &list) != nil || list.NextCursor == nil || *list.NextCursor == "" {
			return
		}
		if page > 50 {
			t.Fatalf("%s: more than 50 pages", op.ID)
		}
		path = op.Path + "?limit=200&cursor=" + url.QueryEscape(*list.NextCursor)
	}
}

// checkForeignIDs sends op as a principal of tenant B with, in turn, each
// path parameter set to tenant A's value (the others to tenant B's), and
// all of them set to tenant A's; each answer must be the one the same
// request gets with that value replaced by one nobody has, and tenant A's
// rows must not change.
func (w *isolationWalk) checkForeignIDs(t *testing.T, op isolationOp, keys []string, body string, p isolationPrincipal, tenantA string, own map[string]string, before map[string]string) {
	t.Helper()
	as := p.id
	params := pathParam.FindAllString(op.Path, -1)
	cases := make([][]int, 0, len(params)+1) // the indexes set to tenant A's value
	for i := range params {
		cases = append(cases, []int{i})
	}
	if len(params) > 1 {
		all := make([]int, len(params))
		for i := range all {
			all[i] = i
		}
		cases = append(cases, all)
	}
	for _, foreign := range cases {
		realPath, missingPath := op.Path, op.Path
		var sent []string
		for i, param := range params {
			v := own[keys[i]]
			m := v
			if slices.Contains(foreign, i) {
				v, m = p.foreign[keys[i]], missingValue(keys[i])
				sent = append(sent, v, m)
			}
			realPath = strings.Replace(realPath, param, url.PathEscape(v), 1)
			missingPath = strings.Replace(missingPath, param, url.PathEscape(m), 1)
		}
		what := fmt.Sprintf("%s %s as %s of B", op.Method, realPath, p.name)
		gotMissing := w.do(t, &as, op.Method, missingPath, body)
		gotReal := w.do(t, &as, op.Method, realPath, body)
		if gotReal.Status != gotMissing.Status || gotReal.Code != gotMissing.Code || normalDetail(gotReal.Detail, sent) != normalDetail(gotMissing.Detail, sent) {
			t.Errorf("LEAK %s (%s): tenant A's id answers %s; a missing id answers %s", what, op.ID, gotReal, gotMissing)
		}
		if as.Principal == identity.PrincipalUser && gotMissing.Status != http.StatusNotFound {
			t.Errorf("%s (%s, ids sent %v): %s, want 404: the walk does not reach the lookup", what, op.ID, sent, gotMissing)
		}
		if diff := tenantrows.Diff(before, w.snapshot(t, tenantA)); diff != "" {
			t.Fatalf("LEAK %s (%s) changed tenant A: %s", what, op.ID, diff)
		}
	}
}

// checkForeignRoleName sends op as a principal of tenant B naming, in
// its body, a role of tenant A (by name, which tenant B does not have),
// then one nobody has: the answers must be alike (the user's 422, the
// role unknown), and tenant A's rows unchanged.
func (w *isolationWalk) checkForeignRoleName(t *testing.T, op isolationOp, tmpl string, p isolationPrincipal, tenantA string, before map[string]string) {
	t.Helper()
	as := p.id
	name, missing := p.foreign["roles/{role}"], missingValue("roles/{role}")
	w.probes++
	gotMissing := w.do(t, &as, op.Method, op.Path, fmt.Sprintf(tmpl, `["`+missing+`"]`, w.probes))
	w.probes++
	gotReal := w.do(t, &as, op.Method, op.Path, fmt.Sprintf(tmpl, `["`+name+`"]`, w.probes))
	what := fmt.Sprintf("%s %s as %s of B naming role %s", op.Method, op.Path, p.name, name)
	sent := []string{name, missing}
	if gotReal.Status != gotMissing.Status || gotReal.Code != gotMissing.Code || normalDetail(gotReal.Detail, sent) != normalDetail(gotMissing.Detail, sent) {
		t.Errorf("LEAK %s (%s): tenant A's role answers %s; a missing role answers %s", what, op.ID, gotReal, gotMissing)
	}
	if as.Principal == identity.PrincipalUser && gotMissing.Status != http.StatusUnprocessableEntity {
		t.Errorf("%s (%s): a missing role answers %s, want 422: the walk does not reach the roles' lookup", what, op.ID, gotMissing)
	}
	if diff := tenantrows.Diff(before, w.snapshot(t, tenantA)); diff != "" {
		t.Fatalf("LEAK %s (%s) changed tenant A: %s", what, op.ID, diff)
	}
}

// missingValue is a value of a path parameter's kind that names nothing.
func missingValue(key string) string {
	if key == "roles/{role}" {
		return "no-such-role"
	}
	return "0b0d3c4e-0000-4000-8000-00000000dead"
}

// normalDetail is a problem's detail with the values sent in the path
// replaced, so that details naming what was asked compare equal.
func normalDetail(d string, sent []string) string {
	for _, v := range sent {
		d = strings.ReplaceAll(d, v, "<sent>")
	}
	return d
}
