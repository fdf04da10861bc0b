package httpapi_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

func TestBadBodies(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	type tc struct {
		name        string
		method      string
		path        string
		body        string
		contentType string
		status      int
		code        string
		field       string
	}
	tests := []tc{
		{"malformed JSON", "PATCH", "/api/v1/users/me", `{"display_name": "x"`, "", 400, "malformed_json", ""},
		{"not JSON at all", "POST", "/api/v1/users", `email=x@y.z`, "", 400, "malformed_json", ""},
		{"trailing data", "PATCH", "/api/v1/users/me", `{"display_name": "x"} {}`, "", 400, "bad_request", ""},
		{"empty body", "POST", "/api/v1/roles", ``, "", 400, "bad_request", ""},
		{"unknown field", "PATCH", "/api/v1/users/me", `{"display_name": "x", "is_admin": true}`, "", 422, "unknown_field", "is_admin"},
		{"unknown field on create", "POST", "/api/v1/users", `{"email": "a@b.test", "tenant_id": "x"}`, "", 422, "unknown_field", "tenant_id"},
		{"field in another case", "PATCH", "/api/v1/users/me", `{"Display_Name": "x"}`, "", 422, "unknown_field", "Display_Name"},
		{"field in another case on create", "POST", "/api/v1/users", `{"EMAIL": "case@b.test"}`, "", 422, "unknown_field", "EMAIL"},
		{"field twice", "PATCH", "/api/v1/tenant", `{"name": "first", "name": "second"}`, "", 400, "bad_request", "name"},
		{"field twice in two cases", "POST", "/api/v1/roles", `{"name": "x1", "permissions": [], "Name": "x2"}`, "", 400, "bad_request", "name"},
		{"wrong type", "POST", "/api/v1/roles", `{"name": 5}`, "", 422, "validation_failed", "name"},
		{"null where a list belongs", "POST", "/api/v1/roles", `{"name": "x", "permissions": "audit:read"}`, "", 422, "validation_failed", "permissions"},
		{"not JSON content type", "PATCH", "/api/v1/users/me", `{"display_name": "x"}`, "text/plain", 415, "unsupported_media_type", ""},
		{"form content type", "POST", "/api/v1/users", `email=a@b.test`, "application/x-www-form-urlencoded", 415, "unsupported_media_type", ""},
		{"JSON declared in latin1", "PATCH", "/api/v1/users/me", `{"display_name": "Ã©"}`, "application/json; charset=latin1", 415, "unsupported_media_type", ""},
		{"JSON declared in UTF-16", "PATCH", "/api/v1/users/me", `{"display_name": "x"}`, "application/json; charset=utf-16", 415, "unsupported_media_type", ""},
		{"JSON declared in Windows-1252 on create", "POST", "/api/v1/users", `{"email": "cs@b.test"}`, "application/json;charset=windows-1252", 415, "unsupported_media_type", ""},
		{"JSON with an empty charset", "PATCH", "/api/v1/users/me", `{"display_name": "x"}`, "application/json; charset=", 415, "unsupported_media_type", ""},
		{"invalid UTF-8", "PATCH", "/api/v1/users/me", "{\"display_name\": \"\xff\xfe\"}", "", 400, "bad_request", ""},
		{"NUL in tenant name", "PATCH", "/api/v1/tenant", `{"name": "A\u0000B"}`, "", 400, "bad_request", "name"},
		{"NUL in display name", "PATCH", "/api/v1/users/me", `{"display_name": "\u0000"}`, "", 400, "bad_request", "display_name"},
		{"NUL in a list item", "POST", "/api/v1/roles", `{"name": "x", "permissions": ["audit:read\u0000"]}`, "", 400, "bad_request", "permissions"},
		{"lone high surrogate in display name", "PATCH", "/api/v1/users/me", `{"display_name": "\ud800"}`, "", 400, "bad_request", "display_name"},
		{"lone low surrogate in tenant name", "PATCH", "/api/v1/tenant", `{"name": "A\uDC00B"}`, "", 400, "bad_request", "name"},
		{"high surrogate before another escape", "PATCH", "/api/v1/users/me", `{"display_name": "\ud83d\u0041"}`, "", 400, "bad_request", "display_name"},
		{"two high surrogates", "PATCH", "/api/v1/users/me", `{"display_name": "\ud83d\ud83d"}`, "", 400, "bad_request", "display_name"},
		{"lone surrogate in a list item", "POST", "/api/v1/roles", `{"name": "x", "permissions": ["audit:read", "\ud800"]}`, "", 400, "bad_request", "permissions"},
		{"lone surrogate in a new member's name", "POST", "/api/v1/users", `{"email": "s@b.test", "display_name": "Bob\udfff"}`, "", 400, "bad_request", "display_name"},
		{"line break in display name", "PATCH", "/api/v1/users/me", `{"display_name": "Bob\nAdmin"}`, "", 422, "validation_failed", "display_name"},
		{"line separator in display name", "PATCH", "/api/v1/users/me", `{"display_name": "Bob\u2028Admin"}`, "", 422, "validation_failed", "display_name"},
		{"paragraph separator in a new member's name", "POST", "/api/v1/users", `{"email": "p@b.test", "display_name": "Bob\u2029Admin"}`, "", 422, "validation_failed", "display_name"},
		{"zero-width tenant name", "PATCH", "/api/v1/tenant", `{"name": "\u200b\u2060\ufeff"}`, "", 422, "validation_failed", "name"},
		{"Hangul filler tenant name", "PATCH", "/api/v1/tenant", `{"name": "\u3164 \u115f"}`, "", 422, "validation_failed", "name"},
		{"zero-width display name", "PATCH", "/api/v1/users/me", `{"display_name": "\u200b\u200c\u200d\u2060\ufeff"}`, "", 422, "validation_failed", "display_name"},
		{"combining marks for a new member's name", "POST", "/api/v1/users", `{"email": "m@b.test", "display_name": "\u0301\u0308"}`, "", 422, "validation_failed", "display_name"},
		{"zero-width role description", "POST", "/api/v1/roles", `{"name": "x", "permissions": [], "description": "\u200b"}`, "", 422, "validation_failed", "description"},
		{"bidi override in tenant name", "PATCH", "/api/v1/tenant", `{"name": "Acme\u202emoc.live"}`, "", 422, "validation_failed", "name"},
		{"bidi isolate in a new member's name", "POST", "/api/v1/users", `{"email": "i@b.test", "display_name": "\u2067Eve"}`, "", 422, "validation_failed", "display_name"},
		{"escape in role description", "POST", "/api/v1/roles", `{"name": "x", "permissions": [], "description": "\u001b[31mred"}`, "", 422, "validation_failed", "description"},
		{"over-long display name", "PATCH", "/api/v1/users/me", `{"display_name": "` + strings.Repeat("é", users.MaxDisplayName+1) + `"}`, "", 422, "validation_failed", "display_name"},
		{"over-long email", "POST", "/api/v1/users", `{"email": "` + strings.Repeat("a", 320) + `@x.test"}`, "", 422, "validation_failed", "email"},
		{"email over 254 octets", "POST", "/api/v1/users", `{"email": "` + strings.Repeat("a", 248) + `@x.test"}`, "", 422, "validation_failed", "email"},
		{"over-long role description", "POST", "/api/v1/roles", `{"name": "x", "description": "` + strings.Repeat("d", 501) + `"}`, "", 422, "validation_failed", "description"},
		{"over-long role name", "POST", "/api/v1/roles", `{"name": "` + strings.Repeat("r", 64) + `"}`, "", 422, "validation_failed", "name"},
		{"over-long tenant name", "PATCH", "/api/v1/tenant", `{"name": "` + strings.Repeat("t", 201) + `"}`, "", 422, "validation_failed", "name"},
		{"over-long password", "POST", "/api/v1/users", `{"email": "p@acme.test", "password": "` + strings.Repeat("p", 1025) + `"}`, "", 422, "validation_failed", "password"},
		{"bad status", "PATCH", "/api/v1/users/" + "00000000-0000-0000-0000-000000000001", `{"membership_status": "banned"}`, "", 422, "validation_failed", "membership_status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := w.E.AuditActions(t, w.A)
			r := w.E.Do(t, apitest.Request{Method: tt.method, Path: tt.path, Body: tt.body, ContentType: tt.contentType, As: &w.Owner})
			apitest.WantProblem(t, r, tt.status, tt.code)
			if tt.field != "" {
				p := r.Problem(t)
				found := false
				for _, fe := range p.Errors {
					found = found || fe.Field == tt.field
				}
				if !found {
					t.Errorf("errors %+v do not name field %q", p.Errors, tt.field)
				}
			}
			if r.Stats.Queries != 0 {
				t.Errorf("rejected input ran %d queries", r.Stats.Queries)
			}
			if after := w.E.AuditActions(t, w.A); len(after) != len(before) {
				t.Errorf("rejected input changed data: %v", after[len(before):])
			}
		})
	}
	// Nothing was lost or changed: the profile is as seeded.
	var me struct {
		DisplayName string `json:"display_name"`
	}
	w.E.Get(t, &w.Owner, "/api/v1/users/me").JSON(t, &me)
	if me.DisplayName != "" {
		t.Fatalf("display name changed to %q", me.DisplayName)
	}
}

