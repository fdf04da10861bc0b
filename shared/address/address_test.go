package address_test

import (
	"testing"

	"github.com/tollgate-auth/tollgate/shared/address"
)

func TestCanonical(t *testing.T) {
	for in, want := range map[string]string{
		"jo@example.com":           "jo@example.com",
		" Jo@Example.com\t":        "Jo@example.com", // the local part keeps its letter case
		"jose\u0301@example.com":   "jos\u00e9@example.com",
		"jos\u00e9@example.com":    "jos\u00e9@example.com",
		" JOSE\u0301@example.com ": "JOS\u00c9@example.com",
		"\u212Aate@example.com":    "Kate@example.com",
		"":                         "",
		// The domain in one spelling: Unicode, lower case, no trailing dot.
		"Ada@b\u00fccher.example":      "Ada@b\u00fccher.example",
		"Ada@B\u00dcCHER.example":      "Ada@b\u00fccher.example",
		"Ada@bu\u0308cher.example":     "Ada@b\u00fccher.example",
		"Ada@xn--bcher-kva.example":    "Ada@b\u00fccher.example",
		"Ada@XN--BCHER-KVA.Example":    "Ada@b\u00fccher.example",
		"Ada@b\u00fccher\u3002example": "Ada@b\u00fccher.example",
		"Ada@b\u00fccher.example.":     "Ada@b\u00fccher.example",
		"Ada@xn--bcher-kva.example.":   "Ada@b\u00fccher.example",
		"Ada@\uff42\u00fccher.example": "Ada@b\u00fccher.example", // fullwidth b
		"Ada@Example.COM.":             "Ada@example.com",
		"Ada@stra\u00dfe.example":      "Ada@stra\u00dfe.example", // not "strasse"
		"Ada@xn--strae-oqa.example":    "Ada@stra\u00dfe.example",
		// Domains IDNA refuses are kept, less trailing dots.
		"Ada@Under_Score.example.":  "Ada@Under_Score.example",
		"Ada@xn--zz.example":        "Ada@xn--zz.example",
		"Ada@[192.0.2.1]":           "Ada@[192.0.2.1]",
		"b\u00fccher.example":       "b\u00fccher.example", // no "@": no domain
		"a@b@XN--BCHER-KVA.example": "a@b@b\u00fccher.example",
		// White space and dots at the end of the domain go before IDNA
		// reads it: the result is its own canonical form.
		"@\u00dc .":                    "@\u00fc",
		"Ada@XN--BCHER-KVA.example. .": "Ada@b\u00fccher.example",
		"Ada@Under_Score.example \t.":  "Ada@Under_Score.example",
	} {
		got := address.Canonical(in)
		if got != want {
			t.Errorf("Canonical(%+q) = %+q, want %+q", in, got, want)
		}
		if again := address.Canonical(got); again != got {
			t.Errorf("Canonical(%+q) = %+q, not its own canonical form", got, again)
		}
	}
}
