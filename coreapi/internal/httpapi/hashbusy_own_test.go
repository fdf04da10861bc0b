package httpapi

import (
	"fmt"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestPasswordBusyIsUnavailable: a password check refused because every
// hash slot is taken and the waiting room is full (password.ErrBusy,
// wrapped as the features return it) is 503 unavailable with
// Retry-After, as an overloaded database is, not a 500.
func TestPasswordBusyIsUnavailable(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	app := fiber.New()
	var p *problem.Problem
	app.Get("/", func(c *fiber.Ctx) error {
		p = s.toProblem(c, fmt.Errorf("check guess: %w", password.ErrBusy))
		return nil
	})
	resp, err := app.Test(httptest.NewRequest("GET", "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	if p == nil || p.Status != 503 || p.Code != problem.CodeUnavailable {
		t.Fatalf("problem = %+v, want 503 %s", p, problem.CodeUnavailable)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After = %q, want 1", ra)
	}
}
