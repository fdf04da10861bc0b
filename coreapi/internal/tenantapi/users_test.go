package tenantapi_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenantapi"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

type memberList struct {
	Data       []tenantapi.Member `json:"data"`
	NextCursor *string            `json:"next_cursor"`
	Total      *int64             `json:"total"`
}

func TestMe(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := w.E.Get(t, &w.Admin, "/api/v1/users/me")
	apitest.WantStatus(t, r, 200)
	var me tenantapi.Me
	r.JSON(t, &me)
	if me.ID != w.Admin.UserID || me.TenantID != w.A || me.Email != "admin@acme.test" {
		t.Fatalf("me = %+v", me)
	}
	if !slices.Equal(me.Roles, []string{"admin"}) {
		t.Errorf("roles = %v, want [admin]", me.Roles)
	}
	if want := []string{"api-keys:write", "audit:read", "roles:read", "roles:write", "tenant:read", "users:read", "users:write"}; !slices.Equal(me.Permissions, want) {
		t.Errorf("permissions = %v, want %v", me.Permissions, want)
	}

	r = w.E.Send(t, &w.Admin, "PATCH", "/api/v1/users/me", map[string]any{"display_name": "  Ada  "})
	apitest.WantStatus(t, r, 200)
	r.JSON(t, &me)
	if me.DisplayName != "Ada" {
		t.Errorf("display_name = %q, want Ada", me.DisplayName)
	}
	if got := w.E.AuditActions(t, w.A); !slices.Equal(got, []string{"user.profile_updated"}) {
		t.Errorf("audit = %v", got)
	}
	if got := w.E.OutboxSubjects(t); len(got) != 0 {
		t.Errorf("a display name change wrote outbox rows %v; the projection does not carry it", got)
	}

	t.Run("no such user", func(t *testing.T) {
		gone := w.Admin
		gone.UserID = "0b4f1f8e-1111-4c2a-9a53-7a1f7e0c9999"
		apitest.WantProblem(t, w.E.Get(t, &gone, "/api/v1/users/me"), 404, "not_found")
	})
}

func TestMyTenants(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.E.SeedMember(t, w.B, w.Admin.UserID, "member")
	r := w.E.Get(t, &w.Admin, "/api/v1/users/me/tenants?limit=1&include_total=true")
	apitest.WantStatus(t, r, 200)
	var l struct {
		Data       []tenantapi.Membership `json:"data"`
		NextCursor *string                `json:"next_cursor"`
		Total      *int64                 `json:"total"`
	}
	r.JSON(t, &l)
	if len(l.Data) != 1 || l.Data[0].ID != w.A || !slices.Equal(l.Data[0].Roles, []string{"admin"}) || l.NextCursor == nil || l.Total == nil || *l.Total != 2 {
		t.Fatalf("page 1 = %s", r.Body)
	}
	r = w.E.Get(t, &w.Admin, "/api/v1/users/me/tenants?limit=1&cursor="+*l.NextCursor)
	apitest.WantStatus(t, r, 200)
	l.NextCursor, l.Total = nil, nil
	r.JSON(t, &l)
	if len(l.Data) != 1 || l.Data[0].ID != w.B || l.Data[0].Name != "Bravo" || !slices.Equal(l.Data[0].Roles, []string{"member"}) || l.NextCursor != nil || l.Total != nil {
		t.Fatalf("page 2 = %s", r.Body)
	}
}

// TestKeysListNoTenantsOfTheirPerson: an API key acts in its own tenant
// only, and GET /users/me/tenants would tell whoever holds one (an
// integration, a CI job, a leaked secret) the other tenants of the person
// who created it, with their names, statuses and the person's roles
// there: 403 principal_not_allowed, whatever the key's permissions. A
// person and a service account (whose one tenant is the key's) still
// list theirs.
func TestKeysListNoTenantsOfTheirPerson(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.E.SeedMember(t, w.B, w.Admin.UserID, "member")
	key := w.E.AsKey(t, w.Admin)
	r := w.E.Get(t, &key, "/api/v1/users/me/tenants")
	apitest.WantProblem(t, r, 403, "principal_not_allowed")
	if strings.Contains(string(r.Body), w.B) || strings.Contains(string(r.Body), "Bravo") {
		t.Errorf("the refusal names the other tenant: %s", r.Body)
	}
	apitest.WantStatus(t, w.E.Get(t, &w.Admin, "/api/v1/users/me/tenants"), 200)
}

