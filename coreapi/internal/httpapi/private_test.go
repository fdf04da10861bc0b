package httpapi_test

import (
	"maps"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
)

// TestPrivateHeaders pins the header set of a private answer (the pages,
// their 303s, the OAuth callback, and under the framing headers every
// problem answer): exactly these three, nothing more.
func TestPrivateHeaders(t *testing.T) {
	app := fiber.New()
	headers := func(set func(*fiber.Ctx)) map[string]string {
		c := app.AcquireCtx(&fasthttp.RequestCtx{})
		defer app.ReleaseCtx(c)
		if set != nil {
			set(c)
		}
		got := map[string]string{}
		for k, v := range c.Response().Header.All() {
			got[string(k)] = string(v)
		}
		return got
	}
	got, bare := headers(httpapi.PrivateHeaders), headers(nil)
	maps.DeleteFunc(got, func(k, v string) bool { w, ok := bare[k]; return ok && w == v })
	want := map[string]string{
		"Cache-Control":          "no-store",
		"X-Content-Type-Options": "nosniff",
		"Referrer-Policy":        "no-referrer",
	}
	if !maps.Equal(got, want) {
		t.Errorf("PrivateHeaders set %v, want %v", got, want)
	}
}
