package projection

import (
	"slices"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/identity"
)

func TestNarrow(t *testing.T) {
	p := &identity.Projection{UserID: "u", TenantID: "t", Permissions: []string{"notes:read", "notes:write", "users:read"}, Roles: []string{"admin"}}
	e, err := newEntry("u", "t", p)
	if err != nil {
		t.Fatal(err)
	}
	e.gens = [3]uint64{1, 2, 3}
	n := e.Narrow([]string{"users:read", "notes:read", "tenant:write"})
	if !slices.Equal(n.P.Permissions, []string{"notes:read", "users:read"}) || n.Perms != "notes:read,users:read" {
		t.Fatalf("narrowed = %q / %q", n.P.Permissions, n.Perms)
	}
	if n.gens != e.gens || n.Sub != "u" {
		t.Fatalf("narrowed entry lost its identity: %+v", n)
	}
	// A role stands for more than the scope: the narrowed entry has none.
	if len(n.P.Roles) != 0 || n.Roles != "" {
		t.Fatalf("narrowed roles = %q / %q, want none", n.P.Roles, n.Roles)
	}
	if want := "X-Auth-Roles: \r\nX-Auth-Permissions: notes:read,users:read\r\nX-Auth-Email-Verified: false\r\n"; n.Lines != want {
		t.Fatalf("narrowed lines %q, want %q", n.Lines, want)
	}
	if len(e.P.Permissions) != 3 || !slices.Equal(e.P.Roles, []string{"admin"}) || e.Perms != "notes:read,notes:write,users:read" ||
		e.Lines != "X-Auth-Roles: admin\r\nX-Auth-Permissions: notes:read,notes:write,users:read\r\nX-Auth-Email-Verified: false\r\n" {
		t.Fatalf("the shared entry changed: %q, %q", e.P.Permissions, e.Lines)
	}
	if z := e.Narrow([]string{}); len(z.P.Permissions) != 0 || z.Perms != "" {
		t.Fatalf("empty scope = %q", z.P.Permissions)
	}
}

// An entry's header lines carry its lists and email state as forwarded,
// and the lists' values stay what they were when they come to share the
// lines' memory.
func TestEntryLines(t *testing.T) {
	for _, tc := range []struct {
		roles, perms []string
		verified     bool
		want         string
	}{
		{[]string{"member", "editor"}, []string{"notes:read", "notes:write"}, true,
			"X-Auth-Roles: member,editor\r\nX-Auth-Permissions: notes:read,notes:write\r\nX-Auth-Email-Verified: true\r\n"},
		{nil, nil, false, "X-Auth-Roles: \r\nX-Auth-Permissions: \r\nX-Auth-Email-Verified: false\r\n"},
		{[]string{"a"}, []string{"x:y"}, false, "X-Auth-Roles: a\r\nX-Auth-Permissions: x:y\r\nX-Auth-Email-Verified: false\r\n"},
	} {
		p := &identity.Projection{UserID: "u", TenantID: "t", Roles: slices.Clone(tc.roles), Permissions: slices.Clone(tc.perms), EmailVerified: tc.verified}
		e := Of(p)
		if e.Lines != tc.want {
			t.Errorf("lines %q, want %q", e.Lines, tc.want)
		}
		if e.Roles != identity.JoinList(tc.roles) || e.Perms != identity.JoinList(tc.perms) {
			t.Errorf("values %q / %q", e.Roles, e.Perms)
		}
		if !slices.Equal(p.Roles, tc.roles) || !slices.Equal(p.Permissions, tc.perms) {
			t.Errorf("lists became %q / %q, want %q / %q", p.Roles, p.Permissions, tc.roles, tc.perms)
		}
	}
}