func TestListUsersPagination(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for i := range 7 {
		w.E.SeedUserIn(t, w.A, fmt.Sprintf("u%d@acme.test", i), "member")
	}
	// 3 + 7 members in A; B's owner must never appear.
	var seen []string
	cursor := ""
	pages := 0
	for {
		path := "/api/v1/users?limit=4&include_total=true"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		r := w.E.Get(t, &w.Admin, path)
		apitest.WantStatus(t, r, 200)
		var l memberList
		r.JSON(t, &l)
		pages++
		if l.Total == nil || *l.Total != 10 {
			t.Fatalf("page %d total = %v, want 10", pages, l.Total)
		}
		for _, m := range l.Data {
			seen = append(seen, m.Email)
			if len(m.Roles) != 1 {
				t.Errorf("%s roles = %v", m.Email, m.Roles)
			}
		}
		if l.NextCursor == nil {
			break
		}
		cursor = *l.NextCursor
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if pages != 3 || len(seen) != 10 {
		t.Fatalf("pages = %d, members = %d (%v); want 3 pages, 10 members", pages, len(seen), seen)
	}
	uniq := map[string]bool{}
	for _, s := range seen {
		if uniq[s] {
			t.Errorf("%s listed twice", s)
		}
		uniq[s] = true
		if strings.HasSuffix(s, "@bravo.test") {
			t.Errorf("tenant B's member %s listed in A", s)
		}
	}
	if seen[0] != "owner@acme.test" {
		t.Errorf("first member = %s, want the oldest (owner@acme.test)", seen[0])
	}

	r := w.E.Get(t, &w.Admin, "/api/v1/users")
	var l memberList
	r.JSON(t, &l)
	if l.Total != nil || l.NextCursor != nil || len(l.Data) != 10 {
		t.Errorf("default page: total %v, next %v, %d members", l.Total, l.NextCursor, len(l.Data))
	}
}

func TestCursorTampering(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := w.E.Get(t, &w.Owner, "/api/v1/users?limit=1")
	var l memberList
	r.JSON(t, &l)
	if l.NextCursor == nil {
		t.Fatal("no next cursor")
	}
	good := *l.NextCursor
	payload, mac, _ := strings.Cut(good, ".")
	flipped := []byte(payload)
	flipped[2] ^= 1
	rOther := w.E.Get(t, &w.OwnerB, "/api/v1/roles?limit=1")
	var rl struct {
		NextCursor *string `json:"next_cursor"`
	}
	rOther.JSON(t, &rl)

	tests := []struct {
		name, as, cursor string
	}{
		{"payload altered", "a", string(flipped) + "." + mac},
		{"mac altered", "a", payload + "." + strings.Repeat("A", len(mac))},
		{"no mac", "a", payload},
		{"garbage", "a", "%%%"},
		{"line break inside", "a", payload[:4] + "%0A" + payload[4:] + "." + mac},
		{"cursor of another tenant", "b", good},
		{"cursor of another list", "a", *rl.NextCursor},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			as := &w.Owner
			if tt.as == "b" {
				as = &w.OwnerB
			}
			r := w.E.Get(t, as, "/api/v1/users?limit=1&cursor="+tt.cursor)
			apitest.WantProblem(t, r, 400, "invalid_cursor")
		})
	}
	t.Run("untampered", func(t *testing.T) {
		apitest.WantStatus(t, w.E.Get(t, &w.Owner, "/api/v1/users?limit=1&cursor="+good), 200)
	})
	t.Run("bad limit", func(t *testing.T) {
		for _, q := range []string{"limit=0", "limit=201", "limit=x", "include_total=maybe"} {
			apitest.WantProblem(t, w.E.Get(t, &w.Owner, "/api/v1/users?"+q), 400, "invalid_query")
		}
	})
	// A reader that takes the last of repeated values (a cache, a
	// gateway) would see another page size, position or total than the
	// one served: a repeat is refused, whatever the values, and named.
	t.Run("repeated parameter", func(t *testing.T) {
		for q, field := range map[string]string{
			"limit=1&limit=200":                               "limit",
			"limit=5&limit=5":                                 "limit",
			"cursor=" + good + "&cursor=":                     "cursor",
			"include_total=true&include_total=false":          "include_total",
			"limit=1&cursor=" + good + "&include_total=false": "",
		} {
			r := w.E.Get(t, &w.Owner, "/api/v1/users?"+q)
			if field == "" {
				apitest.WantStatus(t, r, 200)
				continue
			}
			apitest.WantProblem(t, r, 400, "invalid_query")
			if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != field {
				t.Errorf("%s: errors %+v, want one naming %s", q, p.Errors, field)
			}
		}
		// Every list reads its page the same way.
		for _, path := range []string{"/api/v1/roles", "/api/v1/audit-events", "/api/v1/users/me/tenants"} {
			apitest.WantProblem(t, w.E.Get(t, &w.Owner, path+"?limit=1&limit=2"), 400, "invalid_query")
		}
	})
}