// TestJSONInUTF8Accepted: a JSON body declared in UTF-8, in any spelling
// of the charset (and without one), is read as before; only another
// charset is refused (TestBadBodies), so that no body is read under a
// charset it does not declare.
func TestJSONInUTF8Accepted(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for i, ct := range []string{"application/json", "application/json; charset=utf-8", "Application/JSON;Charset=UTF-8",
		`application/json; charset="Utf-8"`} {
		name := fmt.Sprintf("Name %d é", i)
		r := w.E.Do(t, apitest.Request{Method: "PATCH", Path: "/api/v1/users/me", Body: `{"display_name": "` + name + `"}`,
			ContentType: ct, As: &w.Owner})
		var me struct {
			DisplayName string `json:"display_name"`
		}
		if r.Status != 200 {
			t.Fatalf("%q: %d %s", ct, r.Status, r.Body)
		}
		r.JSON(t, &me)
		if me.DisplayName != name {
			t.Errorf("%q: display name %q, want %q", ct, me.DisplayName, name)
		}
	}
}

// TestSurrogatePairsKept: a character outside the Basic Multilingual
// Plane written as a JSON surrogate pair (\ud83d\ude00) is read as that
// character, and an escaped backslash before "u" (\\ud800, the text
// "\ud800") is no surrogate: only a lone surrogate is refused
// (TestBadBodies), which encoding/json replaced with U+FFFD in silence.
func TestSurrogatePairsKept(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for body, want := range map[string]string{
		`{"display_name": "Smile \ud83d\ude00 \uD83D\uDE01"}`: "Smile \U0001F600 \U0001F601",
		`{"display_name": "C:\\ud800"}`:                       `C:\ud800`,
		`{"display_name": "\\\ud83d\ude00"}`:                  "\\\U0001F600",
	} {
		r := w.E.Do(t, apitest.Request{Method: "PATCH", Path: "/api/v1/users/me", Body: body, As: &w.Owner})
		if r.Status != 200 {
			t.Fatalf("%s: %d %s", body, r.Status, r.Body)
		}
		var me struct {
			DisplayName string `json:"display_name"`
		}
		r.JSON(t, &me)
		if me.DisplayName != want {
			t.Errorf("%s: display name %q, want %q", body, me.DisplayName, want)
		}
	}
}

