package projection

import (
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
)

// The query spells out the role-permission expression to stay a constant;
// it must be the one every other query uses.
func TestRolePermsIsTheRolesExpression(t *testing.T) {
	if want := roles.PermissionsSQL("r", "$4::text[]", "$5::text[]"); rolePerms != want {
		t.Fatalf("rolePerms =\n%s\nwant\n%s", rolePerms, want)
	}
}