func TestCrossTenantIDs(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	bUser := w.OwnerB.UserID
	var roleB struct {
		Data []struct{ ID string } `json:"data"`
	}
	w.E.Get(t, &w.OwnerB, "/api/v1/roles").JSON(t, &roleB)
	bRole := roleB.Data[0].ID
	tests := []struct {
		method, path string
		body         any
	}{
		{"GET", "/api/v1/users/" + bUser, nil},
		{"PATCH", "/api/v1/users/" + bUser, map[string]any{"membership_status": "disabled"}},
		{"DELETE", "/api/v1/users/" + bUser, nil},
		{"PUT", "/api/v1/users/" + bUser + "/roles/member", nil},
		{"DELETE", "/api/v1/users/" + bUser + "/roles/owner", nil},
		{"PATCH", "/api/v1/roles/" + bRole, map[string]any{"description": "mine now"}},
		{"DELETE", "/api/v1/roles/" + bRole, nil},
		{"GET", "/api/v1/users/00000000-0000-0000-0000-000000000000", nil},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := w.E.Send(t, &w.Owner, tt.method, tt.path, tt.body)
			apitest.WantProblem(t, r, 404, "not_found")
			if strings.Contains(string(r.Body), "bravo") {
				t.Errorf("404 body leaks tenant B's data: %s", r.Body)
			}
		})
	}
	// Nothing in B changed.
	r := w.E.Get(t, &w.OwnerB, "/api/v1/users/"+bUser)
	apitest.WantStatus(t, r, 200)
	var m tenantapi.Member
	r.JSON(t, &m)
	if m.Status != "active" || !slices.Equal(m.Roles, []string{"owner"}) {
		t.Fatalf("B's owner changed: %+v", m)
	}
	if got := w.E.AuditActions(t, w.B); len(got) != 0 {
		t.Errorf("B audit = %v", got)
	}
}

func TestInvalidUUIDs(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for _, p := range []string{
		"GET /api/v1/users/not-a-uuid",
		"GET /api/v1/users/0000000-0000-0000-0000-0000000000000",
		"PATCH /api/v1/users/123",
		"DELETE /api/v1/users/xyz",
		"PUT /api/v1/users/xyz/roles/member",
		"PATCH /api/v1/roles/1",
		"DELETE /api/v1/roles/%20",
		"GET /internal/v1/projections/nope?tenant_id=" + w.A,
	} {
		method, path, _ := strings.Cut(p, " ")
		t.Run(p, func(t *testing.T) {
			var body any
			if method == "PATCH" {
				body = map[string]any{"membership_status": "active"}
			}
			as := &w.Owner
			if strings.HasPrefix(path, "/internal") {
				as = nil
			}
			r := w.E.Do(t, apitestReq(method, path, body, as, as == nil))
			apitest.WantProblem(t, r, 400, "invalid_id")
		})
	}
	t.Run("tenant_id not a uuid", func(t *testing.T) {
		r := w.E.Do(t, apitestReq("GET", "/internal/v1/projections/"+w.Owner.UserID+"?tenant_id=acme", nil, nil, true))
		apitest.WantProblem(t, r, 400, "invalid_id")
	})
}