// TestUnknownMemberNameClipped: the answer to an unknown member names it
// clipped to 64 bytes (with "..."), in its detail and its error, as it
// quotes a date-time that does not parse: it echoed the name whole, twice,
// so a body of one 1 MiB name drew an answer of 2 MiB.
func TestUnknownMemberNameClipped(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	name := strings.Repeat("é", 50_000)
	for _, path := range []string{"/api/v1/users/me", "/api/v1/tenant"} {
		r := w.E.Do(t, apitest.Request{Method: "PATCH", Path: path, Body: `{"` + name + `": 1}`, As: &w.Owner})
		apitest.WantProblem(t, r, 422, "unknown_field")
		if len(r.Body) > 1024 {
			t.Errorf("%s: answer of %d bytes", path, len(r.Body))
		}
		p := r.Problem(t)
		want := strings.Repeat("é", 32) + "..."
		if len(p.Errors) != 1 || p.Errors[0].Field != want {
			t.Errorf("%s: errors %+v, want the field %q", path, p.Errors, want)
		}
		if !strings.Contains(p.Detail, want) {
			t.Errorf("%s: detail %q does not name %q", path, p.Detail, want)
		}
		if r.Stats.Queries != 0 {
			t.Errorf("%s: refused body ran %d queries", path, r.Stats.Queries)
		}
	}
	// A name within the bound is named whole, as before.
	r := w.E.Do(t, apitest.Request{Method: "PATCH", Path: "/api/v1/users/me", Body: `{"is_admin": true}`, As: &w.Owner})
	if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "is_admin" || p.Detail != `unknown field "is_admin"` {
		t.Errorf("short name: %+v", p)
	}
}

// TestQueryNamesCaseSensitive: a query parameter a route reads, named in
// another letter case (Limit, CURSOR, Include_Total, TENANT_ID), is 400
// invalid_query naming it, as a JSON member in another case is 422
// unknown_field, before any query: it was ignored, so ?Limit=5 was served
// 50 rows, where a reader of the URL that matches names without regard
// to case (a gateway, a framework that does) reads 5.
func TestQueryNamesCaseSensitive(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for q, field := range map[string]string{
		"Limit=5":                     "Limit",
		"limit=5&LIMIT=200":           "LIMIT",
		"CURSOR=abc":                  "CURSOR",
		"limit=2&Include_Total=true":  "Include_Total",
		"include_totaL=false&limit=2": "include_totaL",
	} {
		r := w.E.Get(t, &w.Owner, "/api/v1/users?"+q)
		apitest.WantProblem(t, r, 400, "invalid_query")
		if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != field {
			t.Errorf("?%s: errors %+v, want one naming %s", q, p.Errors, field)
		}
		if r.Stats.Queries != 0 {
			t.Errorf("?%s: refused list ran %d queries", q, r.Stats.Queries)
		}
	}
	r := w.E.Do(t, apitest.Request{Method: "GET", Path: "/internal/v1/projections/" + w.Owner.UserID + "?tenant_id=" + w.A + "&TENANT_ID=" + w.B, Service: true})
	apitest.WantProblem(t, r, 400, "invalid_query")
	if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "TENANT_ID" {
		t.Errorf("projection: errors %+v, want one naming TENANT_ID", p.Errors)
	}
	// Other parameters are refused too, each named (a list reads no
	// other: TestUnknownListParameters in tenantapi).
	r = w.E.Get(t, &w.Owner, "/api/v1/users?limit=2&utm_source=x&Other=1")
	apitest.WantProblem(t, r, 400, "invalid_query")
	if p := r.Problem(t); len(p.Errors) != 2 || p.Errors[0].Field != "utm_source" || p.Errors[1].Field != "Other" {
		t.Errorf("other parameters: errors %+v, want utm_source and Other", p.Errors)
	}
}

