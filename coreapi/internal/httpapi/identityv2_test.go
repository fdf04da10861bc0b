package httpapi_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/requestid"
)

// seen is what the echo routes report about a request.
type seen struct {
	Principal     string   `json:"principal"`
	UserID        string   `json:"user_id"`
	TenantID      string   `json:"tenant_id"`
	Roles         []string `json:"roles"`
	Permissions   []string `json:"permissions"`
	EmailVerified bool     `json:"email_verified"`
	AMR           []string `json:"amr"`
	AuthTime      int64    `json:"auth_time"`
	KeyID         string   `json:"key_id"`
	ClientIP      string   `json:"client_ip"`
	Body          string   `json:"body"`
}

func echo(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	return c.JSON(seen{Principal: id.Principal, UserID: id.UserID, TenantID: id.TenantID, Roles: id.Roles,
		Permissions: id.Permissions, EmailVerified: id.EmailVerified, AMR: id.AMR, AuthTime: id.AuthTime,
		KeyID: id.KeyID, ClientIP: httpapi.ClientIP(c), Body: string(c.Body())})
}

// startEcho starts a server with echo routes on every group: public,
// protected and internal.
func startEcho(t *testing.T, o apitest.Options) *apitest.Env {
	t.Helper()
	o.AllowUndocumented = true
	prev := o.Configure
	o.Configure = func(opts *httpapi.Options) {
		if prev != nil {
			prev(opts)
		}
		opts.Register = append(opts.Register, func(rt httpapi.Routes) {
			rt.Public.Get("/echo/public", echo)
			rt.Public.Post("/echo/public", echo)
			rt.Protected.Get("/echo/protected", echo)
			rt.Protected.Post("/echo/protected", echo)
			rt.Internal.Get("/echo", echo)
			rt.Optional.Get("/echo/optional", echo)
		})
	}
	return start(t, o)
}

func decodeSeen(t *testing.T, r apitest.Response) seen {
	t.Helper()
	apitest.WantStatus(t, r, 200)
	var s seen
	r.JSON(t, &s)
	return s
}

