package e2e

import (
	"net/http"
	"testing"
)

// localSeries counts the changes a proxy forwarded and applied at once,
// without waiting for their event.
const localSeries = `authproxy_invalidations_received_total{kind="local"}`

// TestMemberChangeWithNATSDownEnforcedAtOnceByTheForwardingProxy: as a
// logout is (TestLogoutWithNATSDownEnforcedAtOnceByTheForwardingProxy), a
// tenant admin's change to a member, or to a role, forwarded by proxy A
// while NATS is down, is enforced by proxy A from the members' very next
// request, though their projections were cached there: a removed member
// is refused (401), one whose role was revoked, or whose role lost a
// permission, is refused the route that needs it (403). Proxy A counts one
// local invalidation for the change, proxy B none. Proxy B, which forwarded
// nothing, keeps answering from its cache while NATS is down (for up to
// MAX_STALENESS, 30 s here, far more than this takes), and refuses once
// NATS is back (purge on reconnect, then the relayed event).
func TestMemberChangeWithNATSDownEnforcedAtOnceByTheForwardingProxy(t *testing.T) {
	cases := []struct {
		name  string
		roles []string // both members hold
		// probe is a route the change refuses the members it takes it
		// from, with status; the others keep it.
		probe  string
		status int
		// change is the owner's request, through proxy A, and the
		// members it takes the probe from.
		change func(target account, roleID string) (method, path string, body any)
		all    bool // every holder loses it, not the target alone
	}{
		{name: "member removed", roles: []string{"member"}, probe: "/api/v1/users/me", status: http.StatusUnauthorized,
			change: func(m account, _ string) (string, string, any) { return "DELETE", "/api/v1/users/" + m.UserID, nil }},
		// GET /users needs users:read, which admin grants and member does not.
		{name: "role revoked", roles: []string{"member", "admin"}, probe: "/api/v1/users?limit=1", status: http.StatusForbidden,
			change: func(m account, _ string) (string, string, any) {
				return "DELETE", "/api/v1/users/" + m.UserID + "/roles/admin", nil
			}},
		// GET /audit-events needs audit:read, which the auditor role loses.
		{name: "role edited", roles: []string{"member", "auditor"}, probe: "/api/v1/audit-events?limit=1", status: http.StatusForbidden, all: true,
			change: func(_ account, roleID string) (string, string, any) {
				return "PATCH", "/api/v1/roles/" + roleID, map[string]any{"permissions": []string{}}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			owner := signup(t, sys.proxyA)
			r := call(t, "POST", sys.proxyA.url("/api/v1/roles"), owner.Tokens.AccessToken,
				map[string]any{"name": "auditor", "permissions": []string{"audit:read"}})
			expect(t, r, http.StatusCreated)
			roleID := decode[struct {
				ID string `json:"id"`
			}](t, r).ID
			members := []account{addMember(t, owner, sys.proxyA, c.roles...), addMember(t, owner, sys.proxyA, c.roles...)}
			changed := members[:1]
			if c.all {
				changed = members
			}
			// Cached at both proxies: proxy A has to evict the entries,
			// not find none, and proxy B may answer from them.
			for _, px := range []*service{sys.proxyA, sys.proxyB} {
				for _, m := range members {
					waitCached(t, px, "the probe answered from "+px.name+"'s cache", "GET", px.url(c.probe), m.Tokens.AccessToken, nil, http.StatusOK)
				}
			}
			local := map[*service]float64{}
			for _, px := range []*service{sys.proxyA, sys.proxyB} {
				n, _, err := proxyMetric(px, localSeries)
				if err != nil {
					t.Fatal(err)
				}
				local[px] = n
			}
			wantLocal := func(when string) {
				t.Helper()
				for px, want := range map[*service]float64{sys.proxyA: local[sys.proxyA] + 1, sys.proxyB: local[sys.proxyB]} {
					if n, _, err := proxyMetric(px, localSeries); err != nil || n != want {
						t.Errorf("%s: %s %s %v (%v), want %v", when, px.name, localSeries, n, err, want)
					}
				}
			}

			back := natsDown(t)
			method, path, body := c.change(members[0], roleID)
			if r := call(t, method, sys.proxyA.url(path), owner.Tokens.AccessToken, body); r.Status/100 != 2 {
				t.Fatalf("%s while NATS is down: %s", c.name, r)
			}
			wantLocal("after the change") // counted before the answer
			// Proxy A: refused on the very next request, no waiting; the
			// member the change left alone keeps the route.
			for _, m := range changed {
				expectProblem(t, call(t, "GET", sys.proxyA.url(c.probe), m.Tokens.AccessToken, nil), c.status)
			}
			for _, m := range members[len(changed):] {
				expect(t, call(t, "GET", sys.proxyA.url(c.probe), m.Tokens.AccessToken, nil), http.StatusOK)
			}
			// Proxy B: still answers from its cache, as documented.
			for _, m := range changed {
				expect(t, call(t, "GET", sys.proxyB.url(c.probe), m.Tokens.AccessToken, nil), http.StatusOK)
			}

			back()
			for _, m := range changed {
				for _, px := range []*service{sys.proxyB, sys.proxyA} {
					_, got := mustWaitStatus(t, "GET", px.url(c.probe), m.Tokens.AccessToken, c.status, propagation)
					expectProblem(t, got, c.status)
				}
			}
			wantLocal("once NATS is back")
		})
	}
}
