// Package safeid checks short identifiers that arrive from outside and end
// up in logs, headers and lookups (request ids, JWT key ids): only
// characters that cannot forge a log line, split a header or name a path.
package safeid

// Valid reports whether s has 1..max characters, each from
// [A-Za-z0-9._:-].
func Valid(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}
