// Package clip shortens text that is stored or shown with a size limit
// (user agents, provider names and errors, delivery errors).
package clip

import "unicode/utf8"

// String returns the longest prefix of s of at most n bytes that does not
// end inside a UTF-8 sequence, so valid text stays valid (PostgreSQL
// refuses invalid UTF-8 in a text column).
func String(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
