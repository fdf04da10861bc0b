package tenantapi_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenantapi"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// TestDecodingVocabulary: a body that does not fit the operation's schema
// (unknown field, wrong type, wrong shape) gets one status, 422, and the
// messages speak JSON types, never Go ones (httpapi.createUserBody,
// []string, int64).
func TestDecodingVocabulary(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for _, tc := range []struct {
		name, path, body, code, field, message string
	}{
		{"a list for the body", "/api/v1/users", `[]`, "validation_failed", "(body)", "want object, got array"},
		{"a string for the body", "/api/v1/roles", `"x"`, "validation_failed", "(body)", "want object, got string"},
		{"a number for a string", "/api/v1/roles", `{"name": 5}`, "validation_failed", "name", "want string, got number"},
		{"a boolean for a string", "/api/v1/users", `{"email": true}`, "validation_failed", "email", "want string, got boolean"},
		{"a string for a list", "/api/v1/roles", `{"name": "x", "permissions": "audit:read"}`, "validation_failed", "permissions", "want array, got string"},
		{"an object in a list", "/api/v1/roles", `{"name": "x", "permissions": [{}]}`, "validation_failed", "permissions", "want string, got object"},
		{"an unknown field", "/api/v1/roles", `{"name": "x", "colour": "red"}`, "unknown_field", "colour", "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := w.E.Do(t, apitest.Request{Method: "POST", Path: tc.path, Body: tc.body, As: &w.Owner})
			apitest.WantProblem(t, r, 422, tc.code)
			p := r.Problem(t)
			if len(p.Errors) != 1 || !strings.HasPrefix(p.Errors[0].Field, tc.field) || p.Errors[0].Message != tc.message {
				t.Fatalf("errors = %+v, want %s: %q", p.Errors, tc.field, tc.message)
			}
			for _, goName := range []string{"httpapi.", "roles.", "users.", "[]", "int64", "float64", "struct", "map["} {
				if strings.Contains(string(r.Body), goName) {
					t.Fatalf("the problem names a Go type (%s): %s", goName, r.Body)
				}
			}
		})
	}
}

// TestMeAsUserID: me stands for the caller wherever a path takes a user
// id, with the same permission checks as the caller's own UUID.
func TestMeAsUserID(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	// GET /users/me echoes the signed identity's roles, so the stored
	// roles are read through the member route (the owner may read it).
	roles := func(id *identity.Identity) []string {
		var m tenantapi.Member
		w.E.Get(t, &w.Owner, "/api/v1/users/"+id.UserID).JSON(t, &m)
		return m.Roles
	}
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "PUT", "/api/v1/users/me/roles/member", nil), 200)
	if r := roles(&w.Admin); !slices.Contains(r, "member") {
		t.Fatalf("PUT /users/me/roles/member: the admin's roles are %v", r)
	}
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "DELETE", "/api/v1/users/me/roles/member", nil), 200)
	if r := roles(&w.Admin); slices.Contains(r, "member") {
		t.Fatalf("DELETE /users/me/roles/member: the admin's roles are %v", r)
	}
	// The member may not grant itself a role through me either.
	apitest.WantProblem(t, w.E.Send(t, &w.Member, "PUT", "/api/v1/users/me/roles/admin", nil), 403, "insufficient_scope")
	if r := roles(&w.Member); slices.Contains(r, "admin") {
		t.Fatalf("the member granted itself admin: %v", r)
	}
	r := w.E.Send(t, &w.Owner, "PUT", "/api/v1/users/you/roles/member", nil)
	apitest.WantProblem(t, r, 400, "invalid_id")
	if !strings.Contains(r.Problem(t).Detail, "or me") {
		t.Fatalf("detail %q does not say me is accepted", r.Problem(t).Detail)
	}
}

// TestStatusVocabulary: a bare status is always the object's own (Me: the
// user's); a membership's status is membership_status in Me and Member
// alike, and a user's status in a Member is user_status.
func TestStatusVocabulary(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	mid := w.Member.UserID
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "PATCH", "/api/v1/users/"+mid, map[string]any{"membership_status": "disabled"}), 200)
	var member map[string]any
	w.E.Get(t, &w.Admin, "/api/v1/users/"+mid).JSON(t, &member)
	if member["membership_status"] != "disabled" || member["user_status"] != "active" {
		t.Fatalf("member = %v", member)
	}
	if _, ok := member["status"]; ok {
		t.Fatalf("a Member carries a bare status: %v", member)
	}
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "PATCH", "/api/v1/users/"+mid, map[string]any{"membership_status": "active"}), 200)
	var me map[string]any
	w.E.Get(t, &w.Member, "/api/v1/users/me").JSON(t, &me)
	if me["membership_status"] != "active" || me["status"] != "active" {
		t.Fatalf("me = %v", me)
	}
	// The old name is refused loudly, not ignored.
	apitest.WantProblem(t, w.E.Send(t, &w.Admin, "PATCH", "/api/v1/users/"+mid, map[string]any{"status": "disabled"}), 422, "unknown_field")
}