// TestNullMembersRefused: a member sent as null where the document
// declares a string, a boolean or a list is 422 validation_failed naming
// it, as a member of another type is, and nothing is stored. encoding/json
// leaves the field as it was: a PATCH went on without the member
// (require_mfa and description kept while the name changed), and a new
// role or member was made with the default in its place (no permissions,
// the member role).
func TestNullMembersRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	var roles struct {
		Data []struct{ ID, Name string } `json:"data"`
	}
	w.E.Get(t, &w.Owner, "/api/v1/roles").JSON(t, &roles)
	r := w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "auditors", "description": "reads the trail", "permissions": []string{"audit:read"}})
	apitest.WantStatus(t, r, 201)
	var role struct{ ID string }
	r.JSON(t, &role)
	for _, tt := range []struct {
		method, path, body, field string
	}{
		{"PATCH", "/api/v1/tenant", `{"name": "Renamed", "require_mfa": null}`, "require_mfa"},
		{"PATCH", "/api/v1/tenant", `{"name": null}`, "name"},
		{"PATCH", "/api/v1/users/me", `{"display_name": null}`, "display_name"},
		{"PATCH", "/api/v1/roles/" + role.ID, `{"name": "readers", "description": null}`, "description"},
		{"PATCH", "/api/v1/roles/" + role.ID, `{"description": "x", "permissions": null}`, "permissions"},
		{"POST", "/api/v1/roles", `{"name": "empty", "permissions": null}`, "permissions"},
		{"POST", "/api/v1/roles", `{"name": "blank", "description": null}`, "description"},
		{"POST", "/api/v1/users", `{"email": "n@acme.test", "roles": null}`, "roles"},
		{"POST", "/api/v1/users", `{"email": "d@acme.test", "display_name": null}`, "display_name"},
		{"POST", "/api/v1/users", `{"email": null}`, "email"},
		{"PATCH", "/api/v1/users/" + w.Member.UserID, `{"membership_status": null}`, "membership_status"},
	} {
		t.Run(tt.method+" "+tt.body, func(t *testing.T) {
			before := w.E.AuditActions(t, w.A)
			r := w.E.Do(t, apitest.Request{Method: tt.method, Path: tt.path, Body: tt.body, As: &w.Owner})
			apitest.WantProblem(t, r, 422, "validation_failed")
			if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != tt.field || !strings.Contains(p.Errors[0].Message, "got null") {
				t.Errorf("errors %+v, want one naming %s, got null", p.Errors, tt.field)
			}
			if r.Stats.Queries != 0 {
				t.Errorf("refused body ran %d queries", r.Stats.Queries)
			}
			if after := w.E.AuditActions(t, w.A); len(after) != len(before) {
				t.Errorf("refused body changed data: %v", after[len(before):])
			}
		})
	}
	// A null inside a member's value is the value's own business (the
	// checks of each field), and a nested member is no request parameter.
	apitest.WantProblem(t, w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", `{"name": "x", "permissions": [null]}`), 422, "validation_failed")
	if n := len(w.E.Strings(t, `SELECT name FROM roles WHERE tenant_id = $1`, w.A)); n != len(roles.Data)+1 {
		t.Errorf("%d roles, want %d", n, len(roles.Data)+1)
	}
}

