package mail_test

import (
	"context"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
)

// TestSameAddressIsLower: SameAddress decides as the database does, on a
// real server. Every character that PostgreSQL's lower() changes, Go
// lowers to the same one, and no other; and the pairs on which
// strings.EqualFold and lower() disagree get lower()'s answer: "İ" is "i"
// there, "ſ" is not "s".
func TestSameAddressIsLower(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()

	const q = `
SELECT cp, ascii(lower(chr(cp)))
FROM generate_series(1, 1114111) cp
WHERE cp NOT BETWEEN 55296 AND 57343 AND lower(chr(cp)) <> chr(cp)`
	rows, err := db.Pool.Query(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	server := map[rune]rune{}
	for rows.Next() {
		var cp, lo int32
		if err := rows.Scan(&cp, &lo); err != nil {
			t.Fatal(err)
		}
		server[cp] = lo
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(server) < 1000 { // a database whose lower() folds ASCII only
		t.Fatalf("lower() changes %d characters: not a UTF-8 database with Unicode case mappings", len(server))
	}
	for r := rune(1); r <= unicode.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		want, ok := server[r]
		if !ok {
			want = r
		}
		if got := []rune(strings.ToLower(string(r))); len(got) != 1 || got[0] != want {
			t.Errorf("%U: Go lowers to %q, lower() to %q", r, string(got), string(want))
		}
	}

	for _, tt := range []struct{ a, b string }{
		{"inci@example.com", "İnci@example.com"},    // U+0130: EqualFold false, lower() equal
		{"sam@example.com", "ſam@example.com"},      // U+017F: EqualFold true, lower() apart
		{"σ@example.com", "ς@example.com"},          // final sigma: EqualFold true, lower() apart
		{"kim@example.com", "\u212Aim@example.com"}, // KELVIN SIGN: both equal
		{"jose@example.com", "JOSE@EXAMPLE.COM"},
		{"jose@example.com", "josé@example.com"},
	} {
		var want bool
		if err := db.Pool.QueryRow(ctx, `SELECT lower($1) = lower($2)`, tt.a, tt.b).Scan(&want); err != nil {
			t.Fatal(err)
		}
		if got := mail.SameAddress(tt.a, tt.b); got != want {
			t.Errorf("SameAddress(%q, %q) = %v, lower() says %v", tt.a, tt.b, got, want)
		}
	}
}
