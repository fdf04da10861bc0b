package notes_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tollgate-auth/tollgate/deploy/examples/notes"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

var (
	appKey = identity.Key{ID: "app-notes", Secret: []byte("0123456789abcdef0123456789abcdef")}
	clock  = time.Date(2026, 12, 1, 12, 0, 0, 123000000, time.UTC)
)

const (
	tenantA = "0b4f1f8e-aaaa-4c2a-9a53-7a1f7e0c000a"
	tenantB = "0b4f1f8e-bbbb-4c2a-9a53-7a1f7e0c000b"
)

func user(id, tenant string, perms ...string) identity.Identity {
	return identity.Identity{Principal: identity.PrincipalUser, UserID: id, TenantID: tenant, SessionID: "s-" + id,
		Roles: []string{"member"}, Permissions: perms, EmailVerified: true, AMR: []string{"pwd"}}
}

var (
	writerA = user("0b4f1f8e-0001-4c2a-9a53-7a1f7e0c0001", tenantA, notes.PermRead, notes.PermWrite)
	readerA = user("0b4f1f8e-0002-4c2a-9a53-7a1f7e0c0002", tenantA, notes.PermRead)
	writerB = user("0b4f1f8e-0003-4c2a-9a53-7a1f7e0c0003", tenantB, notes.PermRead, notes.PermWrite)
	nobodyA = user("0b4f1f8e-0004-4c2a-9a53-7a1f7e0c0004", tenantA)
)

type app struct {
	t      *testing.T
	url    string
	store  *notes.Store
	signer *identity.KeySigner
	calls  int
	rid    string // the request id of the last call
}

// start runs the service as a real HTTP server.
func start(t *testing.T) *app {
	t.Helper()
	v, err := verify.New(verify.Config{Keys: []identity.Key{appKey}, MaxBodyBytes: notes.MaxBodyBytes})
	if err != nil {
		t.Fatal(err)
	}
	store := notes.NewStore()
	srv := httptest.NewServer(notes.Handler(v, store, func() time.Time { return clock }))
	t.Cleanup(srv.Close)
	s, err := identity.NewKeySigner(appKey)
	if err != nil {
		t.Fatal(err)
	}
	return &app{t: t, url: srv.URL, store: store, signer: s}
}