func TestBodyTooLarge(t *testing.T) {
	t.Parallel()
	e := start(t, apitest.Options{Configure: func(o *httpapi.Options) { o.MaxBodyBytes = 4096 }})
	ten := e.SeedTenant(t, "Acme")
	owner := e.SeedUserIn(t, ten.ID, "o@acme.test", "owner")
	big := `{"display_name": "` + strings.Repeat("x", 5000) + `"}`
	r := e.Do(t, apitest.Request{Method: "PATCH", Path: "/api/v1/users/me", Body: big, As: &owner})
	apitest.WantStatus(t, r, 413)
	p := r.Problem(t)
	if p.Code != "body_too_large" || p.RequestID == "" {
		t.Fatalf("problem = %+v", p)
	}
	// The limit is read before any route is chosen, so a route that takes
	// no body answers the same 413 to one over it (and documents it).
	for _, req := range []apitest.Request{
		{Method: "GET", Path: "/api/v1/users", Body: big, As: &owner},
		{Method: "DELETE", Path: "/api/v1/users/" + owner.UserID, Body: big, As: &owner},
		{Method: "GET", Path: "/api/v1/health", Body: big},
		{Method: "GET", Path: "/api/v1/permissions", Body: big, As: &owner},
		// The internal routes too (their document says so as well).
		{Method: "GET", Path: "/internal/v1/projections/" + owner.UserID + "?tenant_id=" + ten.ID, Body: big, Service: true},
	} {
		apitest.WantProblem(t, e.Do(t, req), 413, "body_too_large")
	}
	// Just under the limit is accepted (and then validated).
	ok := `{"display_name": "` + strings.Repeat("x", 150) + `"}`
	apitest.WantStatus(t, e.Do(t, apitest.Request{Method: "PATCH", Path: "/api/v1/users/me", Body: ok, As: &owner}), 200)
}

// TestBodyTooLargeKeepsRequestID: the 413 of a body over the limit is
// raised before any middleware runs; it still carries the client's sane
// X-Request-Id (the one the proxy signs and logs), in its header and its
// problem, as every other answer does, on a data route as on an OAuth
// endpoint.
func TestBodyTooLargeKeepsRequestID(t *testing.T) {
	t.Parallel()
	e := start(t, apitest.Options{Configure: func(o *httpapi.Options) { o.MaxBodyBytes = 4096 }})
	ten := e.SeedTenant(t, "Acme")
	owner := e.SeedUserIn(t, ten.ID, "o@acme.test", "owner")
	big := `{"display_name": "` + strings.Repeat("x", 5000) + `"}`
	for _, tt := range []struct {
		path string
		as   *identity.Identity
	}{
		{"/api/v1/users/me", &owner},
		{"/api/v1/auth/token", nil},
	} {
		rid := "client-rid-413" + strings.ReplaceAll(tt.path, "/", "-")
		method := "PATCH"
		if tt.as == nil {
			method = "POST"
		}
		r := e.Do(t, apitest.Request{Method: method, Path: tt.path, Body: big, As: tt.as,
			Header: http.Header{"X-Request-Id": {rid}}})
		apitest.WantProblem(t, r, 413, "body_too_large")
		if p := r.Problem(t); p.RequestID != rid || r.Header.Get("X-Request-Id") != rid {
			t.Errorf("%s: request id %q, header %q, want the client's %q", tt.path, p.RequestID, r.Header.Get("X-Request-Id"), rid)
		}
	}
	// An id that is not sane is replaced, as on any other answer.
	r := e.Do(t, apitest.Request{Method: "PATCH", Path: "/api/v1/users/me", Body: big, As: &owner,
		Header: http.Header{"X-Request-Id": {"not sane"}}})
	apitest.WantProblem(t, r, 413, "body_too_large")
	if p := r.Problem(t); p.RequestID == "not sane" || p.RequestID != r.Header.Get("X-Request-Id") {
		t.Errorf("request id %q, header %q", p.RequestID, r.Header.Get("X-Request-Id"))
	}
}

// TestChunkedBodyTooLargeKeepsRequestID: a chunked body is counted as it
// is read, and fasthttp resets the request once it is over the limit; its
// 413 still names the client's X-Request-Id, in its header, its problem
// and its access line, and the request's path, whether the limit is
// passed within one chunk or over several.
func TestChunkedBodyTooLargeKeepsRequestID(t *testing.T) {
	t.Parallel()
	access := &testkit.LogBuffer{}
	e := start(t, apitest.Options{Configure: func(o *httpapi.Options) {
		o.MaxBodyBytes = 4096
		o.AccessLogger = slog.New(logging.NewHandler(access, slog.LevelInfo))
	}})
	chunk := func(n int) string { return fmt.Sprintf("%x\r\n%s\r\n", n, strings.Repeat("a", n)) }
	for _, tt := range []struct {
		name, path, body string
	}{
		{"one chunk", "/api/v1/users/me", chunk(5000)},
		{"several chunks", "/api/v1/users/me", chunk(3000) + chunk(3000)},
		{"oauth endpoint", "/api/v1/auth/token", chunk(3000) + chunk(3000)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rid := "chunked-rid-" + strings.ReplaceAll(tt.name, " ", "-")
			resp, body := rawRequest(t, e, "PATCH "+tt.path+" HTTP/1.1\r\nHost: coreapi\r\nX-Request-Id: "+rid+
				"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"+tt.body+"0\r\n\r\n")
			var p problem.Problem
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatalf("%d %s: %v", resp.StatusCode, body, err)
			}
			if resp.StatusCode != 413 || p.Code != "body_too_large" {
				t.Fatalf("%d %s, want 413 body_too_large", resp.StatusCode, body)
			}
			if p.RequestID != rid || resp.Header.Get("X-Request-Id") != rid || p.Instance != tt.path {
				t.Errorf("request id %q, header %q, instance %q; want %q and %s", p.RequestID, resp.Header.Get("X-Request-Id"), p.Instance, rid, tt.path)
			}
			if line := accessLine(t, access.String(), rid); line == nil || line["path"] != tt.path || line["status"] != float64(413) {
				t.Errorf("access line %v", line)
			}
		})
	}
	// Under the limit, a chunked body reaches its route as any other.
	resp, body := rawRequest(t, e, "GET /api/v1/health HTTP/1.1\r\nHost: coreapi\r\nTransfer-Encoding: chunked\r\n\r\n"+chunk(100)+"0\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("chunked body under the limit: %d %s", resp.StatusCode, body)
	}
}