func TestCreateUser(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := w.E.Send(t, &w.Admin, "POST", "/api/v1/users", map[string]any{"email": "new@acme.test", "display_name": "New", "roles": []string{"member", "admin"}})
	apitest.WantStatus(t, r, 201)
	var m tenantapi.Member
	r.JSON(t, &m)
	if m.Email != "new@acme.test" || m.DisplayName != "New" || !slices.Equal(m.Roles, []string{"admin", "member"}) || m.Status != "active" {
		t.Fatalf("created = %+v", m)
	}
	if loc := r.Header.Get("Location"); loc != "/api/v1/users/"+m.ID {
		t.Errorf("Location = %q", loc)
	}

	// An existing account (B's owner) is not attached: it is invited, and
	// the answer says nothing of the account (no id, name, status or
	// memberships); a password given for it is ignored.
	w.E.SeedUser(t, "solo@elsewhere.test", "Solo")
	for _, body := range []map[string]any{{"email": "OWNER@bravo.test"}, {"email": "solo@elsewhere.test", "password": "long enough pw"}} {
		r = w.E.Send(t, &w.Admin, "POST", "/api/v1/users", body)
		apitest.WantStatus(t, r, 202)
		var got map[string]any
		r.JSON(t, &got)
		for _, leak := range []string{"user_id", "display_name", "user_status", "memberships"} {
			if _, ok := got[leak]; ok {
				t.Errorf("invitation answer carries %q: %s", leak, r.Body)
			}
		}
		if got["status"] != "pending" || got["id"] == w.OwnerB.UserID || strings.Contains(string(r.Body), w.OwnerB.UserID) {
			t.Errorf("answer for an existing account = %s", r.Body)
		}
	}
	var joined int
	if err := w.E.DB.Pool.QueryRow(t.Context(), `SELECT count(*) FROM memberships WHERE tenant_id = $1 AND user_id = $2`, w.A, w.OwnerB.UserID).Scan(&joined); err != nil || joined != 0 {
		t.Errorf("the existing account was attached without consent (%d memberships, err %v)", joined, err)
	}
	r = w.E.Get(t, &w.OwnerB, "/api/v1/users/me/tenants")
	if strings.Contains(string(r.Body), w.A) {
		t.Errorf("tenant A appears in the invitee's tenants: %s", r.Body)
	}

	tests := []struct {
		name   string
		as     string
		body   map[string]any
		status int
		code   string
	}{
		{"already a member", "admin", map[string]any{"email": "member@acme.test"}, 409, "already_member"},
		{"invited twice", "admin", map[string]any{"email": "owner@bravo.test"}, 409, "invitation_pending"},
		{"unknown role", "admin", map[string]any{"email": "x1@acme.test", "roles": []string{"wizard"}}, 422, "validation_failed"},
		{"admin grants owner", "admin", map[string]any{"email": "x2@acme.test", "roles": []string{"owner"}}, 403, "forbidden"},
		{"bad email", "admin", map[string]any{"email": "not an email"}, 422, "validation_failed"},
		{"a service account's address", "admin", map[string]any{"email": "x4@service-accounts.invalid", "password": "long enough pw"}, 422, "validation_failed"},
		{"missing email", "admin", map[string]any{"display_name": "x"}, 422, "validation_failed"},
		{"a full-width look-alike", "admin", map[string]any{"email": "\uff58member@acme.test"}, 422, "validation_failed"},
		{"a mixed-script look-alike", "admin", map[string]any{"email": "m\u0435mber@acme.test"}, 422, "validation_failed"},
		{"short password", "admin", map[string]any{"email": "x3@acme.test", "password": "short"}, 422, "validation_failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := w.E.AuditActions(t, w.A)
			r := w.E.Send(t, &w.Admin, "POST", "/api/v1/users", tt.body)
			apitest.WantProblem(t, r, tt.status, tt.code)
			if after := w.E.AuditActions(t, w.A); len(after) != len(before) {
				t.Errorf("a refused create wrote audit rows: %v", after[len(before):])
			}
		})
	}
	var n int
	if err := w.E.DB.Pool.QueryRow(t.Context(), `SELECT count(*) FROM users WHERE email LIKE 'x%@acme.test'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("refused creates left %d users (err %v)", n, err)
	}
	if got, want := w.E.OutboxSubjects(t), []string{invalidation.UserSubject(m.ID)}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("outbox = %v, want %v (an invitation changes no projection)", got, want)
	}
}

func TestRolesGrantRevokeAndLastOwner(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	mid := w.Member.UserID
	base := "/api/v1/users/" + mid + "/roles/"

	r := w.E.Send(t, &w.Admin, "PUT", base+"admin", nil)
	apitest.WantStatus(t, r, 200)
	var m tenantapi.Member
	r.JSON(t, &m)
	if !slices.Equal(m.Roles, []string{"admin", "member"}) {
		t.Fatalf("after grant roles = %v", m.Roles)
	}
	// Idempotent: a second grant writes nothing.
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "PUT", base+"admin", nil), 200)
	if got, want := w.E.OutboxSubjects(t), []string{invalidation.UserSubject(mid)}; !slices.Equal(got, want) {
		t.Fatalf("outbox after grants = %v, want %v", got, want)
	}
	r = w.E.Send(t, &w.Admin, "DELETE", base+"admin", nil)
	apitest.WantStatus(t, r, 200)
	r.JSON(t, &m)
	if !slices.Equal(m.Roles, []string{"member"}) {
		t.Fatalf("after revoke roles = %v", m.Roles)
	}
	if got := w.E.OutboxSubjects(t); len(got) != 2 || got[1] != invalidation.UserSubject(mid) {
		t.Fatalf("outbox after revoke = %v", got)
	}
	apitest.WantProblem(t, w.E.Send(t, &w.Admin, "PUT", base+"nonexistent", nil), 404, "not_found")
	apitest.WantProblem(t, w.E.Send(t, &w.Admin, "PUT", base+"Bad%20Name", nil), 404, "not_found")
	// Escalation: an admin cannot hand out owner.
	apitest.WantProblem(t, w.E.Send(t, &w.Admin, "PUT", base+"owner", nil), 403, "forbidden")

	oid := w.Owner.UserID
	t.Run("last owner", func(t *testing.T) {
		before := w.E.OutboxSubjects(t)
		for _, c := range []struct {
			method, path string
			body         any
		}{
			{"DELETE", "/api/v1/users/" + oid + "/roles/owner", nil},
			{"DELETE", "/api/v1/users/" + oid, nil},
			{"PATCH", "/api/v1/users/" + oid, map[string]any{"membership_status": "disabled"}},
		} {
			r := w.E.Send(t, &w.Owner, c.method, c.path, c.body)
			apitest.WantProblem(t, r, 409, "last_owner")
		}
		if got := w.E.OutboxSubjects(t); len(got) != len(before) {
			t.Errorf("refused changes wrote outbox rows: %v", got[len(before):])
		}
		r := w.E.Get(t, &w.Owner, "/api/v1/users/"+oid)
		r.JSON(t, &m)
		if !slices.Equal(m.Roles, []string{"owner"}) || m.Status != "active" {
			t.Fatalf("owner changed: %+v", m)
		}
	})
	t.Run("with a second owner the first can leave", func(t *testing.T) {
		apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PUT", base+"owner", nil), 200)
		apitest.WantStatus(t, w.E.Send(t, &w.Owner, "DELETE", "/api/v1/users/"+oid+"/roles/owner", nil), 200)
		// It holds no role now, so its request signed before is refused
		// (TestDemotedActorRefused); the new owner removes it.
		apitest.WantProblem(t, w.E.Send(t, &w.Owner, "DELETE", "/api/v1/users/"+oid, nil), 403, "forbidden")
		newOwner := w.E.IdentityOf(t, mid, w.A)
		apitest.WantStatus(t, w.E.Send(t, &newOwner, "DELETE", "/api/v1/users/"+oid, nil), 204)
		apitest.WantProblem(t, w.E.Get(t, &w.Admin, "/api/v1/users/"+oid), 404, "not_found")
		// The new sole owner is protected in turn.
		apitest.WantProblem(t, w.E.Send(t, &newOwner, "DELETE", "/api/v1/users/"+mid, nil), 409, "last_owner")
	})
}

func TestDisableAndRemoveMember(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	mid := w.Member.UserID
	r := w.E.Send(t, &w.Admin, "PATCH", "/api/v1/users/"+mid, map[string]any{"membership_status": "disabled"})
	apitest.WantStatus(t, r, 200)
	var m tenantapi.Member
	r.JSON(t, &m)
	if m.Status != "disabled" || m.UserStatus != "active" {
		t.Fatalf("after disable: %+v", m)
	}
	// Same status again: nothing written.
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "PATCH", "/api/v1/users/"+mid, map[string]any{"membership_status": "disabled"}), 200)
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "DELETE", "/api/v1/users/"+mid, nil), 204)
	apitest.WantProblem(t, w.E.Send(t, &w.Admin, "DELETE", "/api/v1/users/"+mid, nil), 404, "not_found")
	want := []string{invalidation.UserSubject(mid), invalidation.UserSubject(mid)}
	if got := w.E.OutboxSubjects(t); !slices.Equal(got, want) {
		t.Fatalf("outbox = %v, want %v", got, want)
	}
	if got, want := w.E.AuditActions(t, w.A), []string{"member.updated", "member.removed"}; !slices.Equal(got, want) {
		t.Fatalf("audit = %v, want %v", got, want)
	}
	// The account still exists (removal is from the tenant only).
	var n int
	if err := w.E.DB.Pool.QueryRow(t.Context(), `SELECT count(*) FROM users WHERE id = $1`, mid).Scan(&n); err != nil || n != 1 {
		t.Fatalf("user rows = %d, %v", n, err)
	}
	// An admin cannot remove an owner (the owner has tenant:write).
	apitest.WantProblem(t, w.E.Send(t, &w.Admin, "DELETE", "/api/v1/users/"+w.Owner.UserID, nil), 403, "forbidden")
}

// TestLastOwnerRace: two owners take owner at the same moment, from each
// other or each from themselves; the tenant lock lets exactly one through.
// Taking it from each other, the second is decided after the first has
// taken its owner role: it holds nothing any more (403). Each from
// themselves, the second would leave no owner (409).
func TestLastOwnerRace(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name    string
		mutual  bool
		refused int
	}{{"each other", true, 403}, {"themselves", false, 409}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			lastOwnerRace(t, mode.mutual, mode.refused)
		})
	}
}

func lastOwnerRace(t *testing.T, mutual bool, refused int) {
	w := newWorld(t)
	current := w.Owner
	const q = `SELECT mr.user_id::text FROM membership_roles mr JOIN roles r ON r.id = mr.role_id WHERE mr.tenant_id = $1 AND r.name = 'owner'`
	for round := range 10 {
		second := w.E.SeedUserIn(t, w.A, fmt.Sprintf("owner2-%d@acme.test", round), "owner")
		statuses := make(chan int, 2)
		start := make(chan struct{})
		changes := []struct{ as, target identity.Identity }{{current, second}, {second, current}}
		if !mutual {
			changes = []struct{ as, target identity.Identity }{{current, current}, {second, second}}
		}
		for _, c := range changes {
			go func() {
				<-start
				r := w.E.Send(t, &c.as, "DELETE", "/api/v1/users/"+c.target.UserID+"/roles/owner", nil)
				statuses <- r.Status
			}()
		}
		close(start)
		a, b := <-statuses, <-statuses
		if !((a == 200 && b == refused) || (a == refused && b == 200)) {
			t.Fatalf("round %d: statuses %d and %d, want one 200 and one %d", round, a, b, refused)
		}
		var owners []string
		rows, err := w.E.DB.Pool.Query(t.Context(), q, w.A)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			owners = append(owners, id)
		}
		if len(owners) != 1 {
			t.Fatalf("round %d: owners %v, want exactly 1", round, owners)
		}
		current = w.E.IdentityOf(t, owners[0], w.A)
	}
}

// TestGrantRacingRemoval: a role is granted to a member while another
// admin removes the member. The removal locks the membership and then
// deletes it; the grant checked the membership (a key-share lock that the
// deletion must wait for) and then, refreshing the member's role names,
// waited for the removal's lock: PostgreSQL broke the deadlock by failing
// one with a 500. Now the grant takes the tenant's lock first, as the
// other member changes do, and finds the member gone. A test transaction
// holds the membership so the two meet in that order every time.
func TestGrantRacingRemoval(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := t.Context()
	hold, err := w.E.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(context.Background())
	if _, err := hold.Exec(ctx, `SELECT 1 FROM memberships WHERE tenant_id = $1 AND user_id = $2 FOR KEY SHARE`, w.A, w.Member.UserID); err != nil {
		t.Fatal(err)
	}
	removed, granted := make(chan apitest.Response, 1), make(chan apitest.Response, 1)
	go func() { removed <- w.E.Send(t, &w.Owner, "DELETE", "/api/v1/users/"+w.Member.UserID, nil) }()
	w.E.DB.WaitForLockWaiters(t, 1)
	go func() { granted <- w.E.Send(t, &w.Admin, "PUT", "/api/v1/users/"+w.Member.UserID+"/roles/admin", nil) }()
	w.E.DB.WaitForLockWaiters(t, 2)
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-removed; r.Status != 204 {
		t.Errorf("removal: status %d, want 204; body %s", r.Status, r.Body)
	}
	r := <-granted
	apitest.WantProblem(t, r, 404, "not_found")
}

// TestTotalOnAPagePastTheEnd: a cursor whose later rows were removed since
// it was issued gives an empty page, and include_total still says how many
// the whole list holds (the page's rows used to carry the count, so an
// empty page said 0). Members and roles; the tenants and audit lists do the
// same.
func TestTotalOnAPagePastTheEnd(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	var late []string
	for i := range 3 {
		late = append(late, w.E.SeedUserIn(t, w.A, fmt.Sprintf("late%d@acme.test", i), "member").UserID)
	}
	// 3 + 3 members in A: a page of 3 leaves a cursor before the last 3.
	var l memberList
	w.E.Get(t, &w.Admin, "/api/v1/users?limit=3").JSON(t, &l)
	if l.NextCursor == nil {
		t.Fatal("no next cursor after the first 3 of 6 members")
	}
	cursor := *l.NextCursor
	for _, uid := range late {
		apitest.WantStatus(t, w.E.Send(t, &w.Owner, "DELETE", "/api/v1/users/"+uid, nil), 204)
	}
	l = memberList{}
	w.E.Get(t, &w.Admin, "/api/v1/users?limit=3&include_total=true&cursor="+cursor).JSON(t, &l)
	if len(l.Data) != 0 || l.Total == nil || *l.Total != 3 {
		t.Fatalf("members page past the end: %d members, total %s; want 0 and 3", len(l.Data), show(l.Total))
	}

	var roles struct {
		Data []struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"data"`
		NextCursor *string `json:"next_cursor"`
		Total      *int64  `json:"total"`
	}
	w.E.Get(t, &w.Admin, "/api/v1/roles?include_total=true").JSON(t, &roles)
	if roles.Total == nil {
		t.Fatal("roles: no total")
	}
	builtin := *roles.Total
	var ids []string
	for _, name := range []string{"zz1", "zz2"} { // listed after every built-in role (made later)
		var ro struct {
			ID string `json:"id"`
		}
		r := w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": name})
		apitest.WantStatus(t, r, 201)
		r.JSON(t, &ro)
		ids = append(ids, ro.ID)
	}
	roles.NextCursor = nil
	w.E.Get(t, &w.Admin, fmt.Sprintf("/api/v1/roles?limit=%d", builtin)).JSON(t, &roles)
	if roles.NextCursor == nil {
		t.Fatalf("roles: no next cursor after the first %d of %d", builtin, builtin+2)
	}
	cursor = *roles.NextCursor
	for _, id := range ids {
		apitest.WantStatus(t, w.E.Send(t, &w.Owner, "DELETE", "/api/v1/roles/"+id, nil), 204)
	}
	roles.Data, roles.Total = nil, nil
	w.E.Get(t, &w.Admin, "/api/v1/roles?include_total=true&cursor="+cursor).JSON(t, &roles)
	if len(roles.Data) != 0 || roles.Total == nil || *roles.Total != builtin {
		t.Fatalf("roles page past the end: %d roles, total %s; want 0 and %d", len(roles.Data), show(roles.Total), builtin)
	}
}

