package tenantapi_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/invitations"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// countingHasher counts the passwords hashed.
type countingHasher struct {
	h *password.Hasher
	n atomic.Int64
}

func (c *countingHasher) Hash(ctx context.Context, pw string) (string, error) {
	c.n.Add(1)
	return c.h.Hash(ctx, pw)
}

// TestNewMemberPasswordHashedLast: POST /users with a password hashes it
// (argon2, tens of ms of CPU) only once nothing can refuse the request:
// a conflict, an unknown role, a spent mail limit of the tenant or of
// the address, an address that has an account (invited, its password
// ignored) hash nothing and charge nothing; each hash made counts against the client's
// PASSWORD_CHECKS_PER_HOUR, and past it the request is 429 with
// Retry-After, unhashed and with nothing written.
func TestNewMemberPasswordHashedLast(t *testing.T) {
	t.Parallel()
	hasher := &countingHasher{h: password.New(password.Params{Memory: 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}, 0)}
	w := apitest.SeedWorld(t, start(t, apitest.Options{Passwords: hasher, PasswordChecksPerHour: 2}))
	const ip = "198.51.100.7"
	post := func(as *identity.Identity, body map[string]any) apitest.Response {
		return w.E.Do(t, apitest.Request{Method: "POST", Path: "/api/v1/users", Body: body, As: as, ClientIP: ip})
	}
	charged := func() int {
		var n int
		err := w.E.DB.Pool.QueryRow(t.Context(), `SELECT coalesce((SELECT hits FROM rate_limits WHERE key = $1), 0)`,
			ratelimit.PasswordChecksKey(ip)).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	const pw = "a long enough passphrase"
	w.E.SeedUser(t, "solo@elsewhere.test", "Solo")
	for _, c := range []struct {
		name   string
		as     *identity.Identity
		body   map[string]any
		status int
	}{
		{"already a member", &w.Admin, map[string]any{"email": "member@acme.test", "password": pw}, 409},
		{"unknown role", &w.Admin, map[string]any{"email": "x1@acme.test", "password": pw, "roles": []string{"wizard"}}, 422},
		{"no permission", &w.Member, map[string]any{"email": "x3@acme.test", "password": pw}, 403},
		{"an existing account, invited", &w.Admin, map[string]any{"email": "solo@elsewhere.test", "password": pw}, 202},
	} {
		apitest.WantStatus(t, post(c.as, c.body), c.status)
		if n := hasher.n.Load(); n != 0 {
			t.Fatalf("%s: %d passwords hashed, want 0", c.name, n)
		}
		if n := charged(); n != 0 {
			t.Fatalf("%s: %d hashes charged, want 0", c.name, n)
		}
	}

	// The tenant's mail limit spent, or the address's verification
	// mails, in the current window, or by the one before (full, ended
	// 10 s ago, whose hits count on as the window slides) and one mail
	// since: refused before the hash, as the transaction would refuse.
	for _, spent := range []struct {
		name, detail string
		key          []byte
		hits, prev   int
	}{
		{"tenant mails", "TENANT_MAILS_PER_HOUR", invitations.TenantMailKey(w.A), 1000000, 0},
		{"address mails", "verification mails", onetime.AddressMailKey("x4+tag@acme.test"), 1000000, 0},
		{"tenant mails, the window before", "TENANT_MAILS_PER_HOUR", invitations.TenantMailKey(w.A), 1, invitations.DefaultLimits().TenantMail.N},
		{"address mails, the window before", "verification mails", onetime.AddressMailKey("x4+tag@acme.test"), 1, onetime.AddressMailLimit().N},
	} {
		ago := "0"
		if spent.prev > 0 {
			ago = "10 seconds"
		}
		if _, err := w.E.DB.Pool.Exec(t.Context(), `INSERT INTO rate_limits (key, window_start, hits, prev_hits) VALUES ($1, now() - $4::interval, $2, $3)
			ON CONFLICT (key) DO UPDATE SET window_start = excluded.window_start, hits = excluded.hits, prev_hits = excluded.prev_hits`,
			spent.key, spent.hits, spent.prev, ago); err != nil {
			t.Fatal(err)
		}
		r := post(&w.Admin, map[string]any{"email": "x4@acme.test", "password": pw})
		apitest.WantProblem(t, r, 429, "too_many_requests")
		if d := r.Problem(t).Detail; !strings.Contains(d, spent.detail) || r.Header.Get("Retry-After") == "" {
			t.Errorf("%s: detail %q, Retry-After %q", spent.name, d, r.Header.Get("Retry-After"))
		}
		if n := hasher.n.Load(); n != 0 {
			t.Fatalf("%s: %d passwords hashed, want 0", spent.name, n)
		}
		if n := charged(); n != 0 {
			t.Fatalf("%s: %d hashes charged, want 0", spent.name, n)
		}
		if _, err := w.E.DB.Pool.Exec(t.Context(), `DELETE FROM rate_limits WHERE key = $1`, spent.key); err != nil {
			t.Fatal(err)
		}
	}

	// Two members made, each hashed once and charged; the third is past
	// the budget: 429 with Retry-After, unhashed, nobody made.
	for i, email := range []string{"y1@acme.test", "y2@acme.test"} {
		apitest.WantStatus(t, post(&w.Admin, map[string]any{"email": email, "password": pw}), 201)
		if n := hasher.n.Load(); n != int64(i+1) {
			t.Fatalf("%d passwords hashed after %d members, want %d", n, i+1, i+1)
		}
	}
	if n := charged(); n != 2 {
		t.Fatalf("%d hashes charged, want 2", n)
	}
	r := post(&w.Admin, map[string]any{"email": "y3@acme.test", "password": pw})
	apitest.WantProblem(t, r, 429, "too_many_requests")
	if r.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	if n := hasher.n.Load(); n != 2 {
		t.Fatalf("%d passwords hashed past the budget, want 2", n)
	}
	var made int
	if err := w.E.DB.Pool.QueryRow(t.Context(), `SELECT count(*) FROM users WHERE email = 'y3@acme.test'`).Scan(&made); err != nil || made != 0 {
		t.Fatalf("past the budget: %d users made (err %v)", made, err)
	}
	// Another client has its own budget; a member made without a
	// password costs none.
	apitest.WantStatus(t, w.E.Do(t, apitest.Request{Method: "POST", Path: "/api/v1/users", As: &w.Admin, ClientIP: "198.51.100.8",
		Body: map[string]any{"email": "y3@acme.test", "password": pw}}), 201)
	apitest.WantStatus(t, post(&w.Admin, map[string]any{"email": "y4@acme.test"}), 201)
	if n := hasher.n.Load(); n != 3 {
		t.Fatalf("%d passwords hashed, want 3", n)
	}
}
