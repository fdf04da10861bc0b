package users

import (
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
)

// The queries spell out the role-permission expression to stay constants;
// it must be the one every other query uses.
func TestRolePermsIsTheRolesExpression(t *testing.T) {
	if want := roles.PermissionsSQL("r", "$3::text[]", "$4::text[]"); rolePerms != want {
		t.Fatalf("rolePerms =\n%s\nwant\n%s", rolePerms, want)
	}
}
