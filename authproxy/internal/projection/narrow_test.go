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
	if n.gens != e.gens || n.Roles != e.Roles || n.Sub != "u" {
		t.Fatalf("narrowed entry lost its identity: %+v", n)
	}
	if len(e.P.Permissions) != 3 || e.Perms != "notes:read,notes:write,users:read" {
		t.Fatalf("the shared entry changed: %q", e.P.Permissions)
	}
	if z := e.Narrow([]string{}); len(z.P.Permissions) != 0 || z.Perms != "" {
		t.Fatalf("empty scope = %q", z.P.Permissions)
	}
}
