package rules

import (
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/accountroutes"
)

// TestAccountRoutesChecked: every route of shared/accountroutes is a
// built-in route whose access makes the proxy authenticate a bearer
// (protected or optional), so its principal is known and refused there
// before coreapi refuses it again; a public route would forward a key's
// request as anonymous without looking at it.
func TestAccountRoutesChecked(t *testing.T) {
	tb, err := Load("", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range accountroutes.Rules {
		path := strings.ReplaceAll(r.Path, ":id", "0b0d3c4e-0000-4000-8000-000000000001")
		g, _ := tb.Match([]byte(path), nil)
		if g == nil {
			t.Errorf("%s %s: no built-in route", r.Method, r.Path)
			continue
		}
		route := g.Pick([]byte(r.Method))
		switch {
		case route == nil:
			t.Errorf("%s %s: method not allowed by %s", r.Method, r.Path, g.Prefix)
		case !route.Core:
			t.Errorf("%s %s: not a built-in route", r.Method, r.Path)
		case route.Access != Protected && route.Access != Optional:
			t.Errorf("%s %s: access %v: the bearer is never read", r.Method, r.Path, route.Access)
		}
	}
}
