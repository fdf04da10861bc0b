package tenantapi_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

type world = apitest.World

func newWorld(t *testing.T) *world {
	t.Helper()
	return apitest.SeedWorld(t, start(t, apitest.Options{}))
}

func apitestReq(method, path string, body any, as *identity.Identity, service bool) apitest.Request {
	return apitest.Request{Method: method, Path: path, Body: body, As: as, Service: service}
}

// newestChange reads the tenant's newest audit event through GET
// /audit-events as the owner, wants it to be action on targetID, and
// decodes its data into from and to, which must be its only members and
// hold only the fields of T.
func newestChange[T any](t *testing.T, w *world, action, targetID string) (from, to T) {
	t.Helper()
	r := w.E.Get(t, &w.Owner, "/api/v1/audit-events?limit=1")
	apitest.WantStatus(t, r, 200)
	var l struct {
		Data []struct {
			Action   string          `json:"action"`
			TargetID string          `json:"target_id"`
			Data     json.RawMessage `json:"data"`
		} `json:"data"`
	}
	r.JSON(t, &l)
	if len(l.Data) != 1 || l.Data[0].Action != action || l.Data[0].TargetID != targetID {
		t.Fatalf("newest audit event = %s, want %s on %s", r.Body, action, targetID)
	}
	var got struct {
		From *T `json:"from"`
		To   *T `json:"to"`
	}
	dec := json.NewDecoder(bytes.NewReader(l.Data[0].Data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil || got.From == nil || got.To == nil {
		t.Fatalf("%s data = %s (%v), want only from and to", action, l.Data[0].Data, err)
	}
	return *got.From, *got.To
}

// wantNoChange sends a PATCH of path that changes nothing, as as: it must
// answer 200 with the resource as before (the JSON before, updated_at
// included) and write no audit row.
func wantNoChange(t *testing.T, w *world, as *identity.Identity, path string, body any, before []byte) {
	t.Helper()
	count := func() int {
		var n int
		if err := w.E.DB.Pool.QueryRow(t.Context(), `SELECT count(*) FROM audit_events`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	n := count()
	r := w.E.Send(t, as, "PATCH", path, body)
	apitest.WantStatus(t, r, 200)
	var got, want any
	if err := json.Unmarshal(r.Body, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(before, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("PATCH %s %v = %s, want it unchanged: %s", path, body, r.Body, before)
	}
	if m := count(); m != n {
		t.Errorf("PATCH %s %v changed nothing but wrote %d audit rows", path, body, m-n)
	}
}

// giveFactor gives the user an active second factor (a TOTP row, never
// used for a code): what the tenant's MFA policy asks of its members.
func giveFactor(t *testing.T, w *world, userID string) {
	t.Helper()
	const q = `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now())`
	if _, err := w.E.DB.Pool.Exec(t.Context(), q, userID); err != nil {
		t.Fatal(err)
	}
}
