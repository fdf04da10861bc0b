package envconfig

import (
	"strings"
	"testing"
)

// FuzzMaskURL writes a password where a URL's user information goes,
// after its scheme and any number of slashes, and any rest after it: the
// printout of the value (MaskURL) and the quote of a refused one
// (ProblemURL) never show the password, parsable or not. The password is
// two halves with anything but an '@' between them (mid: a '/', '?' or
// '#' left unescaped ends the authority before the '@'), and neither half
// may show.
func FuzzMaskURL(f *testing.F) {
	const before, after = "Zq9Sec", "Ret7xW"
	for _, c := range []struct {
		scheme          string
		slashes         uint8
		user, mid, rest string
	}{
		{"postgres", 2, "u", "", "h/db"}, {"postgres", 2, "u", "", "h/db?sslmode=require"}, {"smtp", 2, "u", "", "mail:587"},
		{"nats", 2, "", "", "nats:4222"}, {"postgres", 0, "u", "", "h:5432/db"}, {"postgres", 1, "u", "", "h/db"},
		{"postgres", 3, "u", "", "h/db"}, {"http", 2, "u", "", "core:8081/api?x=y#f"}, {"", 2, "u", "", "h"}, {"http", 2, "u", "", "h/p%zz"},
		{"postgres", 2, "u", "?", "h/db"}, {"postgres", 2, "u", "/", "h/db?x=y"}, {"postgres", 2, "u", "#", "h/db"}, {"nats", 2, "", "?", "nats:4222"},
	} {
		f.Add(c.scheme, c.slashes, c.user, c.mid, c.rest)
	}
	f.Fuzz(func(t *testing.T, scheme string, slashes uint8, user, mid, rest string) {
		if strings.ContainsAny(scheme+user, ":/?#@") || strings.Contains(mid+rest, "@") {
			return // the password would not be the user information's
		}
		if all := scheme + user + mid + rest; strings.Contains(all, before[:3]) || strings.Contains(all, after[:3]) {
			return
		}
		v := scheme + ":" + strings.Repeat("/", int(slashes%4)) + user + ":" + before + mid + after + "@" + rest
		if got := MaskURL(v); strings.Contains(got, before) || strings.Contains(got, after) {
			t.Fatalf("MaskURL(%q) = %q", v, got)
		}
		if got := ProblemURL(v); strings.Contains(got, before) || strings.Contains(got, after) {
			t.Fatalf("ProblemURL(%q) = %q", v, got)
		}
	})
}
