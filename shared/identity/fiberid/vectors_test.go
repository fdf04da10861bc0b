package fiberid_test

import (
	"net/http"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/shared/identity/fiberid"
	"github.com/tollgate-auth/tollgate/shared/identity/identitytest"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
)

// TestVectors runs the test vectors through a Fiber app behind New, in
// order and through one Verifier: every case gets its verdict and the
// reason it logs, and each valid one sent again is a replay.
func TestVectors(t *testing.T) {
	identitytest.Run(t, func(v *verify.Verifier) func(*http.Request) int {
		app := fiber.New(fiber.Config{DisableStartupMessage: true, DisablePreParseMultipartForm: true})
		app.Use(fiberid.New(v))
		app.All("/*", func(*fiber.Ctx) error { return nil })
		return func(r *http.Request) int {
			res, err := app.Test(r, -1)
			if err != nil {
				t.Fatal(err)
			}
			_ = res.Body.Close()
			return res.StatusCode
		}
	})
}
