package tenantapi

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
)

func TestMemberPageMatchesEncodingJSON(t *testing.T) {
	cur, total, zero := "eyJ0IjoxfQ.<&>", int64(503), int64(0)
	at := time.Date(2026, 12, 1, 17, 0, 0, 123000, time.UTC)
	rows := []users.Member{
		{ID: "0b4f1f8e-1111-4c2a-9a53-7a1f7e0c0001", Email: "a@acme.test", DisplayName: "Ann <admin>", Status: "active",
			UserStatus: "active", Roles: []string{"admin", "member"}, CreatedAt: at, UpdatedAt: at.Add(time.Second)},
		{ID: "0b4f1f8e-1111-4c2a-9a53-7a1f7e0c0002", Email: "b@acme.test", Status: "disabled", UserStatus: "active",
			Roles: []string{}, CreatedAt: at.In(time.Local), UpdatedAt: at},
	}
	for _, p := range []httpapi.ListResponse[users.Member]{
		{Data: rows},
		{Data: rows[:1], NextCursor: &cur, Total: &total},
		{Data: []users.Member{}, Total: &zero},
		{Data: nil},
	} {
		want, err := json.Marshal(httpapi.MapPage(p, func(m users.Member) member { return member(m) }))
		if err != nil {
			t.Fatal(err)
		}
		if got := memberPage(p).AppendJSON(nil); string(got) != string(want) {
			t.Errorf("got  %s\nwant %s", got, want)
		}
	}
}
