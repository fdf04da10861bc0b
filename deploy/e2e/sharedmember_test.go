package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/tollgate-auth/tollgate/migrations/tenantrows"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// sharedPerson is an account that is a member of two tenants, signed in to
// each, with a personal API key in each.
type sharedPerson struct {
	account
	tokenIn, keyIn map[string]string // by tenant id
}

// sharePerson signs a person up (a tenant of their own) and has the owners
// of tenants a and b invite them with roles; the person accepts each
// invitation with their password, and makes a personal key in each tenant.
func sharePerson(t *testing.T, a, b account, roles ...string) sharedPerson {
	t.Helper()
	p := sharedPerson{account: signup(t, sys.proxyA), tokenIn: map[string]string{}, keyIn: map[string]string{}}
	for _, owner := range []account{a, b} {
		// The invitation's subject names the tenant, so each link is
		// told apart from the other tenant's.
		ten := call(t, "GET", sys.proxyA.url("/api/v1/tenant"), owner.Tokens.AccessToken, nil)
		expect(t, ten, http.StatusOK)
		name := decode[struct {
			Name string `json:"name"`
		}](t, ten).Name
		r := call(t, "POST", sys.proxyA.url("/api/v1/invitations"), owner.Tokens.AccessToken, map[string]any{"email": p.Email, "roles": roles})
		expect(t, r, http.StatusCreated)
		_, tok := linkParts(t, sys.mail.link(t, p.Email, "You are invited to join "+name))
		acc := call(t, "POST", sys.proxyA.url("/api/v1/invitations/accept"), "", map[string]string{"token": tok, "password": p.Password})
		expect(t, acc, http.StatusOK)
		tr := decode[tokenResponse](t, acc)
		if tr.TenantID != owner.TenantID {
			t.Fatalf("accepted into %s, want %s", tr.TenantID, owner.TenantID)
		}
		p.tokenIn[owner.TenantID] = tr.AccessToken
		k := call(t, "POST", sys.proxyA.url("/api/v1/users/me/api-keys"), tr.AccessToken,
			map[string]any{"name": "shared " + randToken(4), "permissions": []string{"tenant:read"}})
		expect(t, k, http.StatusCreated)
		p.keyIn[owner.TenantID] = decode[createdKey](t, k).Secret
	}
	return p
}

// sharedStanding is what the person's token and key of one tenant get
// through a proxy: the status of GET /users/me with each, and the roles
// the token's answer names (sorted).
type sharedStanding struct {
	Token, Key int
	Roles      []string
}

func (s sharedStanding) String() string {
	return fmt.Sprintf("token %d, key %d, roles %v", s.Token, s.Key, s.Roles)
}

func standingAt(t *testing.T, px *service, p sharedPerson, tenantID string) sharedStanding {
	t.Helper()
	var s sharedStanding
	r := call(t, "GET", px.url("/api/v1/users/me"), p.tokenIn[tenantID], nil)
	s.Token = r.Status
	if r.Status == http.StatusOK {
		m := decode[meBody](t, r)
		if m.TenantID != tenantID || m.ID != p.UserID {
			t.Fatalf("%s: answered for user %s in %s, want %s in %s", r, m.ID, m.TenantID, p.UserID, tenantID)
		}
		s.Roles = slices.Sorted(slices.Values(m.Roles))
	}
	k, err := keyGet(px.url("/api/v1/users/me"), p.keyIn[tenantID])
	if err != nil {
		t.Fatal(err)
	}
	s.Key = k.Status
	return s
}

