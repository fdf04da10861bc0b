// Package address holds the one form in which coreapi stores, compares
// and looks up an email address (Canonical). It is shared by coreapi's
// mail package, which puts every address it is given in this form, and by
// the migrations, which rewrite the addresses stored by earlier releases
// into it (migration 00044).
package address

import (
	"strings"
	"unicode"

	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
)

// Canonical is the form in which an address is stored, compared and looked
// up: without surrounding white space, in Unicode NFC, its domain in one
// spelling (Domain). One address typed with precomposed or decomposed
// letters ("é" as U+00E9, or as "e" and U+0301), or with its domain in
// Unicode or Punycode ("bücher.example", "xn--bcher-kva.example",
// "bücher。example", "bücher.example."), is one address. The local part
// keeps its letter case: the database compares lower() of both sides.
// Canonical(Canonical(s)) == Canonical(s).
func Canonical(s string) string {
	s = norm.NFC.String(strings.TrimSpace(s))
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return s
	}
	return s[:at+1] + Domain(s[at+1:])
}

// Domain is the one spelling in which a domain is stored: its Unicode
// form (IDNA's lookup mapping, then ToUnicode: lower case, a Punycode
// label decoded, "。" read as "."), without the trailing dots of a fully
// qualified name. The Unicode form, not the ASCII one, because it is what
// the owners of such addresses type and read: an account shown as
// "xn--bcher-kva.example" would look like another address to its owner and
// to the administrators inviting it. Mail is sent to the domain's ASCII
// form, so it reaches it through a server without SMTPUTF8 as well. A
// domain IDNA refuses (an underscore, an address literal, a broken
// Punycode label) is kept as it came, less those dots: a trailing dot
// names the same host, and an address literal never ends in one.
//
// White space at the end goes with the dots, before IDNA reads the
// domain: Canonical trims it from the address, so a domain ending in
// " ." would otherwise come out ending in " ", and its canonical form
// would be another address again (IDNA refuses "ü .", reads "ü").
func Domain(d string) string {
	d = strings.TrimRightFunc(d, func(r rune) bool { return r == '.' || unicode.IsSpace(r) })
	if u, err := idna.Lookup.ToUnicode(d); err == nil {
		d = strings.TrimRight(u, ".")
	}
	return d
}