// show renders an optional count for a failure message.
func show(n *int64) string {
	if n == nil {
		return "absent"
	}
	return fmt.Sprint(*n)
}

// TestCreateRacingRoleDeletion: a member is added with a custom role while
// the role is being deleted. The addition read the role, then its grant's
// foreign-key check waited for the deletion's lock and failed once the
// deletion committed: a 500. Now the role is unknown (422), as it is to a
// request that comes after the deletion, and nothing is added. A test
// transaction deletes the role and holds it so the two meet in that order.
func TestCreateRacingRoleDeletion(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := t.Context()
	r := w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "ops", "permissions": []string{"audit:read"}})
	apitest.WantStatus(t, r, 201)
	var ops tenantapi.Role
	r.JSON(t, &ops)
	hold, err := w.E.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(context.Background())
	if _, err := hold.Exec(ctx, `DELETE FROM roles WHERE tenant_id = $1 AND id = $2`, w.A, ops.ID); err != nil {
		t.Fatal(err)
	}
	created := make(chan apitest.Response, 1)
	go func() {
		created <- w.E.Send(t, &w.Owner, "POST", "/api/v1/users", map[string]any{"email": "ops@acme.test", "roles": []string{"ops"}})
	}()
	w.E.DB.WaitForLockWaiters(t, 1)
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	apitest.WantProblem(t, <-created, 422, "validation_failed")
	var n int
	if err := w.E.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM users WHERE email = 'ops@acme.test'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d accounts created by the refused addition", n)
	}
}

