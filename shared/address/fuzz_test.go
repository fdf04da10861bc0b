package address_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tollgate-auth/tollgate/shared/address"
	"golang.org/x/text/unicode/norm"
)

// FuzzCanonical: whatever it is given, Canonical's result is its own
// canonical form (the form stored is the form looked up), in NFC, without
// surrounding white space, and its domain has no trailing dot; the local
// part is kept as given, in NFC.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{
		"jo@example.com", " Jo@Example.com\t", "jose\u0301@example.com", "\u212Aate@example.com", "",
		"Ada@B\u00dcCHER.example", "Ada@bu\u0308cher.example", "Ada@XN--BCHER-KVA.Example",
		"Ada@b\u00fccher\u3002example", "Ada@xn--bcher-kva.example.", "Ada@\uff42\u00fccher.example",
		"Ada@stra\u00dfe.example", "Ada@Under_Score.example.", "Ada@xn--zz.example", "Ada@[192.0.2.1]",
		"b\u00fccher.example", "a@b@XN--BCHER-KVA.example", "a@", "@", "a@.", "a@..",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := address.Canonical(s)
		if again := address.Canonical(c); again != c {
			t.Fatalf("Canonical(%+q) = %+q, whose canonical form is %+q", s, c, again)
		}
		if !utf8.ValidString(s) {
			return // NFC keeps invalid bytes; the properties below are about text
		}
		if !norm.NFC.IsNormalString(c) || strings.TrimSpace(c) != c {
			t.Fatalf("Canonical(%+q) = %+q: not NFC, or white space around it", s, c)
		}
		at := strings.LastIndexByte(c, '@')
		if at < 0 {
			return
		}
		if strings.HasSuffix(c, ".") {
			t.Fatalf("Canonical(%+q) = %+q: a trailing dot", s, c)
		}
		in := norm.NFC.String(strings.TrimSpace(s))
		if c[:at] != in[:strings.LastIndexByte(in, '@')] {
			t.Fatalf("Canonical(%+q) = %+q: the local part changed", s, c)
		}
	})
}
