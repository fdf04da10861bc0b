package users

import (
	"testing"

	"encoding/binary"
	"slices"

	"github.com/google/uuid"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
)

// The queries spell out the role-permission expression to stay constants;
// it must be the one every other query uses.
func TestRolePermsIsTheRolesExpression(t *testing.T) {
	if want := roles.PermissionsSQL("r", "$3::text[]", "$4::text[]"); rolePerms != want {
		t.Fatalf("rolePerms =\n%s\nwant\n%s", rolePerms, want)
	}
}

// TestTextArray reads text[] in PostgreSQL's binary form as the member
// list does, and refuses what it cannot read.
func TestTextArray(t *testing.T) {
	arr := func(elems ...string) []byte {
		b := binary.BigEndian.AppendUint32(nil, 1) // ndim
		b = binary.BigEndian.AppendUint32(b, 0)    // has nulls
		b = binary.BigEndian.AppendUint32(b, 25)   // text
		b = binary.BigEndian.AppendUint32(b, uint32(len(elems)))
		b = binary.BigEndian.AppendUint32(b, 1) // lower bound
		for _, e := range elems {
			b = binary.BigEndian.AppendUint32(b, uint32(len(e)))
			b = append(b, e...)
		}
		return b
	}
	var text []byte
	roles := make([]string, 0, 4)
	a, text, roles, err := textArray(arr("admin", "member"), text, roles)
	if err != nil || !slices.Equal(a, []string{"admin", "member"}) {
		t.Fatalf("two names: %q, %v", a, err)
	}
	b, text, roles, err := textArray(arr("z.last", "", "owner"), text, roles)
	if err != nil || !slices.Equal(b, []string{"z.last", "", "owner"}) {
		t.Fatalf("three names: %q, %v", b, err)
	}
	// A list cannot grow into the next one's names.
	_ = append(a, "x")
	if !slices.Equal(b, []string{"z.last", "", "owner"}) {
		t.Fatalf("appending to the first list changed the second: %q", b)
	}
	empty := binary.BigEndian.AppendUint32(make([]byte, 0, 12), 0)
	empty = append(empty, 0, 0, 0, 0, 0, 0, 0, 25)
	if e, _, _, err := textArray(empty, text, roles); err != nil || e == nil || len(e) != 0 {
		t.Fatalf("empty array: %#v, %v", e, err)
	}
	withNull := arr("a")
	binary.BigEndian.PutUint32(withNull[20:], 0xffffffff)
	for name, bad := range map[string][]byte{
		"short":     {0, 0, 0, 1},
		"two dims":  append(binary.BigEndian.AppendUint32(nil, 2), make([]byte, 24)...),
		"truncated": arr("admin")[:26],
		"null":      withNull,
	} {
		if _, _, _, err := textArray(bad, text, roles); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestAppendUUID(t *testing.T) {
	u := uuid.New()
	if got := string(appendUUID([]byte("x"), u[:])); got != "x"+u.String() {
		t.Fatalf("appendUUID = %s, want x%s", got, u)
	}
}