// TestIdentityV2Delivered: everything a v2 signature asserts reaches the
// handlers, and the client IP is the signed one.
func TestIdentityV2Delivered(t *testing.T) {
	t.Parallel()
	e := startEcho(t, apitest.Options{})
	ten := e.SeedTenant(t, "Acme")
	id := e.SeedUserIn(t, ten.ID, "v2@acme.test", "admin")
	id.EmailVerified = true
	id.AMR = []string{"pwd", "otp"}
	id.AuthTime = 1_700_000_000
	got := decodeSeen(t, e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/echo/protected", As: &id, ClientIP: "198.51.100.7"}))
	want := seen{Principal: "user", UserID: id.UserID, TenantID: id.TenantID, Roles: id.Roles, Permissions: id.Permissions,
		EmailVerified: true, AMR: []string{"pwd", "otp"}, AuthTime: 1_700_000_000, KeyID: apitest.KeyID, ClientIP: "198.51.100.7"}
	if g, w := mustJSON(t, got), mustJSON(t, want); g != w {
		t.Fatalf("handler saw %s\nwant          %s", g, w)
	}

	t.Run("anonymous on a public route", func(t *testing.T) {
		got := decodeSeen(t, e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/echo/public", ClientIP: "2001:db8::5"}))
		if got.Principal != "anonymous" || got.UserID != "" || got.ClientIP != "2001:db8::5" || got.KeyID != apitest.KeyID {
			t.Fatalf("handler saw %+v", got)
		}
	})
	t.Run("unsigned on a public route: anonymous, the peer's address", func(t *testing.T) {
		got := decodeSeen(t, e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/echo/public", Unsigned: true}))
		if got.Principal != "anonymous" || got.KeyID != "" || got.ClientIP != "127.0.0.1" {
			t.Fatalf("handler saw %+v", got)
		}
	})
	t.Run("internal", func(t *testing.T) {
		got := decodeSeen(t, e.Do(t, apitest.Request{Method: "GET", Path: "/internal/v1/echo", Service: true}))
		if got.Principal != "anonymous" || got.KeyID != apitest.KeyID {
			t.Fatalf("handler saw %+v", got)
		}
	})
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestClientIPIgnoresForwardedFor: a client (or anything between it and
// coreapi) that adds X-Forwarded-For, X-Real-Ip or Forwarded changes
// nothing: the client IP is the signed one, or the peer when unsigned.
func TestClientIPIgnoresForwardedFor(t *testing.T) {
	t.Parallel()
	e := startEcho(t, apitest.Options{})
	spoof := http.Header{}
	spoof.Set("X-Forwarded-For", "203.0.113.66, 203.0.113.67")
	spoof.Set("X-Real-Ip", "203.0.113.68")
	spoof.Set("Forwarded", "for=203.0.113.69")
	for _, tt := range []struct {
		name string
		req  apitest.Request
		want string
	}{
		{"signed", apitest.Request{Method: "GET", Path: "/api/v1/echo/public", Header: spoof, ClientIP: "198.51.100.1"}, "198.51.100.1"},
		{"unsigned", apitest.Request{Method: "GET", Path: "/api/v1/echo/public", Header: spoof, Unsigned: true}, "127.0.0.1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := decodeSeen(t, e.Do(t, tt.req)).ClientIP; got != tt.want {
				t.Fatalf("client IP = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestIdentityV2BodyBinding: the signature covers the SHA-256 of the body
// as received; another body under a captured signature is refused.
func TestIdentityV2BodyBinding(t *testing.T) {
	t.Parallel()
	e := startEcho(t, apitest.Options{})
	ten := e.SeedTenant(t, "Acme")
	id := e.SeedUserIn(t, ten.ID, "body@acme.test", "member")
	body := `{"display_name":"Alice"}`
	got := decodeSeen(t, e.Do(t, apitest.Request{Method: "POST", Path: "/api/v1/echo/protected", Body: body, As: &id}))
	if got.Body != body {
		t.Fatalf("handler saw body %q", got.Body)
	}
	for _, tt := range []struct{ name, sent, signed string }{
		{"other body", `{"display_name":"Mallory"}`, body},
		{"body added", body, ""},
		{"body removed", "", body},
		{"one byte more", body + " ", body},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := apitest.Request{Method: "POST", Path: "/api/v1/echo/protected", Body: tt.sent, As: &id, SignBody: []byte(tt.signed)}
			apitest.WantProblem(t, e.Do(t, req), 401, "unauthenticated")
			req.Path = "/api/v1/echo/public"
			req.As = nil
			apitest.WantProblem(t, e.Do(t, req), 401, "unauthenticated")
		})
	}
	t.Run("a real route", func(t *testing.T) {
		req := apitest.Request{Method: "PATCH", Path: "/api/v1/users/me", Body: `{"display_name":"Mallory"}`, As: &id,
			SignBody: []byte(`{"display_name":"Alice"}`)}
		apitest.WantProblem(t, e.Do(t, req), 401, "unauthenticated")
		var me struct {
			DisplayName string `json:"display_name"`
		}
		e.Get(t, &id, "/api/v1/users/me").JSON(t, &me)
		if me.DisplayName != "" {
			t.Fatalf("display name changed to %q", me.DisplayName)
		}
	})
}

// TestIdentityV2MultipartBody: a multipart/form-data body is verified
// against the bytes the proxy signed and sent, and the handler sees them
// unchanged. (A server that parses such a body as it reads it keeps the
// parsed form, not the bytes, and hands out a re-encoding of it: another
// digest, so every multipart request was refused as forged.)
func TestIdentityV2MultipartBody(t *testing.T) {
	t.Parallel()
	e := startEcho(t, apitest.Options{})
	ten := e.SeedTenant(t, "Acme")
	id := e.SeedUserIn(t, ten.ID, "multipart@acme.test", "member")
	const boundary = "b0undary"
	body := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"z\"\r\n\r\nlast\r\n" +
		"--" + boundary + "\r\nContent-Disposition: form-data; name=\"a\"\r\nX-Part: kept\r\n\r\nfirst\r\n" +
		"--" + boundary + "--\r\n"
	for _, path := range []string{"/api/v1/echo/protected", "/api/v1/echo/public"} {
		req := apitest.Request{Method: "POST", Path: path, Body: body, ContentType: "multipart/form-data; boundary=" + boundary}
		if path == "/api/v1/echo/protected" {
			req.As = &id
		}
		got := decodeSeen(t, e.Do(t, req))
		if got.Body != body {
			t.Fatalf("%s: handler saw body %q, want the bytes sent", path, got.Body)
		}
	}
}

// TestIdentityV2Replay: a signed request sent again within the window is
// refused, with the same body or another; requests that differ only in
// their request id are distinct.
func TestIdentityV2Replay(t *testing.T) {
	t.Parallel()
	e := startEcho(t, apitest.Options{})
	ten := e.SeedTenant(t, "Acme")
	id := e.SeedUserIn(t, ten.ID, "replay@acme.test", "owner")
	for _, path := range []string{"/api/v1/echo/protected", "/api/v1/echo/public"} {
		t.Run(path, func(t *testing.T) {
			body := []byte(`{"n":1}`)
			h := http.Header{}
			h.Set(requestid.Header, requestid.New())
			e.SignV2(h, id, "POST", path, body)
			req := apitest.Request{Method: "POST", Path: path, Body: body, Header: h, Unsigned: true}
			apitest.WantStatus(t, e.Do(t, req), 200)
			apitest.WantProblem(t, e.Do(t, req), 401, "unauthenticated")
			req.Body = []byte(`{"n":2}`)
			apitest.WantProblem(t, e.Do(t, req), 401, "unauthenticated")

			// The same request under a new request id is a new request.
			h2 := http.Header{}
			h2.Set(requestid.Header, requestid.New())
			e.SignV2(h2, id, "POST", path, body)
			apitest.WantStatus(t, e.Do(t, apitest.Request{Method: "POST", Path: path, Body: body, Header: h2, Unsigned: true}), 200)
		})
	}
	t.Run("a real write", func(t *testing.T) {
		body := []byte(`{"name":"replayed"}`)
		h := http.Header{}
		h.Set(requestid.Header, requestid.New())
		e.SignV2(h, id, "POST", "/api/v1/roles", body)
		req := apitest.Request{Method: "POST", Path: "/api/v1/roles", Body: body, Header: h, Unsigned: true}
		apitest.WantStatus(t, e.Do(t, req), 201)
		r := e.Do(t, req)
		apitest.WantProblem(t, r, 401, "unauthenticated")
		if r.Stats.Queries != 0 {
			t.Errorf("the replay ran %d queries", r.Stats.Queries)
		}
	})
	if got := metricValue(t, e, "coreapi_identity_rejected_total", `reason="replay"`); got != 3 {
		t.Errorf("coreapi_identity_rejected_total{reason=replay} = %v, want 3 (a replay with another body fails the signature)", got)
	}
}

// TestIdentityV2Refused: every way a v2 signature can be wrong is 401, on
// protected, public and internal routes alike.
func TestIdentityV2Refused(t *testing.T) {
	t.Parallel()
	e := startEcho(t, apitest.Options{})
	ten := e.SeedTenant(t, "Acme")
	id := e.SeedUserIn(t, ten.ID, "bad@acme.test", "owner")
	appKey, err := identity.NewKeySigner(identity.Key{ID: "app-notes", Secret: []byte("an-app-key-the-core-never-accepts-0123")})
	if err != nil {
		t.Fatal(err)
	}
	sameIDOtherSecret, err := identity.NewKeySigner(identity.Key{ID: apitest.KeyID, Secret: []byte("not-the-core-secret-but-its-id-012345")})
	if err != nil {
		t.Fatal(err)
	}
	// edit sends a correctly signed request whose headers are then changed.
	edit := func(name, value string) apitest.Request {
		h := http.Header{}
		h.Set(requestid.Header, requestid.New())
		e.SignV2(h, id, "GET", "/api/v1/echo/protected", nil)
		if value == "" {
			h.Del(name)
		} else {
			h.Set(name, value)
		}
		return apitest.Request{Method: "GET", Path: "/api/v1/echo/protected", Header: h, Unsigned: true}
	}
	// added sends a correctly signed request with a second line of a
	// signed header.
	added := func(name, value string) apitest.Request {
		h := http.Header{}
		h.Set(requestid.Header, requestid.New())
		e.SignV2(h, id, "GET", "/api/v1/echo/protected", nil)
		if value == "" {
			value = h.Get(name)
		}
		h.Add(name, value)
		return apitest.Request{Method: "GET", Path: "/api/v1/echo/protected", Header: h, Unsigned: true}
	}
	sig := func() string {
		h := http.Header{}
		h.Set(requestid.Header, requestid.New())
		e.SignV2(h, id, "GET", "/api/v1/echo/protected", nil)
		return h.Get(identity.HeaderSignature)
	}
	tests := []struct {
		name string
		req  apitest.Request
	}{
		{"app key", apitest.Request{Method: "GET", Path: "/api/v1/echo/protected", As: &id, SignWith: appKey}},
		{"core key id, other secret", apitest.Request{Method: "GET", Path: "/api/v1/echo/protected", As: &id, SignWith: sameIDOtherSecret}},
		{"expired", apitest.Request{Method: "GET", Path: "/api/v1/echo/protected", As: &id, SignedAt: time.Now().Add(-31 * time.Second)}},
		{"future", apitest.Request{Method: "GET", Path: "/api/v1/echo/protected", As: &id, SignedAt: time.Now().Add(31 * time.Second)}},
		{"other path", apitest.Request{Method: "GET", Path: "/api/v1/echo/protected", As: &id, SignPath: "/api/v1/echo/public"}},
		{"client IP changed", edit(identity.HeaderClientIP, "203.0.113.1")},
		{"client IP removed", edit(identity.HeaderClientIP, "")},
		{"request id changed", edit(requestid.Header, requestid.New())},
		{"request id removed", edit(requestid.Header, "")},
		{"key id removed", edit(identity.HeaderKeyID, "")},
		{"key id unknown", edit(identity.HeaderKeyID, "retired")},
		{"principal changed", edit(identity.HeaderPrincipal, "service")},
		{"principal unknown", edit(identity.HeaderPrincipal, "root")},
		{"email verified added", edit(identity.HeaderEmailVerified, "true")},
		{"email verified not a bool", edit(identity.HeaderEmailVerified, "yes")},
		{"amr added", edit(identity.HeaderAMR, "otp")},
		{"auth time added", edit(identity.HeaderAuthTime, "1700000000")},
		{"auth time not a number", edit(identity.HeaderAuthTime, "soon")},
		{"roles escalated", edit(identity.HeaderRoles, "owner,admin")},
		{"timestamp changed", edit(identity.HeaderTimestamp, "1700000000000")},
		{"signature truncated", edit(identity.HeaderSignature, strings.TrimSuffix(sig(), "A")[:40])},
		{"signature not base64", edit(identity.HeaderSignature, "v2="+strings.Repeat("*", 43))},
		{"signature of another request", edit(identity.HeaderSignature, sig())},
		{"roles added on a second line", added(identity.HeaderRoles, "owner")},
		{"permissions added on a second line", added(identity.HeaderPermissions, "users:write")},
		{"user id twice, the same", added(identity.HeaderUserID, "")},
		{"signature twice, the same", added(identity.HeaderSignature, "")},
		{"request id twice, the same", added(requestid.Header, "")},
		{"unknown version", edit(identity.HeaderSignature, "v3="+base64.RawURLEncoding.EncodeToString(make([]byte, 32)))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			apitest.WantProblem(t, e.Do(t, tt.req), 401, "unauthenticated")
		})
	}
	t.Run("public route with a bad signature", func(t *testing.T) {
		apitest.WantProblem(t, e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/echo/public", SignWith: appKey}), 401, "unauthenticated")
	})
	t.Run("internal route with a user identity", func(t *testing.T) {
		apitest.WantProblem(t, e.Do(t, apitest.Request{Method: "GET", Path: "/internal/v1/echo", As: &id}), 401, "unauthenticated")
	})
	t.Run("internal route with an anonymous identity that claims more", func(t *testing.T) {
		for _, claims := range []identity.Identity{
			{Principal: identity.PrincipalAnonymous, EmailVerified: true},
			{Principal: identity.PrincipalAnonymous, AMR: []string{"pwd"}},
			{Principal: identity.PrincipalAnonymous, AuthTime: 1_700_000_000},
			{Principal: identity.PrincipalAnonymous, Roles: []string{"owner"}},
			{Principal: identity.PrincipalService},
		} {
			apitest.WantProblem(t, e.Do(t, apitest.Request{Method: "GET", Path: "/internal/v1/echo", As: &claims}), 401, "unauthenticated")
		}
	})
	t.Run("internal route with the app key", func(t *testing.T) {
		apitest.WantProblem(t, e.Do(t, apitest.Request{Method: "GET", Path: "/internal/v1/echo", Service: true, SignWith: appKey}), 401, "unauthenticated")
	})
	if got := metricValue(t, e, "coreapi_identity_rejected_total", `reason="unknown_key"`); got < 3 {
		t.Errorf("coreapi_identity_rejected_total{reason=unknown_key} = %v, want >= 3", got)
	}
}

// TestIdentityKeyRotation: every listed core key verifies, so proxies can
// move to a new first key while others still sign with the old one.
func TestIdentityKeyRotation(t *testing.T) {
	t.Parallel()
	next := identity.Key{ID: "core-2", Secret: []byte("the-next-core-key-0123456789abcdef")}
	e := startEcho(t, apitest.Options{Configure: func(o *httpapi.Options) {
		o.IdentityKeys = append([]identity.Key{next}, o.IdentityKeys...)
	}})
	nextSigner, err := identity.NewKeySigner(next)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*identity.KeySigner{nextSigner, e.SignerV2} {
		got := decodeSeen(t, e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/echo/public", SignWith: s}))
		if got.KeyID != s.KeyID() {
			t.Fatalf("key id = %q, want %q", got.KeyID, s.KeyID())
		}
	}
}

// TestIdentityV1Grace: v1 signatures work while accepted (the default this
// release) and are refused with 401 once IDENTITY_ACCEPT_V1 is false.
func TestIdentityV1Grace(t *testing.T) {
	t.Parallel()
	for _, refuse := range []bool{false, true} {
		t.Run(map[bool]string{false: "accepted", true: "refused"}[refuse], func(t *testing.T) {
			t.Parallel()
			e := startEcho(t, apitest.Options{RefuseV1: refuse})
			ten := e.SeedTenant(t, "Acme")
			id := e.SeedUserIn(t, ten.ID, "v1@acme.test", "member")
			reqs := map[string]apitest.Request{
				"protected":  {Method: "GET", Path: "/api/v1/echo/protected", As: &id, V1: true},
				"internal":   {Method: "GET", Path: "/internal/v1/echo", Service: true, V1: true},
				"public":     {Method: "GET", Path: "/api/v1/echo/public", V1: true},
				"real route": {Method: "GET", Path: "/api/v1/users/me", As: &id, V1: true},
			}
			for name, req := range reqs {
				r := e.Do(t, req)
				if refuse {
					if r.Status != 401 {
						t.Errorf("%s: v1 while refused: %d %s", name, r.Status, r.Body)
					}
					continue
				}
				if r.Status != 200 {
					t.Errorf("%s: v1 while accepted: %d %s", name, r.Status, r.Body)
				}
			}
			if !refuse {
				// Another query: the same v1 request signed in the same
				// millisecond would be refused as a replay.
				again := reqs["protected"]
				again.Path += "?again"
				got := decodeSeen(t, e.Do(t, again))
				if got.Principal != "user" || got.UserID != id.UserID || got.ClientIP != "127.0.0.1" {
					t.Fatalf("v1 identity seen as %+v (v1 signs no client IP: the peer is used)", got)
				}
				// v1 over a forged identity is still refused.
				bad := reqs["protected"]
				bad.SignPath = "/api/v1/echo/public"
				apitest.WantProblem(t, e.Do(t, bad), 401, "unauthenticated")
			} else if got := metricValue(t, e, "coreapi_identity_rejected_total", `reason="v1_refused"`); got != 4 {
				t.Errorf("coreapi_identity_rejected_total{reason=v1_refused} = %v, want 4", got)
			}
			// v2 works either way.
			apitest.WantStatus(t, e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/echo/protected", As: &id}), 200)
		})
	}
}

// TestIdentityUnsignedOnlyInV1Grace: an unsigned request to a public or
// optional route (what a v1 proxy forwards on its public routes, the token
// endpoint among them) is served, as the anonymous principal with the
// peer's address, only while v1 is accepted. With IDENTITY_ACCEPT_V1=false
// every proxy signs every request it forwards, so an unsigned one comes
// from something that bypassed the proxy: 401, counted as missing.
func TestIdentityUnsignedOnlyInV1Grace(t *testing.T) {
	t.Parallel()
	paths := []string{"/api/v1/echo/public", "/api/v1/echo/optional"}
	for _, refuse := range []bool{false, true} {
		t.Run(map[bool]string{false: "accepted", true: "refused"}[refuse], func(t *testing.T) {
			t.Parallel()
			e := startEcho(t, apitest.Options{RefuseV1: refuse})
			for _, p := range paths {
				r := e.Do(t, apitest.Request{Method: "GET", Path: p, Unsigned: true})
				if refuse {
					apitest.WantProblem(t, r, 401, "unauthenticated")
					continue
				}
				if got := decodeSeen(t, r); got.Principal != "anonymous" || got.KeyID != "" || got.ClientIP != "127.0.0.1" {
					t.Errorf("%s unsigned while v1 is accepted: handler saw %+v", p, got)
				}
			}
			want := map[bool]float64{false: 0, true: float64(len(paths))}[refuse]
			if got := metricValue(t, e, "coreapi_identity_rejected_total", `reason="missing"`); got != want {
				t.Errorf("coreapi_identity_rejected_total{reason=missing} = %v, want %v", got, want)
			}
			// Signed (v2) requests are served either way, and the root
			// documents need no signature at all.
			for _, p := range paths {
				if got := decodeSeen(t, e.Do(t, apitest.Request{Method: "GET", Path: p, ClientIP: "198.51.100.9"})); got.ClientIP != "198.51.100.9" {
					t.Errorf("%s signed: handler saw %+v", p, got)
				}
			}
			for _, p := range []string{"/api/v1/health", "/openapi.json", "/api/v1/openapi.json"} {
				apitest.WantStatus(t, e.Do(t, apitest.Request{Method: "GET", Path: p, Unsigned: true}), 200)
			}
		})
	}
}

// TestIdentityIDsInOtherCaseRefused: the ids of a signed identity are
// compared as text (a path's user id against the caller's, a row's
// tenant against the caller's), so one in another spelling than the
// canonical lower case would compare unequal to the same id: such an
// identity is refused as malformed (401), however well signed, on
// protected and optional routes. The proxy sends ids as coreapi issued
// them, in lower case.
func TestIdentityIDsInOtherCaseRefused(t *testing.T) {
	t.Parallel()
	e := startEcho(t, apitest.Options{})
	ten := e.SeedTenant(t, "Acme")
	id := e.SeedUserIn(t, ten.ID, "case@acme.test", "owner")
	id.SessionID = e.SeedSession(t, id.UserID, id.TenantID)
	for _, path := range []string{"/api/v1/echo/protected", "/api/v1/echo/optional"} {
		got := decodeSeen(t, e.Do(t, apitest.Request{Method: "GET", Path: path, As: &id}))
		if got.UserID != id.UserID {
			t.Fatalf("%s: handler saw %+v", path, got)
		}
		for name, mod := range map[string]func(*identity.Identity){
			"user id":    func(i *identity.Identity) { i.UserID = strings.ToUpper(i.UserID) },
			"tenant id":  func(i *identity.Identity) { i.TenantID = strings.ToUpper(i.TenantID) },
			"session id": func(i *identity.Identity) { i.SessionID = strings.ToUpper(i.SessionID) },
			"one letter": func(i *identity.Identity) {
				if n := strings.IndexAny(i.UserID, "abcdef"); n >= 0 {
					i.UserID = i.UserID[:n] + strings.ToUpper(i.UserID[n:n+1]) + i.UserID[n+1:]
				}
			},
		} {
			other := id
			mod(&other)
			if other.UserID == id.UserID && other.TenantID == id.TenantID && other.SessionID == id.SessionID {
				t.Fatalf("%s: nothing in upper case to write: %+v", name, id)
			}
			apitest.WantProblem(t, e.Do(t, apitest.Request{Method: "GET", Path: path, As: &other}), 401, "unauthenticated")
		}
	}
	if got := metricValue(t, e, "coreapi_identity_rejected_total", `reason="bad_ids"`); got != 8 {
		t.Errorf("coreapi_identity_rejected_total{reason=bad_ids} = %v, want 8", got)
	}
}

// TestIdentityIDsCheckedOnPublicRoutes: public routes held a signed
// identity's ids to nothing, though IdentityOf reports them there (and
// the request's span records them). The proxy signs the anonymous,
// empty identity on public and optional routes without a bearer: that
// is served. An anonymous identity that names ids, or a user's whose ids
// are not canonical, is refused 401 as on protected and optional routes.
func TestIdentityIDsCheckedOnPublicRoutes(t *testing.T) {
	t.Parallel()
	e := startEcho(t, apitest.Options{})
	ten := e.SeedTenant(t, "Acme")
	user := e.SeedUserIn(t, ten.ID, "public@acme.test", "owner")
	user.SessionID = e.SeedSession(t, user.UserID, user.TenantID)
	anon := func(mod func(*identity.Identity)) *identity.Identity {
		id := identity.Identity{Principal: identity.PrincipalAnonymous}
		mod(&id)
		return &id
	}
	userWith := func(mod func(*identity.Identity)) *identity.Identity {
		id := user
		mod(&id)
		return &id
	}
	paths := []string{"/api/v1/echo/public", "/api/v1/echo/optional"}
	// What the proxy sends: nil signs its anonymous identity.
	for _, path := range paths {
		got := decodeSeen(t, e.Do(t, apitest.Request{Method: "GET", Path: path}))
		if got.Principal != identity.PrincipalAnonymous || got.UserID != "" || got.TenantID != "" || got.ClientIP != apitest.DefaultClientIP {
			t.Fatalf("%s: the proxy's anonymous identity read as %+v", path, got)
		}
	}
	if got := decodeSeen(t, e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/echo/public", As: &user})); got.UserID != user.UserID {
		t.Fatalf("public route: a user's canonical identity read as %+v", got)
	}
	refused := []struct {
		name  string
		as    *identity.Identity
		paths []string
	}{
		{"anonymous with a user id", anon(func(i *identity.Identity) { i.UserID = user.UserID }), paths},
		{"anonymous with a tenant id", anon(func(i *identity.Identity) { i.TenantID = user.TenantID }), paths},
		{"anonymous with a session id", anon(func(i *identity.Identity) { i.SessionID = user.SessionID }), paths},
		{"user id in upper case", userWith(func(i *identity.Identity) { i.UserID = strings.ToUpper(i.UserID) }), paths[:1]},
		{"tenant id in upper case", userWith(func(i *identity.Identity) { i.TenantID = strings.ToUpper(i.TenantID) }), paths[:1]},
		{"session id not a UUID", userWith(func(i *identity.Identity) { i.SessionID = "s1" }), paths[:1]},
		{"user without a tenant", userWith(func(i *identity.Identity) { i.TenantID = "" }), paths[:1]},
	}
	n := 0
	for _, tc := range refused {
		for _, path := range tc.paths {
			r := e.Do(t, apitest.Request{Method: "GET", Path: path, As: tc.as})
			if r.Status != 401 {
				t.Errorf("%s on %s: status %d, want 401 (body %s)", tc.name, path, r.Status, r.Body)
				continue
			}
			apitest.WantProblem(t, r, 401, "unauthenticated")
			n++
		}
	}
	if got := metricValue(t, e, "coreapi_identity_rejected_total", `reason="bad_ids"`); got != float64(n) {
		t.Errorf("coreapi_identity_rejected_total{reason=bad_ids} = %v, want %d", got, n)
	}
}

// TestIdentityV1ReplayRefused: a v1 signature goes through the replay
// filter v2 signatures go through. v1 binds neither the body nor a request
// id, so a captured v1 request sent again within the window, as it was or
// with another body (which the signature does not cover), is refused 401
// once the first was accepted, counted as reason="replay"; a request
// signed at another millisecond is another signature and is accepted.
func TestIdentityV1ReplayRefused(t *testing.T) {
	t.Parallel()
	e := startEcho(t, apitest.Options{})
	ten := e.SeedTenant(t, "Acme")
	id := e.SeedUserIn(t, ten.ID, "v1replay@acme.test", "member")
	at := time.Now()
	captured := apitest.Request{Method: "GET", Path: "/api/v1/echo/protected", As: &id, V1: true, SignedAt: at}
	if got := decodeSeen(t, e.Do(t, captured)); got.UserID != id.UserID {
		t.Fatalf("first v1 request seen as %+v", got)
	}
	apitest.WantProblem(t, e.Do(t, captured), 401, "unauthenticated")

	post := apitest.Request{Method: "POST", Path: "/api/v1/echo/protected", As: &id, V1: true, SignedAt: at,
		Body: map[string]string{"note": "first"}}
	if got := decodeSeen(t, e.Do(t, post)); got.UserID != id.UserID {
		t.Fatalf("first v1 POST seen as %+v", got)
	}
	post.Body = map[string]string{"note": "changed"}
	apitest.WantProblem(t, e.Do(t, post), 401, "unauthenticated")
	if got := metricValue(t, e, "coreapi_identity_rejected_total", `reason="replay"`); got != 2 {
		t.Errorf("coreapi_identity_rejected_total{reason=replay} = %v, want 2", got)
	}

	later := captured
	later.SignedAt = at.Add(time.Millisecond)
	decodeSeen(t, e.Do(t, later))
}
