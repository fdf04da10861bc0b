package httpapi_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

var errTeapot = errors.New("teapot")

// TestRegisterHook: routes added by another package get the same
// middleware, identity and error handling as the built-in ones.
func TestRegisterHook(t *testing.T) {
	t.Parallel()
	e := start(t, apitest.Options{AllowUndocumented: true, Configure: func(o *httpapi.Options) {
		o.ErrorMappers = append(o.ErrorMappers, func(err error) *problem.Problem {
			if errors.Is(err, errTeapot) {
				return problem.New(fiber.StatusTeapot, "teapot", "short and stout")
			}
			return nil
		})
		o.Register = append(o.Register, func(rt httpapi.Routes) {
			rt.Public.Get("/x/public", func(c *fiber.Ctx) error { return c.SendString("public") })
			rt.Protected.Get("/x/protected", func(c *fiber.Ctx) error { return c.SendString(httpapi.IdentityOf(c).UserID) })
			rt.Protected.Get("/x/admin", httpapi.RequirePermission("users:write"), func(c *fiber.Ctx) error { return c.SendString("ok") })
			rt.Root.Get("/.well-known/x", func(c *fiber.Ctx) error { return c.SendString("root") })
			rt.Internal.Get("/x", func(c *fiber.Ctx) error { return c.SendString("internal") })
			rt.Public.Get("/x/teapot", func(c *fiber.Ctx) error { return errTeapot })
			rt.Public.Get("/x/panic", func(c *fiber.Ctx) error { panic("boom") })
			rt.Public.Get("/x/fail", func(c *fiber.Ctx) error { return errors.New("database on fire") })
			rt.Public.Get("/x/limited", func(c *fiber.Ctx) error {
				return fmt.Errorf("in tx: %w", &ratelimit.Refused{What: "too many teapots", RetryAfter: 1500 * time.Millisecond})
			})
			rt.Public.Get("/x/cursor", func(c *fiber.Ctx) error {
				var v struct{ N int }
				if cur := c.Query("cursor"); cur != "" {
					if err := rt.Cursors.Decode("x", "scope", cur, &v); err != nil {
						return err
					}
					return c.JSON(v)
				}
				return c.SendString(rt.Cursors.Encode("x", "scope", struct{ N int }{42}))
			})
		})
	}})
	ten := e.SeedTenant(t, "Acme")
	member := e.SeedUserIn(t, ten.ID, "m@acme.test", "member")

	r := e.Get(t, nil, "/api/v1/x/public")
	if r.Status != 200 || string(r.Body) != "public" {
		t.Fatalf("public = %d %s", r.Status, r.Body)
	}
	apitest.WantProblem(t, e.Get(t, nil, "/api/v1/x/protected"), 401, "unauthenticated")
	r = e.Get(t, &member, "/api/v1/x/protected")
	if r.Status != 200 || string(r.Body) != member.UserID {
		t.Fatalf("protected = %d %s", r.Status, r.Body)
	}
	apitest.WantProblem(t, e.Get(t, &member, "/api/v1/x/admin"), 403, "insufficient_scope")
	if r := e.Get(t, nil, "/.well-known/x"); r.Status != 200 {
		t.Fatalf("root = %d", r.Status)
	}
	apitest.WantProblem(t, e.Do(t, apitest.Request{Method: "GET", Path: "/internal/v1/x", Unsigned: true}), 401, "unauthenticated")
	if r := e.Do(t, apitest.Request{Method: "GET", Path: "/internal/v1/x", Service: true}); r.Status != 200 {
		t.Fatalf("internal = %d", r.Status)
	}
	apitest.WantProblem(t, e.Get(t, nil, "/api/v1/x/teapot"), 418, "teapot")
	apitest.WantProblem(t, e.Get(t, nil, "/api/v1/x/panic"), 500, "internal")
	r = e.Get(t, nil, "/api/v1/x/fail")
	apitest.WantProblem(t, r, 500, "internal")
	if strings.Contains(string(r.Body), "fire") {
		t.Errorf("500 body leaks the internal error: %s", r.Body)
	}
	// A limit's refusal from deep in a transaction: 429, Retry-After
	// rounded up to whole seconds, what was refused in the detail.
	r = e.Get(t, nil, "/api/v1/x/limited")
	apitest.WantProblem(t, r, 429, problem.CodeTooManyRequests)
	if got := r.Header.Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After = %q, want 2", got)
	}
	if !strings.Contains(string(r.Body), "too many teapots; retry after 2 s") {
		t.Errorf("429 body does not say what was refused: %s", r.Body)
	}
	// The server still serves after a panic.
	if r := e.Get(t, nil, "/api/v1/x/public"); r.Status != 200 {
		t.Fatalf("after panic: %d", r.Status)
	}
	cur := string(e.Get(t, nil, "/api/v1/x/cursor").Body)
	r = e.Get(t, nil, "/api/v1/x/cursor?cursor="+cur)
	if r.Status != 200 || string(r.Body) != `{"N":42}` {
		t.Fatalf("cursor round trip = %d %s", r.Status, r.Body)
	}
	apitest.WantProblem(t, e.Get(t, nil, "/api/v1/x/cursor?cursor=x"+cur), 400, "invalid_cursor")
}

// TestBuiltInPublicPaths: the public paths authproxy routes to coreapi
// besides the API (its built-in routes) are served, with no identity.
func TestBuiltInPublicPaths(t *testing.T) {
	t.Parallel()
	e := start(t, apitest.Options{})
	r := e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/health", Unsigned: true})
	if r.Status != 200 || string(r.Body) != `{"status":"ok"}` || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("GET /api/v1/health = %d %q (Cache-Control %q)", r.Status, r.Body, r.Header.Get("Cache-Control"))
	}
	doc := e.Do(t, apitest.Request{Method: "GET", Path: "/openapi.json", Unsigned: true})
	v1 := e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/openapi.json", Unsigned: true})
	if v1.Status != 200 || !bytes.Equal(v1.Body, doc.Body) {
		t.Fatalf("GET /api/v1/openapi.json = %d, %d bytes; want /openapi.json's %d bytes", v1.Status, len(v1.Body), len(doc.Body))
	}
}

func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	e := start(t, apitest.Options{})
	r := e.Get(t, nil, "/openapi.json")
	apitest.WantStatus(t, r, 200)
	var doc struct {
		OpenAPI string         `json:"openapi"`
		Paths   map[string]any `json:"paths"`
		Servers []struct {
			URL string `json:"url"`
		} `json:"servers"`
	}
	r.JSON(t, &doc)
	if doc.OpenAPI != "3.1.0" || doc.Paths["/api/v1/users/{id}/roles/{role}"] == nil {
		t.Fatalf("served document: openapi %q, %d paths", doc.OpenAPI, len(doc.Paths))
	}
	if len(doc.Servers) != 1 || doc.Servers[0].URL != "/" {
		t.Errorf("served document: servers %+v, want one, /", doc.Servers)
	}
	// The projection route is for authproxy only: described in the internal
	// document, not in the public one (its conformance is still checked).
	for p := range doc.Paths {
		if strings.HasPrefix(p, "/internal/") {
			t.Errorf("served document describes the internal route %s", p)
		}
	}
}