// rawRequest writes raw, as it is, on a new connection to the server and
// reads one response.
func rawRequest(t *testing.T, e *apitest.Env, raw string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(e.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Written while the answer is read: the server may answer, and close,
	// before it has read everything.
	go func() { _, _ = io.WriteString(c, raw) }()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// TestHeaderFieldsTooLarge: header fields over what the server reads (16
// KiB, ReadBufferSize) are refused with 431 problem+json before any route
// is chosen, on every route, public, protected or OAuth; every operation
// documents it, as 413.
func TestHeaderFieldsTooLarge(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	e := w.E
	big := http.Header{"X-Padding": {strings.Repeat("a", 17<<10)}}
	for _, req := range []apitest.Request{
		{Method: "GET", Path: "/api/v1/users", As: &w.Owner, Header: big},
		{Method: "PATCH", Path: "/api/v1/users/me", Body: `{"display_name":"x"}`, As: &w.Owner, Header: big},
		{Method: "GET", Path: "/api/v1/health", Header: big},
		{Method: "POST", Path: "/api/v1/auth/token", Body: `{"grant_type":"password"}`, Header: big},
		{Method: "GET", Path: "/.well-known/jwks.json", Header: big},
		{Method: "GET", Path: "/internal/v1/projections/" + w.Owner.UserID + "?tenant_id=" + w.A, Service: true, Header: big},
	} {
		r := e.Do(t, req)
		apitest.WantStatus(t, r, http.StatusRequestHeaderFieldsTooLarge)
		if p := r.Problem(t); p.Code != "bad_request" || p.RequestID == "" || p.RequestID != r.Header.Get("X-Request-Id") {
			t.Errorf("%s %s: problem = %+v, want bad_request with a request id", req.Method, req.Path, p)
		}
	}
	// Under the limit is read as usual.
	small := http.Header{"X-Padding": {strings.Repeat("a", 8<<10)}}
	apitest.WantStatus(t, e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/users", As: &w.Owner, Header: small}), http.StatusOK)
}

func TestUnknownRouteAndMethod(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	e := w.E
	apitest.WantProblem(t, e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/nope", As: &w.Owner, Undocumented: true}), 404, "not_found")
	apitest.WantProblem(t, e.Do(t, apitest.Request{Method: "POST", Path: "/api/v1/tenant", As: &w.Owner, Body: "{}", Undocumented: true}), 405, "method_not_allowed")
}

// TestUnknownMethodRefused: a method Fiber does not know is 501
// not_implemented problem+json with a request id (the client's, when sane),
// as authproxy answers it; Fiber answered it in plain text ("400 Invalid
// http method") with neither.
func TestUnknownMethodRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for _, tt := range []struct {
		method, path string
		as           bool
	}{
		{"PROPFIND", "/api/v1/users", true},
		{"get", "/api/v1/users", true}, // methods are case-sensitive (RFC 9110 section 9.1)
		{"BREW", "/api/v1/health", false},
		{"PURGE", "/no/such/route", false},
	} {
		req := apitest.Request{Method: tt.method, Path: tt.path, Unsigned: !tt.as, Undocumented: true,
			Header: http.Header{"X-Request-Id": {"client-rid-" + strings.ToLower(tt.method)}}}
		if tt.as {
			req.As = &w.Owner
		}
		r := w.E.Do(t, req)
		apitest.WantProblem(t, r, http.StatusNotImplemented, "not_implemented")
		p := r.Problem(t)
		if want := "client-rid-" + strings.ToLower(tt.method); p.RequestID != want || r.Header.Get("X-Request-Id") != want {
			t.Errorf("%s %s: request id %q, header %q, want %q", tt.method, tt.path, p.RequestID, r.Header.Get("X-Request-Id"), want)
		}
		if p.Instance != tt.path || p.Title != "Not Implemented" {
			t.Errorf("%s %s: problem = %+v", tt.method, tt.path, p)
		}
	}
	// Without a sane X-Request-Id the answer still carries one.
	r := w.E.Do(t, apitest.Request{Method: "PROPFIND", Path: "/api/v1/users", Unsigned: true, Undocumented: true,
		Header: http.Header{"X-Request-Id": {"not sane"}}})
	apitest.WantProblem(t, r, http.StatusNotImplemented, "not_implemented")
	if p := r.Problem(t); p.RequestID == "" || p.RequestID == "not sane" || p.RequestID != r.Header.Get("X-Request-Id") {
		t.Errorf("request id %q, header %q", p.RequestID, r.Header.Get("X-Request-Id"))
	}
}

// TestAsteriskFormRefused: OPTIONS * (the request target "*", which asks
// about the server) is 400 bad_path problem+json with the client's
// request id and an access line, as authproxy answers it; Fiber answered
// it 404 no such route. fasthttp refuses "*" with any other method as a
// malformed request (400).
func TestAsteriskFormRefused(t *testing.T) {
	t.Parallel()
	access := &testkit.LogBuffer{}
	e := start(t, apitest.Options{Configure: func(o *httpapi.Options) {
		o.AccessLogger = slog.New(logging.NewHandler(access, slog.LevelInfo))
	}})
	for _, method := range []string{"OPTIONS"} {
		rid := "asterisk-rid-" + strings.ToLower(method)
		resp, body := rawRequest(t, e, method+" * HTTP/1.1\r\nHost: coreapi\r\nX-Request-Id: "+rid+"\r\nContent-Length: 0\r\n\r\n")
		var p problem.Problem
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatalf("%s *: %d %s: %v", method, resp.StatusCode, body, err)
		}
		if resp.StatusCode != 400 || p.Code != problem.CodeBadPath || !strings.Contains(p.Detail, "*") ||
			resp.Header.Get("Content-Type") != problem.ContentType {
			t.Errorf("%s *: %d %s, want 400 bad_path", method, resp.StatusCode, body)
		}
		if p.RequestID != rid || resp.Header.Get("X-Request-Id") != rid {
			t.Errorf("%s *: request id %q, header %q, want %q", method, p.RequestID, resp.Header.Get("X-Request-Id"), rid)
		}
		if line := accessLine(t, access.String(), rid); line == nil || line["status"] != float64(400) || line["route"] != "unmatched" {
			t.Errorf("%s *: access line %v", method, line)
		}
	}
}

// A body in a content coding is refused (415, Accept-Encoding: identity),
// not inflated: MaxBodyBytes bounds the bytes sent, and a gzip body of
// 50 KiB inflates to 50 MiB.
func TestCompressedBodyRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	gz := func(parts ...string) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		for _, p := range parts {
			_, _ = zw.Write([]byte(p))
		}
		_ = zw.Close()
		return buf.Bytes()
	}
	for _, tt := range []struct {
		name   string
		coding []string // one field line each
		body   []byte
	}{
		{"gzip", []string{"gzip"}, gz(`{"display_name": "zipped"}`)},
		{"gzip bomb", []string{"gzip"}, gz(`{"display_name": "`, strings.Repeat(" ", 50<<20), `"}`)},
		{"in capitals", []string{"GZIP"}, gz(`{"display_name": "zipped"}`)},
		{"deflate", []string{"deflate"}, []byte(`{"display_name": "zipped"}`)},
		{"two codings", []string{"identity, gzip"}, gz(`{"display_name": "zipped"}`)},
		// Every field line counts, not the first only (RFC 9110 section
		// 5.3: the lines are one list).
		{"two lines", []string{"identity", "gzip"}, gz(`{"display_name": "zipped"}`)},
		{"two lines, a plain body", []string{"identity", "br"}, []byte(`{"display_name": "zipped"}`)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := w.E.AuditActions(t, w.A)
			r := w.E.Do(t, apitest.Request{Method: "PATCH", Path: "/api/v1/users/me", Body: tt.body,
				ContentType: "application/json", Header: http.Header{"Content-Encoding": tt.coding}, As: &w.Owner})
			apitest.WantProblem(t, r, 415, "unsupported_media_type")
			if got := r.Header.Get("Accept-Encoding"); got != "identity" {
				t.Errorf("Accept-Encoding = %q, want identity", got)
			}
			if r.Stats.Queries != 0 {
				t.Errorf("refused body ran %d queries", r.Stats.Queries)
			}
			if after := w.E.AuditActions(t, w.A); len(after) != len(before) {
				t.Errorf("refused body changed data: %v", after[len(before):])
			}
		})
	}
	// identity is no coding at all, on one line or several.
	for _, coding := range [][]string{{"identity"}, {"identity", " IDENTITY "}, {"identity, identity"}} {
		r := w.E.Do(t, apitest.Request{Method: "PATCH", Path: "/api/v1/users/me", Body: `{"display_name": "plain"}`,
			Header: http.Header{"Content-Encoding": coding}, As: &w.Owner})
		apitest.WantStatus(t, r, 200)
	}
}

