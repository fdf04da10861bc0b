package envconfig

import (
	"strings"
	"testing"
)

// FuzzMaskURL writes a password where a URL's user information goes,
// after its scheme and any number of slashes, and any rest after it: the
// printout of the value (MaskURL) and the quote of a refused one
// (ProblemURL) never show the password, parsable or not.
func FuzzMaskURL(f *testing.F) {
	const secret = "Zq9Secret7"
	for _, c := range []struct {
		scheme     string
		slashes    uint8
		user, rest string
	}{
		{"postgres", 2, "u", "h/db"}, {"postgres", 2, "u", "h/db?sslmode=require"}, {"smtp", 2, "u", "mail:587"},
		{"nats", 2, "", "nats:4222"}, {"postgres", 0, "u", "h:5432/db"}, {"postgres", 1, "u", "h/db"},
		{"postgres", 3, "u", "h/db"}, {"http", 2, "u", "core:8081/api?x=y#f"}, {"", 2, "u", "h"}, {"http", 2, "u", "h/p%zz"},
	} {
		f.Add(c.scheme, c.slashes, c.user, c.rest)
	}
	f.Fuzz(func(t *testing.T, scheme string, slashes uint8, user, rest string) {
		if strings.ContainsAny(scheme+user, ":/?#@") || strings.Contains(rest, "@") || strings.Contains(scheme+user+rest, secret[:3]) {
			return // the password would not be the user information's
		}
		v := scheme + ":" + strings.Repeat("/", int(slashes%4)) + user + ":" + secret + "@" + rest
		if got := MaskURL(v); strings.Contains(got, secret) {
			t.Fatalf("MaskURL(%q) = %q", v, got)
		}
		if got := ProblemURL(v); strings.Contains(got, secret) {
			t.Fatalf("ProblemURL(%q) = %q", v, got)
		}
	})
}
