package verify_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
)

// FuzzCheck replaces one signed header, the path or the body with
// arbitrary bytes: Check must never panic, and must accept the request only
// when what it verifies is what was signed.
func FuzzCheck(f *testing.F) {
	v, err := verify.New(verify.Config{Keys: []identity.Key{curKey}})
	if err != nil {
		f.Fatal(err)
	}
	s := signer(f, curKey)
	now := time.Now()
	names := []string{
		identity.HeaderKeyID, identity.HeaderPrincipal, identity.HeaderUserID, identity.HeaderTenantID, identity.HeaderSessionID,
		identity.HeaderRoles, identity.HeaderPermissions, identity.HeaderEmailVerified, identity.HeaderAMR, identity.HeaderAuthTime,
		identity.HeaderClientIP, identity.HeaderRequestID, identity.HeaderTimestamp, identity.HeaderSignature, "path", "body",
	}
	f.Add(uint8(5), "member,writer")
	f.Add(uint8(6), "notes:read,notes:write,notes:admin")
	f.Add(uint8(7), "TRUE")
	f.Add(uint8(9), "+1796000000")
	f.Add(uint8(12), "0001796000012345")
	f.Add(uint8(13), "v2=")
	f.Add(uint8(14), "/notes?x=1")
	f.Add(uint8(15), `{"text":"b"}`)
	f.Add(uint8(5), "member,\nwriter")
	f.Fuzz(func(t *testing.T, which uint8, value string) {
		r, _ := http.NewRequest("POST", "http://app/notes", strings.NewReader(`{"text":"a"}`))
		r.Header.Set("X-Request-Id", "fuzz-1")
		if err := verify.Sign(r, s, alice, now); err != nil {
			t.Fatal(err)
		}
		pq, body := "/notes", `{"text":"a"}`
		name := names[int(which)%len(names)]
		orig := r.Header.Get(name)
		switch name {
		case "path":
			orig, pq = pq, value
		case "body":
			orig, body = body, value
		default:
			r.Header.Set(name, value)
			value = r.Header.Get(name) // as a server would read it
		}
		id, err := v.Check(r.Header.Get, "POST", pq, []byte(body))
		if err == nil && value != orig {
			t.Fatalf("%s changed from %q to %q still verified: %+v", name, orig, value, id)
		}
	})
}
