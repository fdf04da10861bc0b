package tenantapi_test

import (
	"bytes"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// TestCursorsAcrossAKeyRotation: a list's cursor decodes on every coreapi
// that lists the identity key its cursor key derives from, first or not.
// During a rotation's switch (docs/operations.md, "Rotating the core
// identity key") pods that list the new key first and pods that still list the old
// one first serve the same clients, and a next_cursor one of them gave was
// 400 invalid_cursor on the other: a client paging through a list failed
// on whichever pod its next request reached, until the rollout ended. A
// coreapi that no longer lists the key refuses it, as one altered.
func TestCursorsAcrossAKeyRotation(t *testing.T) {
	t.Parallel()
	oldKey := apitest.Keys()[0]
	newKey := identity.Key{ID: "core-2", Secret: bytes.Repeat([]byte{'n'}, 32)}
	var db *dbtest.DB
	pod := func(keys ...identity.Key) *apitest.Env {
		e := start(t, apitest.Options{DB: db, Configure: func(o *httpapi.Options) {
			o.IdentityKeys = keys
			o.CursorKey = httpapi.DeriveCursorKey(keys[0].Secret)
		}})
		db = e.DB
		return e
	}
	added := pod(oldKey, newKey)    // step 1: the new key listed after the old one
	switched := pod(newKey, oldKey) // step 2: the new key first
	removed := pod(newKey)          // step 3: the old key gone
	ten := added.SeedTenant(t, "Acme")
	owner := added.SeedUserIn(t, ten.ID, "owner@acme.test", "owner")
	added.SeedUserIn(t, ten.ID, "admin@acme.test", "admin")
	added.SeedUserIn(t, ten.ID, "member@acme.test", "member")
	page := func(e *apitest.Env, cursor string) memberList {
		t.Helper()
		path := "/api/v1/users?limit=1"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		var l memberList
		r := e.Get(t, &owner, path)
		apitest.WantStatus(t, r, 200)
		r.JSON(t, &l)
		if len(l.Data) != 1 || (l.NextCursor == nil) != (l.Data[0].Email == "member@acme.test") {
			t.Fatalf("%s: %s, want a member, and a next cursor before the last", path, r.Body)
		}
		return l
	}
	first := page(added, "")
	second := page(switched, *first.NextCursor)
	third := page(added, *second.NextCursor)
	if first.Data[0].Email != "owner@acme.test" || second.Data[0].Email != "admin@acme.test" || third.Data[0].Email != "member@acme.test" {
		t.Errorf("pages %s, %s, %s; want the members in the order they joined",
			first.Data[0].Email, second.Data[0].Email, third.Data[0].Email)
	}
	// The proxies sign with the new key by step 3.
	signer, err := identity.NewKeySigner(newKey)
	if err != nil {
		t.Fatal(err)
	}
	at := func(cursor string) apitest.Response {
		return removed.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/users?limit=1&cursor=" + cursor, As: &owner, SignWith: signer})
	}
	apitest.WantProblem(t, at(*first.NextCursor), 400, "invalid_cursor")
	apitest.WantStatus(t, at(*second.NextCursor), 200)
}