// tenantRows returns, by table, the rows of a tenant (tenantrows.Snapshot,
// which TestTenantIsolation of coreapi/cmd/coreapi compares too).
func tenantRows(t *testing.T, tenantID string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, sys.pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := tenantrows.Snapshot(ctx, conn, tenantID)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// userEvents watches the invalidations of one user, from before a change:
// wait then returns once the relay has published the change's event (its
// reason) and both proxies have taken in every user event published since
// the watch began.
type userEvents struct {
	msgs   chan *nats.Msg
	counts map[*service]float64
}

const userEventsSeries = `authproxy_invalidations_received_total{kind="user"}`

func watchUser(t *testing.T, userID string) *userEvents {
	t.Helper()
	nc, err := nats.Connect(sys.natsURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	w := &userEvents{msgs: make(chan *nats.Msg, 64), counts: map[*service]float64{}}
	if _, err := nc.ChanSubscribe(invalidation.UserSubject(userID), w.msgs); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, px := range []*service{sys.proxyA, sys.proxyB} {
		n, _, err := proxyMetric(px, userEventsSeries)
		if err != nil {
			t.Fatal(err)
		}
		w.counts[px] = n
	}
	return w
}

func (w *userEvents) wait(t *testing.T, reason string) {
	t.Helper()
	seen := 0
	deadline := time.After(propagation)
	for done := false; !done; {
		select {
		case m := <-w.msgs:
			seen++
			var ev invalidation.Event
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				t.Fatalf("event %s: %v", m.Data, err)
			}
			done = ev.Reason == reason
		case <-deadline:
			t.Fatalf("no %s event within %s (%d other events of the user)", reason, propagation, seen)
		}
	}
	for _, px := range []*service{sys.proxyA, sys.proxyB} {
		eventually.Within(t, propagation, func() error {
			n, _, err := proxyMetric(px, userEventsSeries)
			if err != nil {
				return err
			}
			if n < w.counts[px]+float64(seen) {
				return fmt.Errorf("%s took in %v user events, want %v", px.name, n, w.counts[px]+float64(seen))
			}
			return nil
		})
	}
}

// TestSharedMemberChangedInOneTenant: a person is a member of tenants A
// and B (an admin in both, with a personal key in each, both cached at
// both proxies). B's owner applies each write of the tenant API on a
// member to them, through proxy A: disable, remove, revoke a role, grant
// a role (A has a role of the same name), reset the second factor. Once
// the relay has published the change's user event and both proxies have
// taken it in, tenant A's rows are as they were (none of these changes is
// the account's: the second factor, which is, cannot be reset by one
// tenant of several, 403), and at each proxy, once the person's token and
// key for B answer as the change says (refused, 401, once disabled or
// removed; the roles changed), their token and key for A, fetched again
// after the event, answer as before, with their roles in A. Then the
// reverse: A's owner removes the person from A, and B is unaffected.
func TestSharedMemberChangedInOneTenant(t *testing.T) {
	a, b := signup(t, sys.proxyA), signup(t, sys.proxyB)
	// A role of B's, for the grant; A has one of the same name, which the
	// person does not hold.
	for _, owner := range []account{a, b} {
		expect(t, call(t, "POST", sys.proxyA.url("/api/v1/roles"), owner.Tokens.AccessToken,
			map[string]any{"name": "auditor", "permissions": []string{"audit:read"}}), http.StatusCreated)
	}
	allowed := sharedStanding{Token: http.StatusOK, Key: http.StatusOK, Roles: []string{"admin", "member"}}
	cases := []struct {
		name, op, method, path string
		body                   any
		status                 int    // of the change
		reason                 string // of the event it publishes, none when refused
		inB                    sharedStanding
		mfa                    bool // the person has a second factor
	}{
		{name: "disabled", op: "patchUser", method: "PATCH", path: "", body: map[string]string{"membership_status": "disabled"},
			status: http.StatusOK, reason: invalidation.ReasonMemberStatus("disabled"), inB: sharedStanding{Token: http.StatusUnauthorized, Key: http.StatusUnauthorized}},
		{name: "removed", op: "deleteUser", method: "DELETE", path: "",
			status: http.StatusNoContent, reason: invalidation.ReasonMemberRemoved, inB: sharedStanding{Token: http.StatusUnauthorized, Key: http.StatusUnauthorized}},
		{name: "role revoked", op: "revokeRole", method: "DELETE", path: "/roles/admin",
			status: http.StatusOK, reason: invalidation.ReasonRoleRevoked, inB: sharedStanding{Token: http.StatusOK, Key: http.StatusOK, Roles: []string{"member"}}},
		{name: "role granted", op: "grantRole", method: "PUT", path: "/roles/auditor",
			status: http.StatusOK, reason: invalidation.ReasonRoleGranted, inB: sharedStanding{Token: http.StatusOK, Key: http.StatusOK, Roles: []string{"admin", "auditor", "member"}}},
		// The factor guards A too, where B's owner has no say: refused
		// (403), nothing changed anywhere.
		{name: "second factor reset", op: "resetMFA", method: "DELETE", path: "/mfa", mfa: true,
			status: http.StatusForbidden, inB: allowed},
	}
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.op] = true
	}
	for _, op := range memberWrites(t) {
		if !covered[op] {
			t.Errorf("%s writes to a member (/api/v1/users/{id}...) and has no case here: add one saying what it changes in the tenant and what of the account", op)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := sharePerson(t, a, b, "member", "admin")
			if c.mfa {
				enrolSecondFactor(t, &p, a.TenantID, b.TenantID)
			}
			for _, px := range []*service{sys.proxyA, sys.proxyB} {
				for _, ten := range []string{a.TenantID, b.TenantID} {
					if got := standingAt(t, px, p, ten); !sameStanding(got, allowed) {
						t.Fatalf("before the change, in %s through %s: %s, want %s", ten, px.name, got, allowed)
					}
				}
			}
			before := tenantRows(t, a.TenantID)
			w := watchUser(t, p.UserID)
			r := call(t, c.method, sys.proxyA.url("/api/v1/users/"+p.UserID+c.path), b.Tokens.AccessToken, c.body)
			expect(t, r, c.status)
			if c.reason != "" {
				w.wait(t, c.reason)
			}
			if diff := tenantrows.Diff(before, tenantRows(t, a.TenantID)); diff != "" {
				t.Errorf("tenant A's rows changed by B's %s: %s", c.name, diff)
			}
			for _, px := range []*service{sys.proxyA, sys.proxyB} {
				waitStanding(t, px, p, b.TenantID, c.inB)
				if got := standingAt(t, px, p, a.TenantID); !sameStanding(got, allowed) {
					t.Errorf("in A through %s after B's %s: %s, want %s", px.name, c.name, got, allowed)
				}
			}
		})
	}

	t.Run("reverse: removed from A", func(t *testing.T) {
		p := sharePerson(t, a, b, "member", "admin")
		for _, px := range []*service{sys.proxyA, sys.proxyB} {
			for _, ten := range []string{a.TenantID, b.TenantID} {
				standingAt(t, px, p, ten)
			}
		}
		before := tenantRows(t, b.TenantID)
		w := watchUser(t, p.UserID)
		expect(t, call(t, "DELETE", sys.proxyB.url("/api/v1/users/"+p.UserID), a.Tokens.AccessToken, nil), http.StatusNoContent)
		w.wait(t, invalidation.ReasonMemberRemoved)
		if diff := tenantrows.Diff(before, tenantRows(t, b.TenantID)); diff != "" {
			t.Errorf("tenant B's rows changed by A's removal: %s", diff)
		}
		removed := sharedStanding{Token: http.StatusUnauthorized, Key: http.StatusUnauthorized}
		for _, px := range []*service{sys.proxyA, sys.proxyB} {
			waitStanding(t, px, p, a.TenantID, removed)
			if got := standingAt(t, px, p, b.TenantID); !sameStanding(got, allowed) {
				t.Errorf("in B through %s after A's removal: %s, want %s", px.name, got, allowed)
			}
		}
	})
}

