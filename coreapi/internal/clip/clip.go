// Package clip shortens text that is stored or shown with a size limit
// (user agents, provider names and errors, delivery errors).
package clip

import (
	"strings"
	"unicode/utf8"
)

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

// Text is String for text a client sent as raw bytes (an HTTP header):
// invalid UTF-8 becomes U+FFFD and NUL bytes are dropped first, so that
// PostgreSQL stores it instead of failing the request (SQLSTATE 22021).
func Text(s string, n int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return String(strings.ReplaceAll(s, "\x00", ""), n)
}
