// Package ids is the one check of a UUID that arrives as text: path
// parameters, query and body fields, identity headers, cursors and the
// command line.
package ids

import "github.com/google/uuid"

// Valid reports whether s is a UUID in its 36-character hyphenated form,
// in either case. The other spellings uuid.Parse accepts (braces,
// "urn:uuid:", 32 bare hex digits) are refused: ids are compared and
// stored as text, and PostgreSQL does not read all of those spellings.
// It does not allocate (it runs on every request's identity headers).
func Valid(s string) bool {
	if len(s) != 36 {
		return false
	}
	_, err := uuid.Parse(s)
	return err == nil
}

// Canonical reports whether s is a UUID as coreapi writes one: Valid, in
// lower case. Ids that arrive signed (the identity headers) are compared
// as text with ids coreapi wrote, so another spelling of one id would
// compare unequal. It does not allocate.
func Canonical(s string) bool {
	if !Valid(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] >= 'A' && s[i] <= 'F' {
			return false
		}
	}
	return true
}

// Parse returns s in canonical lower case if Valid(s).
func Parse(s string) (string, bool) {
	if !Valid(s) {
		return "", false
	}
	return uuid.MustParse(s).String(), true
}