// waitStanding waits until the person's token and key for tenantID answer
// want through px: the change is seen at the proxy, so the event that
// announced it has been taken in there, and the person's entries of every
// tenant were dropped with it.
func waitStanding(t *testing.T, px *service, p sharedPerson, tenantID string, want sharedStanding) {
	t.Helper()
	eventually.Within(t, propagation, func() error {
		if got := standingAt(t, px, p, tenantID); !sameStanding(got, want) {
			return fmt.Errorf("in %s through %s: %s, want %s", tenantID, px.name, got, want)
		}
		return nil
	})
}

// memberWrites are the operations of coreapi's OpenAPI document that
// write to a member by id: every method but GET on /api/v1/users/{id} and
// the paths under it.
func memberWrites(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(sys.root, "coreapi", "internal", "openapi", "openapi.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var ops []string
	for path, methods := range doc.Paths {
		if path != "/api/v1/users/{id}" && !strings.HasPrefix(path, "/api/v1/users/{id}/") {
			continue
		}
		for method, o := range methods {
			if method == "get" || method == "parameters" {
				continue
			}
			var op struct {
				ID string `json:"operationId"`
			}
			if err := json.Unmarshal(o, &op); err != nil {
				t.Fatal(err)
			}
			ops = append(ops, op.ID)
		}
	}
	if len(ops) < 5 {
		t.Fatalf("only %d writes to a member in the document: %v", len(ops), ops)
	}
	slices.Sort(ops)
	return ops
}

func sameStanding(x, y sharedStanding) bool {
	return x.Token == y.Token && x.Key == y.Key && slices.Equal(x.Roles, y.Roles)
}

// enrolSecondFactor gives the person an active second factor, enrolled
// with their token for tenant enrolIn; the confirmation ends their other
// sessions and moves their token version on, so they sign in to both
// tenants again, with the factor (a TOTP code, then a recovery code).
func enrolSecondFactor(t *testing.T, p *sharedPerson, enrolIn, other string) {
	t.Helper()
	tok := p.tokenIn[enrolIn]
	r := call(t, "POST", sys.proxyA.url("/api/v1/users/me/mfa/totp"), tok, nil)
	expect(t, r, http.StatusCreated)
	secret := decode[struct {
		Secret string `json:"secret"`
	}](t, r).Secret
	now := time.Now()
	r = call(t, "POST", sys.proxyA.url("/api/v1/users/me/mfa/totp/confirm"), tok, map[string]string{"code": totp(t, secret, now)})
	expect(t, r, http.StatusOK)
	codes := decode[struct {
		RecoveryCodes []string `json:"recovery_codes"`
	}](t, r).RecoveryCodes
	for i, ten := range []string{other, enrolIn} {
		r = call(t, "POST", sys.proxyA.url("/api/v1/auth/token"), "", map[string]string{
			"grant_type": "password", "email": p.Email, "password": p.Password, "tenant_id": ten})
		expectProblem(t, r, http.StatusUnauthorized)
		ch := decode[struct {
			MFAToken string `json:"mfa_token"`
		}](t, r)
		code := totp(t, secret, now.Add(30*time.Second))
		if i > 0 {
			code = codes[0]
		}
		r = call(t, "POST", sys.proxyA.url("/api/v1/auth/token"), "", map[string]string{
			"grant_type": "mfa_otp", "mfa_token": ch.MFAToken, "code": code})
		expect(t, r, http.StatusOK)
		p.tokenIn[ten] = decode[tokenResponse](t, r).AccessToken
	}
}