// TestProblemAnswersStayPrivate: every problem answer, whichever step
// raised it (the router's 404 and 405, a handler's error, the framework's
// early refusals: an unknown method, a body over the limit), is kept out
// of caches, frames, Referer headers and sniffing. The pages and the
// OAuth callback, whose URLs hold tokens, set these on their own answers;
// a 405 on their paths never reached their handlers.
func TestProblemAnswersStayPrivate(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for _, req := range []apitest.Request{
		{Method: "GET", Path: "/api/v1/nope", As: &w.Owner, Undocumented: true},
		{Method: "POST", Path: "/api/v1/tenant", As: &w.Owner, Body: "{}", Undocumented: true},
		{Method: "GET", Path: "/api/v1/users?limit=-1", As: &w.Owner, Undocumented: true},
		{Method: "PROPFIND", Path: "/api/v1/users", As: &w.Owner, Undocumented: true},
		{Method: "GET", Path: "/api/v1/users", Unsigned: true, Undocumented: true},
	} {
		r := w.E.Do(t, req)
		if r.Status < 400 {
			t.Fatalf("%s %s: %d, want an error", req.Method, req.Path, r.Status)
		}
		apitest.WantProblemHeaders(t, req.Method+" "+req.Path, r)
	}
}

// TestQueryParamsBounded: a query string of more than
// httpapi.MaxQueryParams parameters is 400 invalid_query on every route,
// before anything parses it (fasthttp kept a parsed "a&a&…" of a 16 KiB
// head, 582 KiB, in the pooled context of each connection that sent one);
// nothing is queried. One at the bound is parsed: a list refuses its
// unknown parameter, named once (TestUnknownListParameters), and the
// health check, which reads no query, serves it.
func TestQueryParamsBounded(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	at := "/api/v1/users?limit=1" + strings.Repeat("&x", httpapi.MaxQueryParams-1)
	r := w.E.Get(t, &w.Owner, at)
	apitest.WantProblem(t, r, http.StatusBadRequest, "invalid_query")
	if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "x" {
		t.Errorf("%d parameters: errors %+v, want one naming x", httpapi.MaxQueryParams, p.Errors)
	}
	if r := w.E.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/health?" + strings.Repeat("a&", httpapi.MaxQueryParams-1) + "a",
		Unsigned: true, Undocumented: true}); r.Status != http.StatusOK {
		t.Errorf("health, %d parameters: %d %s, want 200", httpapi.MaxQueryParams, r.Status, r.Body)
	}
	for _, path := range []string{at + "&x", "/api/v1/users?limit=1" + strings.Repeat("&a", 7000)} {
		r := w.E.Get(t, &w.Owner, path)
		apitest.WantProblem(t, r, http.StatusBadRequest, "invalid_query")
		if r.Stats.Queries != 0 {
			t.Errorf("refused query ran %d queries", r.Stats.Queries)
		}
	}
	// A public route too, anonymous: the health check reads no query.
	r = w.E.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/health?" + strings.Repeat("a&", httpapi.MaxQueryParams),
		Unsigned: true, Undocumented: true})
	apitest.WantProblem(t, r, http.StatusBadRequest, "invalid_query")
}

