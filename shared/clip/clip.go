// Package clip cuts text to a size limit on a character (UTF-8) boundary:
// text stored or shown with a limit (user agents, provider names and
// errors, delivery errors) and log values (paths, errors, stacks).
package clip

import (
	"strings"
	"unicode/utf8"
)

// String returns s cut to at most n bytes. Where s is UTF-8 at the cut, a
// character across it is left out whole, so valid text stays valid
// (PostgreSQL refuses invalid UTF-8 in a text column, and a log line's
// JSON would carry U+FFFD); where it is not (no character starts within
// utf8.UTFMax bytes before the cut), s is cut at n. It does not allocate.
func String(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	for i := n; i > n-utf8.UTFMax && i >= 0; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i]
		}
	}
	return s[:n]
}

// Mark is String followed by "..." when s was cut: a log value that
// shows it is not whole. s of at most n bytes is returned as it is.
func Mark(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return String(s, n) + "..."
}

// Text is String for text that came from outside as raw bytes (an HTTP
// header, a mail server's error): invalid UTF-8 becomes U+FFFD and NUL
// bytes are dropped first, so that PostgreSQL stores it instead of
// failing the statement (SQLSTATE 22021).
func Text(s string, n int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return String(strings.ReplaceAll(s, "\x00", ""), n)
}
