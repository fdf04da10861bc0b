package lifecycle_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// createRole creates a custom role as the owner and returns its id.
func (x *env) createRole(t *testing.T, owner account, name string, perms ...string) string {
	t.Helper()
	if perms == nil {
		perms = []string{}
	}
	r := x.Send(t, &owner.id, http.MethodPost, "/api/v1/roles", map[string]any{"name": name, "permissions": perms})
	wantStatus(t, r, http.StatusCreated)
	var role struct{ ID string }
	r.JSON(t, &role)
	return role.ID
}

// rolesOf returns the names of the roles the account of email holds in
// the tenant, sorted.
func (x *env) rolesOf(t *testing.T, tenantID, email string) []string {
	t.Helper()
	rows, err := x.DB.Pool.Query(t.Context(), `
SELECT r.name FROM membership_roles mr
JOIN users u ON u.id = mr.user_id
JOIN roles r ON r.tenant_id = mr.tenant_id AND r.id = mr.role_id
WHERE mr.tenant_id = $1 AND lower(u.email) = lower($2) ORDER BY r.name`, tenantID, email)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// listedRoles returns the roles GET /invitations shows for invitation id.
func (x *env) listedRoles(t *testing.T, owner account, id string) []string {
	t.Helper()
	r := x.Get(t, &owner.id, "/api/v1/invitations?limit=100")
	wantStatus(t, r, http.StatusOK)
	var page struct{ Data []invitation }
	r.JSON(t, &page)
	for _, inv := range page.Data {
		if inv.ID == id {
			return inv.Roles
		}
	}
	t.Fatalf("invitation %s not listed", id)
	return nil
}

// TestInvitationGrantsTheRoleNotItsName: an invitation hands out the roles
// its inviter chose, not whatever role bears their names when it is
// accepted. Invitations stored role names: a role deleted after the
// invitation was sent and another one created under its name (with more
// permissions, which nobody approved for the invitee) was granted at
// accept, and a role renamed meanwhile was silently not granted. A role
// edited in place (its permissions widened) is the same role and is
// granted: the accept checks again that the inviter may hand it out.
func TestInvitationGrantsTheRoleNotItsName(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "o@acme.test")
	tid := owner.c.Tid
	// The link is read from the mail before the invitation is spoilt: a
	// queued mail whose invitation can no longer be accepted is dropped
	// (TestQueuedMailOfADeadLinkIsNotSent).
	accept := func(t *testing.T, tok string) (int, string) {
		t.Helper()
		_, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": pw})
		return st, code
	}

	t.Run("role replaced by another of its name", func(t *testing.T) {
		const addr = "replaced@example.com"
		id := x.createRole(t, owner, "auditor", "audit:read")
		x.invite(t, owner.id, addr, "auditor")
		tok := x.mail(t, addr, "invited").Token()
		wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/roles/"+id, nil), http.StatusNoContent)
		x.createRole(t, owner, "auditor", "audit:read", "users:write", "roles:write")
		if st, code := accept(t, tok); st != http.StatusConflict || code != problem.CodeConflict {
			t.Errorf("accept after the role was replaced: %d %s, want 409 %s", st, code, problem.CodeConflict)
		}
		if x.isMember(t, tid, addr) {
			t.Errorf("joined with %v, a role the invitation never named", x.rolesOf(t, tid, addr))
		}
	})

	// The page's form: back to the page, which says why and what to do
	// (it said "Something went wrong (conflict).").
	t.Run("role deleted, accepted with the page's form", func(t *testing.T) {
		const addr = "form@example.com"
		id := x.createRole(t, owner, "scribe", "audit:read")
		x.invite(t, owner.id, addr, "scribe")
		tok := x.mail(t, addr, "invited").Token()
		wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/roles/"+id, nil), http.StatusNoContent)
		r := postForm(t, x, "/api/v1/invitations/accept", form("token", tok, "password", strings.ReplaceAll(pw, " ", "+")))
		loc := r.Header.Get("Location")
		if r.Status != http.StatusSeeOther || loc != "/accept-invitation?error="+problem.CodeConflict+"&token="+tok {
			t.Fatalf("accept form after the role was deleted: %d Location %q", r.Status, loc)
		}
		if page := string(x.Get(t, nil, loc).Body); !strings.Contains(page, "was deleted since it was sent") || strings.Contains(page, "Something went wrong") {
			t.Errorf("the page after the form:\n%s", page)
		}
	})

	t.Run("role renamed", func(t *testing.T) {
		const addr = "renamed@example.com"
		id := x.createRole(t, owner, "viewer", "audit:read")
		inv := x.invite(t, owner.id, addr, "viewer")
		wantStatus(t, x.Send(t, &owner.id, http.MethodPatch, "/api/v1/roles/"+id, map[string]any{"name": "reader"}), http.StatusOK)
		if got := x.listedRoles(t, owner, inv.ID); !slices.Equal(got, []string{"reader"}) {
			t.Errorf("listed roles after the rename: %v, want [reader]", got)
		}
		if st, code := accept(t, x.mail(t, addr, "invited").Token()); st != http.StatusOK {
			t.Fatalf("accept after the role was renamed: %d %s", st, code)
		}
		if got := x.rolesOf(t, tid, addr); !slices.Equal(got, []string{"reader"}) {
			t.Errorf("roles after accept: %v, want [reader]", got)
		}
		// The audit row names the role granted, by its name now and its id.
		var raw []byte
		if err := x.DB.Pool.QueryRow(t.Context(), `SELECT data FROM audit_events WHERE action = 'invitation.accepted' AND target_id = $1`, inv.ID).Scan(&raw); err != nil {
			t.Fatal(err)
		}
		var data struct {
			Roles   []string `json:"roles"`
			RoleIDs []string `json:"role_ids"`
		}
		if err := json.Unmarshal(raw, &data); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(data.Roles, []string{"reader"}) || !slices.Equal(data.RoleIDs, []string{id}) {
			t.Errorf("invitation.accepted data %s, want roles [reader], role_ids [%s]", raw, id)
		}
	})

	t.Run("role renamed, in the invitee's own list", func(t *testing.T) {
		const addr = "mine@example.com"
		me := x.signup(t, addr)
		x.exec(t, `UPDATE users SET email_verified_at = now() WHERE id = $1`, me.c.Sub)
		id := x.createRole(t, owner, "editor", "audit:read")
		x.invite(t, owner.id, addr, "editor", "member")
		wantStatus(t, x.Send(t, &owner.id, http.MethodPatch, "/api/v1/roles/"+id, map[string]any{"name": "writer"}), http.StatusOK)
		r := x.Get(t, &me.id, "/api/v1/users/me/invitations")
		wantStatus(t, r, http.StatusOK)
		var list struct {
			Data []struct {
				TenantID string   `json:"tenant_id"`
				Roles    []string `json:"roles"`
			} `json:"data"`
		}
		r.JSON(t, &list)
		if len(list.Data) != 1 || list.Data[0].TenantID != tid || !slices.Equal(list.Data[0].Roles, []string{"member", "writer"}) {
			t.Errorf("my invitations after the rename: %+v, want one of the tenant with roles [member writer]", list.Data)
		}
	})

	t.Run("role widened in place", func(t *testing.T) {
		const addr = "widened@example.com"
		id := x.createRole(t, owner, "ops", "audit:read")
		x.invite(t, owner.id, addr, "ops")
		wantStatus(t, x.Send(t, &owner.id, http.MethodPatch, "/api/v1/roles/"+id, map[string]any{"permissions": []string{"audit:read", "users:read"}}), http.StatusOK)
		if st, code := accept(t, x.mail(t, addr, "invited").Token()); st != http.StatusOK {
			t.Fatalf("accept after the role was widened: %d %s", st, code)
		}
		if got := x.rolesOf(t, tid, addr); !slices.Equal(got, []string{"ops"}) {
			t.Errorf("roles after accept: %v, want [ops]", got)
		}
	})

	t.Run("role deleted", func(t *testing.T) {
		const addr = "deleted@example.com"
		id := x.createRole(t, owner, "temp", "audit:read")
		inv := x.invite(t, owner.id, addr, "temp", "member")
		tok := x.mail(t, addr, "invited").Token()
		wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/roles/"+id, nil), http.StatusNoContent)
		if got := x.listedRoles(t, owner, inv.ID); !slices.Equal(got, []string{"member"}) {
			t.Errorf("listed roles after the deletion: %v, want [member]", got)
		}
		// Resending would mail a link that cannot be accepted.
		wantProblem(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations/"+inv.ID+"/resend", nil), http.StatusConflict, problem.CodeConflict)
		if st, code := accept(t, tok); st != http.StatusConflict || code != problem.CodeConflict {
			t.Errorf("accept after a role was deleted: %d %s, want 409 %s", st, code, problem.CodeConflict)
		}
		if x.isMember(t, tid, addr) {
			t.Errorf("joined with %v, without a role the invitation named", x.rolesOf(t, tid, addr))
		}
		// The invitation stays for its tenant to withdraw.
		wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/invitations/"+inv.ID, nil), http.StatusNoContent)
	})
}

// TestInvitationUnderAnotherCatalog: a replica whose catalog does not
// declare a permission a custom role stores (during a catalog rollout, the
// newer replicas declare it) judged an invitation to the role by what it
// declares: a delegate without billing:admin sent, resent or had accepted
// through it an invitation to "billing", and the invitee then held
// billing:admin on every newer replica. Sending and resending it there are
// 403 forbidden for everyone, and its accept there is refused as one whose
// sender may not send it (403 forbidden); the replica that declares the
// permission takes it.
func TestInvitationUnderAnotherCatalog(t *testing.T) {
	t.Parallel()
	cat, err := permissions.Parse([]byte(billingCatalog), "test")
	if err != nil {
		t.Fatal(err)
	}
	newer := startWith(t, lifecycle.Limits{}, cat)
	older := startOpts(t, startOptions{hasher: newer.hasher, db: newer.DB}) // the built-in catalog
	owner := newer.signup(t, "owner@acme.test")
	tid := owner.c.Tid
	newer.createRole(t, owner, "billing", "billing:admin")
	newer.createRole(t, owner, "delegate", "tenant:read", "users:read", "users:write")
	del := newer.SeedUserIn(t, tid, "delegate@acme.test", "delegate")

	wantProblem(t, older.Send(t, &del, http.MethodPost, "/api/v1/invitations",
		map[string]any{"email": "sent@example.com", "roles": []string{"billing"}}), http.StatusForbidden, problem.CodeForbidden)
	if n := older.count(t, `SELECT count(*) FROM invitations WHERE tenant_id = $1`, tid); n != 0 {
		t.Fatalf("%d invitations sent through the replica that cannot judge the role", n)
	}

	// Sent by the owner through the newer replica, who holds billing:admin.
	inv := newer.invite(t, owner.id, "taken@example.com", "billing")
	tok := newer.mail(t, "taken@example.com", "invited").Token()
	wantProblem(t, older.Send(t, &del, http.MethodPost, "/api/v1/invitations/"+inv.ID+"/resend", nil), http.StatusForbidden, problem.CodeForbidden)
	if _, st, code := older.accept(t, nil, map[string]string{"token": tok, "password": pw}); st != http.StatusForbidden || code != problem.CodeForbidden {
		t.Errorf("accept through the older replica: %d %s, want 403 %s", st, code, problem.CodeForbidden)
	}
	if newer.isMember(t, tid, "taken@example.com") {
		t.Fatalf("joined through the older replica with %v", newer.rolesOf(t, tid, "taken@example.com"))
	}
	if _, st, code := newer.accept(t, nil, map[string]string{"token": tok, "password": pw}); st != http.StatusOK {
		t.Fatalf("accept through the newer replica: %d %s", st, code)
	}
	if got := newer.rolesOf(t, tid, "taken@example.com"); !slices.Equal(got, []string{"billing"}) {
		t.Errorf("joined with %v, want [billing]", got)
	}
}

// TestInvitationsDuringCatalogRollout: while a rollout adds billing:admin,
// which the built-in admin role then holds, a replica still on the old
// catalog judged an invitation to admin by it, at sending, resending and
// accept, and the invitee joined holding what its inviter was never
// checked for. A replica whose catalog is not the recorded one now
// refuses all three (503 catalog_rollout with Retry-After, nothing sent,
// renewed, created or joined), and still withdraws an invitation; the
// replica with the recorded catalog serves them.
func TestInvitationsDuringCatalogRollout(t *testing.T) {
	t.Parallel()
	cat, err := permissions.Parse([]byte(billingCatalog), "test")
	if err != nil {
		t.Fatal(err)
	}
	newer := startWith(t, lifecycle.Limits{}, cat)
	older := startOpts(t, startOptions{hasher: newer.hasher, db: newer.DB}) // the built-in catalog
	if _, err := permissions.Record(t.Context(), newer.DB.Pool, cat); err != nil {
		t.Fatal(err)
	}
	owner := newer.signup(t, "owner@acme.test")
	tid := owner.c.Tid
	inv := newer.invite(t, owner.id, "taken@example.com", "admin")
	tok := newer.mail(t, "taken@example.com", "invited").Token()
	other := newer.invite(t, owner.id, "other@example.com", "member")
	const qState = `SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM memberships) + (SELECT count(*) FROM invitations)
    + (SELECT count(*) FROM invitations WHERE updated_at <> created_at) + (SELECT count(*) FROM audit_events)`
	before := newer.count(t, qState)

	refused := func(t *testing.T, r apitest.Response) {
		t.Helper()
		wantProblem(t, r, http.StatusServiceUnavailable, problem.CodeCatalogRollout)
		if got := r.Header.Get("Retry-After"); got != "1" {
			t.Errorf("Retry-After = %q, want 1", got)
		}
	}
	t.Run("send", func(t *testing.T) {
		refused(t, older.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations", map[string]any{"email": "sent@example.com", "roles": []string{"admin"}}))
	})
	t.Run("accept", func(t *testing.T) {
		refused(t, older.Send(t, nil, http.MethodPost, "/api/v1/invitations/accept", map[string]string{"token": tok, "password": pw}))
	})
	t.Run("resend", func(t *testing.T) {
		refused(t, older.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations/"+inv.ID+"/resend", nil))
	})
	if after := newer.count(t, qState); after != before {
		t.Fatalf("the refusals changed something: %d before, %d after", before, after)
	}
	if newer.isMember(t, tid, "taken@example.com") {
		t.Fatal("joined through the older replica")
	}

	wantStatus(t, older.Send(t, &owner.id, http.MethodDelete, "/api/v1/invitations/"+other.ID, nil), http.StatusNoContent)
	if _, st, code := newer.accept(t, nil, map[string]string{"token": tok, "password": pw}); st != http.StatusOK {
		t.Fatalf("accept through the newer replica: %d %s", st, code)
	}
	if got := newer.rolesOf(t, tid, "taken@example.com"); !slices.Equal(got, []string{"admin"}) {
		t.Errorf("joined with %v, want [admin]", got)
	}
}
