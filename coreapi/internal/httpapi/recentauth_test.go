package httpapi_test

import (
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestRecentAuthDetailNamesTheWindow: the refusal of an act that needs a
// recent sign-in or second factor words the window it was given in its
// detail, as its WWW-Authenticate gives it in max_age: a window other
// than 5 minutes is never told as 5 minutes.
func TestRecentAuthDetailNamesTheWindow(t *testing.T) {
	for _, tc := range []struct {
		maxAge              time.Duration
		factor              bool
		wantDetail, wantWWW string
	}{
		{5 * time.Minute, true, "x needs a second factor given in the last 5 minutes; step up with grant_type=mfa_otp",
			`Bearer error="insufficient_user_authentication", acr_values="mfa", max_age=300`},
		{90 * time.Second, true, "x needs a second factor given in the last 90 seconds; step up with grant_type=mfa_otp",
			`Bearer error="insufficient_user_authentication", acr_values="mfa", max_age=90`},
		{time.Minute, false, "x needs a sign-in within the last 1 minute: sign in again",
			`Bearer error="insufficient_user_authentication", max_age=60`},
		{2 * time.Hour, false, "x needs a sign-in within the last 2 hours: sign in again",
			`Bearer error="insufficient_user_authentication", max_age=7200`},
	} {
		t.Run(tc.maxAge.String(), func(t *testing.T) {
			var got error
			app := fiber.New()
			app.Get("/", func(c *fiber.Ctx) error {
				if tc.factor {
					got = httpapi.NeedRecentSecondFactor(c, tc.maxAge, "x")
				} else {
					got = httpapi.NeedRecentSignIn(c, tc.maxAge, "x")
				}
				return c.SendStatus(fiber.StatusNoContent)
			})
			resp, err := app.Test(httptest.NewRequest(fiber.MethodGet, "/", nil))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			var p *problem.Problem
			if !errors.As(got, &p) {
				t.Fatalf("answer = %v; want a problem", got)
			}
			if p.Status != fiber.StatusUnauthorized || p.Code != problem.CodeInsufficientUserAuthentication || p.Detail != tc.wantDetail {
				t.Errorf("problem = %d %s %q; want 401 %s %q", p.Status, p.Code, p.Detail, problem.CodeInsufficientUserAuthentication, tc.wantDetail)
			}
			if www := resp.Header.Get(fiber.HeaderWWWAuthenticate); www != tc.wantWWW {
				t.Errorf("WWW-Authenticate = %q; want %q", www, tc.wantWWW)
			}
		})
	}
}
