package httpapi_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/logging/logtest"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// oddError is an error a feature wraps as a typed nil: its mapper reads
// it without checking.
type oddError struct{ reason string }

func (e *oddError) Error() string { return "odd" }

// TestErrorMapperPanic: the error mappers run outside the recover
// middleware (in accessLog, and before any middleware for an early
// refusal); a mapper that panics is answered 500 problem+json with the
// request id and the panic logged with its stack, as a handler's panic
// is, and the server goes on serving. The panic ended the process.
func TestErrorMapperPanic(t *testing.T) {
	t.Parallel()
	logs := &testkit.LogBuffer{}
	e := start(t, apitest.Options{AllowUndocumented: true, Configure: func(o *httpapi.Options) {
		o.Logger = slog.New(logging.NewHandler(logs, slog.LevelInfo))
		o.MaxBodyBytes = 4096
		o.ErrorMappers = append(o.ErrorMappers, func(err error) *problem.Problem {
			var oe *oddError
			if errors.As(err, &oe) {
				return problem.New(fiber.StatusConflict, "odd", oe.reason) // oe is nil: panics
			}
			var fe *fiber.Error
			if errors.As(err, &fe) && fe.Code == fiber.StatusRequestEntityTooLarge {
				panic("mapper of early refusals")
			}
			return nil
		})
		o.Register = append(o.Register, func(rt httpapi.Routes) {
			rt.Public.Get("/x/odd", func(c *fiber.Ctx) error {
				var oe *oddError
				return errors.Join(errors.New("load"), oe)
			})
		})
	}})
	for _, tt := range []struct {
		name, panic string
		req         apitest.Request
	}{
		{"after a handler", "nil pointer dereference",
			apitest.Request{Method: "GET", Path: "/api/v1/x/odd", Undocumented: true}},
		{"before any middleware", "mapper of early refusals",
			apitest.Request{Method: "POST", Path: "/api/v1/auth/token", Body: strings.Repeat("x", 5000), Undocumented: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rid := "panic-rid-" + strings.ReplaceAll(tt.name, " ", "-")
			tt.req.Header = http.Header{"X-Request-Id": {rid}}
			r := e.Do(t, tt.req)
			apitest.WantProblem(t, r, 500, "internal")
			if p := r.Problem(t); p.RequestID != rid {
				t.Errorf("problem request id %q, want %q", p.RequestID, rid)
			}
			var found bool
			for _, l := range strings.Split(logs.String(), "\n") {
				found = found || strings.Contains(l, `"msg":"panic"`) && strings.Contains(l, rid) &&
					strings.Contains(l, tt.panic) && strings.Contains(l, `"stack":"goroutine `)
			}
			if !found {
				t.Errorf("no panic line with %q and its stack for %s:\n%s", tt.panic, rid, logs)
			}
		})
	}
	// Still serving.
	apitest.WantStatus(t, e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/health"}), 200)
}

// TestPanicValueIsRedactedAndCut: a panic's value may hold the request's
// own bytes (a credential in a formatted error) and be of any size: it
// is logged redacted and cut to logging.MaxRedactedBytes, with its stack
// (cut to logging.MaxStackBytes: a panic deep in a recursion has one of
// any size).
func TestPanicValueIsRedactedAndCut(t *testing.T) {
	t.Parallel()
	logs := &testkit.LogBuffer{}
	const token = "eyJhbGciOiJFZERTQSJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJl"
	e := start(t, apitest.Options{AllowUndocumented: true, Configure: func(o *httpapi.Options) {
		o.Logger = slog.New(logging.NewHandler(logs, slog.LevelInfo))
		o.Register = append(o.Register, func(rt httpapi.Routes) {
			rt.Public.Get("/x/panics", func(c *fiber.Ctx) error {
				auth := c.Get("Authorization")
				deep(200, func() { panic(fmt.Errorf("handler fault for Authorization: %s %s", auth, strings.Repeat("x", 10<<10))) })
				return nil
			})
		})
	}})
	rid := "panic-rid-redacted"
	r := e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/x/panics", Undocumented: true,
		Header: http.Header{"X-Request-Id": {rid}, "Authorization": {"Bearer " + token}}})
	apitest.WantProblem(t, r, 500, "internal")
	if strings.Contains(logs.String(), token) {
		t.Fatal("the bearer token in the panic value was logged")
	}
	// 200 frames deep: the stack is cut to its first frames.
	logtest.WantPanicLine(t, logs.String(), rid, "handler fault for Authorization: Bearer [redacted] xxx")
}

// deep calls f n calls down: a panic there has a stack of n more frames.
//
//go:noinline
func deep(n int, f func()) {
	if n == 0 {
		f()
		return
	}
	deep(n-1, f)
}