// TestMemberUpdateAudited: member.updated records the membership's status
// before ("from") and after ("to"), as role.updated records a role: the
// row used to hold the request's new status only.
func TestMemberUpdateAudited(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	type state struct {
		Status string `json:"membership_status"`
	}
	mid := w.Member.UserID
	for _, c := range []struct{ from, to string }{{"active", "disabled"}, {"disabled", "active"}} {
		apitest.WantStatus(t, w.E.Send(t, &w.Admin, "PATCH", "/api/v1/users/"+mid, map[string]any{"membership_status": c.to}), 200)
		from, to := newestChange[state](t, w, "member.updated", mid)
		if from.Status != c.from || to.Status != c.to {
			t.Errorf("%s -> %s: from %+v to %+v", c.from, c.to, from, to)
		}
	}
}

// TestProfileUpdateAudited: user.profile_updated records the display name
// before ("from") and after ("to"): the row used to hold the new name
// only, so no one could tell what a member was called before. Setting the
// name the caller has writes no row.
func TestProfileUpdateAudited(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	type state struct {
		DisplayName string `json:"display_name"`
	}
	var me tenantapi.Me
	w.E.Get(t, &w.Admin, "/api/v1/users/me").JSON(t, &me)
	prev := me.DisplayName
	for _, name := range []string{"Ada", "Ada Lovelace", ""} {
		apitest.WantStatus(t, w.E.Send(t, &w.Admin, "PATCH", "/api/v1/users/me", map[string]any{"display_name": name}), 200)
		from, to := newestChange[state](t, w, "user.profile_updated", w.Admin.UserID)
		if from.DisplayName != prev || to.DisplayName != name {
			t.Errorf("rename to %q: from %+v to %+v, want from %q", name, from, to, prev)
		}
		prev = name
	}
	// The name the caller already has answers the profile as it is and
	// writes no row (it used to write one whose from and to were equal).
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "PATCH", "/api/v1/users/me", map[string]any{"display_name": "Ada"}), 200)
	before := w.E.Get(t, &w.Admin, "/api/v1/users/me")
	apitest.WantStatus(t, before, 200)
	for _, name := range []string{"Ada", " Ada "} {
		wantNoChange(t, w, &w.Admin, "/api/v1/users/me", map[string]any{"display_name": name}, before.Body)
	}
	// The name is the account's: a member of two tenants renamed in one
	// is renamed in both, and each tenant's log says so.
	w.E.SeedMember(t, w.B, w.Admin.UserID, "member")
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "PATCH", "/api/v1/users/me", map[string]any{"display_name": "Countess"}), 200)
	for _, tid := range []string{w.A, w.B} {
		var n int
		if err := w.E.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM audit_events
WHERE tenant_id = $1 AND action = 'user.profile_updated' AND target_id = $2 AND data->'to'->>'display_name' = 'Countess'`, tid, w.Admin.UserID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("tenant %s: %d user.profile_updated rows for the rename, want 1", tid, n)
		}
	}
}

// TestRevokeNeedsTheMembersPermissions: taking a role from a member needs
// every permission the member holds, as disabling or removing them does,
// not only the role's. An admin (no tenant:write) took admin from a member
// who also held tenant:write through a custom role, leaving them unable to
// manage members, whom the admin could neither disable nor remove.
func TestRevokeNeedsTheMembersPermissions(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "tenant-editor", "permissions": []string{"tenant:write"}}), 201)
	mid := w.Member.UserID
	base := "/api/v1/users/" + mid + "/roles/"
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PUT", base+"tenant-editor", nil), 200)
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PUT", base+"admin", nil), 200)
	before := len(w.E.OutboxSubjects(t))

	apitest.WantProblem(t, w.E.Send(t, &w.Admin, "PATCH", "/api/v1/users/"+mid, map[string]any{"membership_status": "disabled"}), 403, "forbidden")
	for _, role := range []string{"admin", "member", "no-such-role"} {
		r := w.E.Send(t, &w.Admin, "DELETE", base+role, nil)
		if role == "no-such-role" {
			apitest.WantProblem(t, r, 404, "not_found")
			continue
		}
		apitest.WantProblem(t, r, 403, "forbidden")
	}
	var m tenantapi.Member
	w.E.Get(t, &w.Owner, "/api/v1/users/"+mid).JSON(t, &m)
	if want := []string{"admin", "member", "tenant-editor"}; !slices.Equal(m.Roles, want) {
		t.Errorf("roles = %v, want %v", m.Roles, want)
	}
	if n := len(w.E.OutboxSubjects(t)); n != before {
		t.Errorf("refused revocations wrote %d outbox rows", n-before)
	}
	// The owner holds every permission; and a member within the admin's
	// permissions is the admin's to demote.
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "DELETE", base+"tenant-editor", nil), 200)
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "DELETE", base+"admin", nil), 200)
}