// TestPageLimitPlainDigits: a list's limit is plain decimal digits from 1
// to 200, one spelling per page size. strconv.Atoi took "%2B5" (+5) and
// "05" as 5, so one page had many URLs, which a cache or a log keyed on
// the URL counts apart; each is 400 invalid_query naming limit, on every
// list, as a sign, a space, a fraction or a huge number already was.
func TestPageLimitPlainDigits(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	// Every list reads its page through httpapi.ParsePage.
	for _, path := range []string{"/api/v1/users", "/api/v1/roles", "/api/v1/audit-events", "/api/v1/users/me/tenants"} {
		for _, limit := range []string{"%2B5", "05", "005", "00", "0", "-5", "+5", "%205", "5%20", "5.0", "5e0", "0x5", "1_0",
			"%EF%BC%95", "201", "1000", "99999999999999999999"} {
			r := w.E.Get(t, &w.Owner, path+"?limit="+limit)
			apitest.WantProblem(t, r, 400, "invalid_query")
			if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "limit" {
				t.Errorf("%s?limit=%s: errors %+v, want one naming limit", path, limit, p.Errors)
			}
		}
		for _, limit := range []string{"1", "5", "10", "200"} {
			apitest.WantStatus(t, w.E.Get(t, &w.Owner, path+"?limit="+limit), 200)
		}
	}
}