// call sends a request signed for id (unsigned when id is nil) and returns
// the status, headers and body.
func (a *app) call(id *identity.Identity, method, path, contentType, body string) (int, http.Header, []byte) {
	a.t.Helper()
	r, err := http.NewRequest(method, a.url+path, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if body == "" {
		r.Body, r.ContentLength = http.NoBody, 0
	}
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	// A request id of its own, as the proxy gives each request: the same
	// request signed twice in one millisecond would be a replay.
	a.calls++
	a.rid = "notes-test-" + strconv.Itoa(a.calls)
	r.Header.Set("X-Request-Id", a.rid)
	if id != nil {
		if err := verify.Sign(r, a.signer, *id, time.Now()); err != nil {
			a.t.Fatal(err)
		}
	}
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		a.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	return res.StatusCode, res.Header, b
}

func (a *app) post(id identity.Identity, text string) notes.Note {
	a.t.Helper()
	b, _ := json.Marshal(map[string]string{"text": text})
	status, h, body := a.call(&id, "POST", "/notes", "application/json", string(b))
	if status != 201 || h.Get("Content-Type") != "application/json" {
		a.t.Fatalf("POST /notes: %d %s %s", status, h.Get("Content-Type"), body)
	}
	var n notes.Note
	if err := json.Unmarshal(body, &n); err != nil {
		a.t.Fatal(err)
	}
	return n
}

func (a *app) list(id identity.Identity) []notes.Note {
	a.t.Helper()
	status, _, body := a.call(&id, "GET", "/notes", "", "")
	if status != 200 {
		a.t.Fatalf("GET /notes: %d %s", status, body)
	}
	var out struct {
		Data []notes.Note `json:"data"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil || out.Data == nil {
		a.t.Fatalf("GET /notes body %s: %v (want {data: [...]})", body, err)
	}
	return out.Data
}

func TestCreateAndListWithinTenant(t *testing.T) {
	a := start(t)
	if got := a.list(readerA); len(got) != 0 {
		t.Fatalf("fresh tenant lists %v", got)
	}
	n := a.post(writerA, "hello from A")
	if _, err := uuid.Parse(n.ID); err != nil {
		t.Errorf("id %q is not a UUID", n.ID)
	}
	want := notes.Note{ID: n.ID, Text: "hello from A", AuthorID: writerA.UserID, TenantID: tenantA, CreatedAt: clock}
	if n != want {
		t.Fatalf("created %+v, want %+v", n, want)
	}
	nb := a.post(writerB, "hello from B")
	if nb.TenantID != tenantB || nb.AuthorID != writerB.UserID {
		t.Fatalf("B's note %+v", nb)
	}
	// Tenant isolation: each tenant lists its own notes only.
	if got := a.list(readerA); len(got) != 1 || got[0] != want {
		t.Fatalf("A lists %+v, want only %+v", got, want)
	}
	if got := a.list(writerB); len(got) != 1 || got[0].ID != nb.ID {
		t.Fatalf("B lists %+v, want only its own note", got)
	}
	second := a.post(writerA, "second")
	if got := a.list(writerA); len(got) != 2 || got[0].ID != n.ID || got[1].ID != second.ID {
		t.Fatalf("A lists %+v, want both notes oldest first", got)
	}
	// The raw JSON field names are the contract.
	_, _, body := a.call(&readerA, "GET", "/notes", "", "")
	for _, f := range []string{`"id":`, `"text":`, `"author_id":`, `"tenant_id":`, `"created_at":"2026-12-01T12:00:00.123Z"`} {
		if !strings.Contains(string(body), f) {
			t.Errorf("GET /notes body %s lacks %s", body, f)
		}
	}
	// HEAD is GET without a body.
	status, _, body := a.call(&readerA, "HEAD", "/notes", "", "")
	if status != 200 || len(body) != 0 {
		t.Fatalf("HEAD /notes: %d %q", status, body)
	}
}

// The identity, not the body, decides author and tenant.
func TestAuthorAndTenantComeFromTheIdentity(t *testing.T) {
	a := start(t)
	status, _, body := a.call(&writerA, "POST", "/notes", "application/json",
		`{"text":"x","author_id":"0b4f1f8e-0003-4c2a-9a53-7a1f7e0c0003","tenant_id":"`+tenantB+`"}`)
	if status != 400 {
		t.Fatalf("body with author/tenant fields: %d %s, want 400", status, body)
	}
	if got := a.list(writerB); len(got) != 0 {
		t.Fatalf("a note landed in tenant B: %+v", got)
	}
}

func TestErrors(t *testing.T) {
	a := start(t)
	service := identity.Identity{Principal: identity.PrincipalService, Permissions: []string{notes.PermRead, notes.PermWrite}}
	anon := identity.Identity{}
	for i := 0; i < notes.MaxNotesPerTenant; i++ {
		if err := a.store.Add(notes.Note{ID: "x", TenantID: tenantB}); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name        string
		id          *identity.Identity
		method      string
		path        string
		contentType string
		body        string
		status      int
		code        string
	}{
		{"unsigned GET", nil, "GET", "/notes", "", "", 401, problem.CodeUnauthenticated},
		{"unsigned POST", nil, "POST", "/notes", "application/json", `{"text":"x"}`, 401, problem.CodeUnauthenticated},
		{"anonymous GET", &anon, "GET", "/notes", "", "", 401, problem.CodeUnauthenticated},
		{"anonymous POST", &anon, "POST", "/notes", "application/json", `{"text":"x"}`, 401, problem.CodeUnauthenticated},
		{"GET without notes:read", &nobodyA, "GET", "/notes", "", "", 403, problem.CodeInsufficientScope},
		{"POST without notes:write", &readerA, "POST", "/notes", "application/json", `{"text":"x"}`, 403, problem.CodeInsufficientScope},
		{"service principal without a tenant", &service, "GET", "/notes", "", "", 403, problem.CodeForbidden},
		{"body over the limit", &writerA, "POST", "/notes", "application/json", `{"text":"` + strings.Repeat("x", notes.MaxBodyBytes) + `"}`, 413, problem.CodeBodyTooLarge},
		{"not JSON", &writerA, "POST", "/notes", "application/json", `text=x`, 400, problem.CodeBadRequest},
		{"JSON array", &writerA, "POST", "/notes", "application/json", `["x"]`, 400, problem.CodeBadRequest},
		{"unknown field", &writerA, "POST", "/notes", "application/json", `{"text":"x","pinned":true}`, 400, problem.CodeBadRequest},
		{"text not a string", &writerA, "POST", "/notes", "application/json", `{"text":5}`, 400, problem.CodeBadRequest},
		{"trailing data", &writerA, "POST", "/notes", "application/json", `{"text":"x"} {}`, 400, problem.CodeBadRequest},
		{"empty body", &writerA, "POST", "/notes", "application/json", ``, 400, problem.CodeBadRequest},
		{"no text", &writerA, "POST", "/notes", "application/json", `{}`, 422, problem.CodeValidation},
		{"null text", &writerA, "POST", "/notes", "application/json", `{"text":null}`, 422, problem.CodeValidation},
		{"blank text", &writerA, "POST", "/notes", "application/json", `{"text":" \n\t"}`, 422, problem.CodeValidation},
		{"text too long", &writerA, "POST", "/notes", "application/json", `{"text":"` + strings.Repeat("é", notes.MaxTextRunes+1) + `"}`, 422, problem.CodeValidation},
		{"form content type", &writerA, "POST", "/notes", "application/x-www-form-urlencoded", `text=x`, 415, problem.CodeUnsupportedMedia},
		{"no content type", &writerA, "POST", "/notes", "", `{"text":"x"}`, 415, problem.CodeUnsupportedMedia},
		{"tenant full", &writerB, "POST", "/notes", "application/json", `{"text":"x"}`, 409, problem.CodeConflict},
		{"other method", &writerA, "DELETE", "/notes", "", "", 405, problem.CodeMethodNotAllowed},
		{"other path", &writerA, "GET", "/notes-admin", "", "", 404, problem.CodeNotFound},
		{"unsigned other path", nil, "GET", "/", "", "", 401, problem.CodeUnauthenticated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := a.call(tc.id, tc.method, tc.path, tc.contentType, tc.body)
			var p problem.Problem
			if err := json.Unmarshal(body, &p); err != nil || status != tc.status || p.Code != tc.code ||
				h.Get("Content-Type") != problem.ContentType || p.RequestID != a.rid {
				t.Fatalf("got %d %s %.300s, want %d problem %s", status, h.Get("Content-Type"), body, tc.status, tc.code)
			}
			if tc.status == 405 && h.Get("Allow") != "GET, HEAD, POST" {
				t.Errorf("Allow = %q", h.Get("Allow"))
			}
			if tc.status == 422 && (len(p.Errors) != 1 || p.Errors[0].Field != "text") {
				t.Errorf("422 errors = %+v, want one about text", p.Errors)
			}
		})
	}
	if got := a.list(writerA); len(got) != 0 {
		t.Fatalf("rejected requests stored notes: %+v", got)
	}
	// The longest text accepted.
	if n := a.post(writerA, strings.Repeat("é", notes.MaxTextRunes)); len([]rune(n.Text)) != notes.MaxTextRunes {
		t.Fatalf("2000-character note: %d characters stored", len([]rune(n.Text)))
	}
}

// A writer forging another tenant's id in a replayed request is rejected:
// the signature covers the tenant.
func TestForgedTenantIsRejected(t *testing.T) {
	a := start(t)
	r, _ := http.NewRequest("POST", a.url+"/notes", strings.NewReader(`{"text":"x"}`))
	r.Header.Set("Content-Type", "application/json")
	if err := verify.Sign(r, a.signer, writerA, time.Now()); err != nil {
		t.Fatal(err)
	}
	r.Header.Set(identity.HeaderTenantID, tenantB)
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("forged tenant: %d, want 401", res.StatusCode)
	}
	if got := a.list(writerB); len(got) != 0 {
		t.Fatalf("a note landed in tenant B: %+v", got)
	}
}

// TestReplayedPostIsRefused: a signed POST /notes captured and sent again
// unchanged within the window is refused (401) and creates no second note;
// the same note sent anew (as the proxy signs a client's retry: another
// request id) is created.
func TestReplayedPostIsRefused(t *testing.T) {
	a := start(t)
	send := func(h http.Header) (int, []byte) {
		r, _ := http.NewRequest("POST", a.url+"/notes", strings.NewReader(`{"text":"only once"}`))
		r.Header = h.Clone()
		res, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b
	}
	signed := func(rid string) http.Header {
		r, _ := http.NewRequest("POST", a.url+"/notes", strings.NewReader(`{"text":"only once"}`))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-Request-Id", rid)
		if err := verify.Sign(r, a.signer, writerA, time.Now()); err != nil {
			t.Fatal(err)
		}
		return r.Header
	}
	captured := signed("notes-replay-1")
	if status, b := send(captured); status != 201 {
		t.Fatalf("first POST: %d %s", status, b)
	}
	status, b := send(captured)
	var p problem.Problem
	if status != 401 || json.Unmarshal(b, &p) != nil || p.Code != problem.CodeUnauthenticated {
		t.Fatalf("the same POST again: %d %s, want 401 %s", status, b, problem.CodeUnauthenticated)
	}
	if got := a.list(readerA); len(got) != 1 {
		t.Fatalf("%d notes after a replayed POST, want 1: %+v", len(got), got)
	}
	if status, b := send(signed("notes-replay-2")); status != 201 {
		t.Fatalf("the note sent anew: %d %s", status, b)
	}
	if got := a.list(readerA); len(got) != 2 {
		t.Fatalf("%d notes, want 2", len(got))
	}
}
