package lifecycle_test

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
)

// A page form value with a NUL byte or invalid UTF-8 is refused as the
// same JSON body is (bad_request), not a database error or a silently
// altered value; nothing is queried.
func TestFormBadStringsRefused(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	for _, tt := range []struct{ path, body, page string }{
		{"/api/v1/auth/password/forgot", "email=a%00b@example.com", "/reset-password"},
		{"/api/v1/auth/password/forgot", "email=a%FFb@example.com", "/reset-password"},
		{"/api/v1/auth/password/reset", "token=ab%00c&new_password=correct+horse+battery", "/reset-password"},
		{"/api/v1/auth/verify-email", "token=ab%00c", "/verify-email"},
		{"/api/v1/invitations/accept", "token=abc&display_name=%FF", "/accept-invitation"},
	} {
		t.Run(tt.body, func(t *testing.T) {
			r := postForm(t, x, tt.path, tt.body)
			if loc := r.Header.Get("Location"); r.Status != http.StatusSeeOther || !strings.HasPrefix(loc, tt.page+"?error=bad_request") {
				t.Errorf("%d Location %q body %s", r.Status, loc, r.Body)
			}
			if r.Stats.Queries != 0 {
				t.Errorf("refused form ran %d queries", r.Stats.Queries)
			}
		})
	}
}

// A page form in a content coding is sent back as unsupported_media_type
// before it is read, as a JSON body is: it was inflated (without bound)
// after the NUL and UTF-8 check had read the bytes as sent.
func TestCompressedFormRefused(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write([]byte("email=a%00b@example.com"))
	_ = zw.Close()
	r := x.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/password/forgot", Body: buf.Bytes(),
		ContentType: "application/x-www-form-urlencoded", Header: http.Header{"Content-Encoding": {"gzip"}}})
	if loc := r.Header.Get("Location"); r.Status != http.StatusSeeOther || !strings.HasPrefix(loc, "/reset-password?error=unsupported_media_type") {
		t.Errorf("%d Location %q body %s", r.Status, loc, r.Body)
	}
	if r.Stats.Queries != 0 {
		t.Errorf("refused form ran %d queries", r.Stats.Queries)
	}
}

// A page form field sent twice is refused (bad_request), as a JSON member
// named twice is: the first value was used, where another reader of the
// body (a gateway's filter, a log) may take the last. Nothing is queried.
func TestFormRepeatedFieldRefused(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	for _, tt := range []struct{ path, body, page string }{
		{"/api/v1/auth/password/forgot", "email=a@example.com&email=b@example.com", "/reset-password"},
		{"/api/v1/auth/password/reset", "token=abc&new_password=correct+horse+battery&token=def", "/reset-password"},
		{"/api/v1/auth/password/reset", "token=abc&new_password=correct+horse+battery&new_password=", "/reset-password"},
		{"/api/v1/auth/verify-email", "token=&token=abc", "/verify-email"},
		{"/api/v1/invitations/accept", "token=abc&display_name=A&display_name=B", "/accept-invitation"},
	} {
		t.Run(tt.body, func(t *testing.T) {
			r := postForm(t, x, tt.path, tt.body)
			if loc := r.Header.Get("Location"); r.Status != http.StatusSeeOther || !strings.HasPrefix(loc, tt.page+"?error=bad_request") {
				t.Errorf("%d Location %q body %s", r.Status, loc, r.Body)
			}
			if r.Stats.Queries != 0 {
				t.Errorf("refused form ran %d queries", r.Stats.Queries)
			}
		})
	}
}

// A page form of more than httpapi.MaxFormParams parameters is sent back
// as bad_request before it is parsed (parsing half a million of them, a
// 1 MiB body, allocated 158 MiB); nothing is queried. One at the bound is
// read, its unknown parameters ignored.
func TestFormParamsBounded(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	at := "email=a%40example.com" + strings.Repeat("&x=1", httpapi.MaxFormParams-1)
	if r := postForm(t, x, "/api/v1/auth/password/forgot", at); r.Status != http.StatusSeeOther || r.Header.Get("Location") != "/reset-password?sent=1" {
		t.Errorf("%d parameters: %d Location %q, want the page's sent=1", httpapi.MaxFormParams, r.Status, r.Header.Get("Location"))
	}
	for _, body := range []string{at + "&x=1", "email=a%40example.com" + strings.Repeat("&a", (1<<20-64)/2)} {
		r := postForm(t, x, "/api/v1/auth/password/forgot", body)
		if loc := r.Header.Get("Location"); r.Status != http.StatusSeeOther || !strings.HasPrefix(loc, "/reset-password?error=bad_request") {
			t.Errorf("%d octets: %d Location %q body %s", len(body), r.Status, loc, r.Body)
		}
		if r.Stats.Queries != 0 {
			t.Errorf("refused form ran %d queries", r.Stats.Queries)
		}
	}
}

// A page form declared in a charset other than UTF-8 is sent back as
// unsupported_media_type before it is read, as a JSON body in one is
// (and as the token endpoint refuses one): its bytes were read as UTF-8
// whatever it declared, "%C3%A9" being "Ã©" in latin1 and "é" here. A
// form in UTF-8, in any spelling of the charset, is read as before.
func TestFormCharsetRefused(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	const form = "application/x-www-form-urlencoded"
	for _, ct := range []string{form + "; charset=iso-8859-1", form + ";charset=latin1", form + "; charset=windows-1252"} {
		r := x.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/password/forgot",
			Body: "email=a%C3%A9@example.com", ContentType: ct})
		if loc := r.Header.Get("Location"); r.Status != http.StatusSeeOther || !strings.HasPrefix(loc, "/reset-password?error=unsupported_media_type") {
			t.Errorf("%q: %d Location %q body %s", ct, r.Status, loc, r.Body)
		}
		if r.Stats.Queries != 0 {
			t.Errorf("%q: refused form ran %d queries", ct, r.Stats.Queries)
		}
	}
	for _, ct := range []string{form + "; charset=utf-8", "Application/X-WWW-Form-Urlencoded;Charset=UTF-8"} {
		r := x.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/password/forgot",
			Body: "email=a%C3%A9@example.com", ContentType: ct})
		if r.Status != http.StatusSeeOther || r.Header.Get("Location") != "/reset-password?sent=1" {
			t.Errorf("%q: %d Location %q, want the page's sent=1", ct, r.Status, r.Header.Get("Location"))
		}
	}
}
