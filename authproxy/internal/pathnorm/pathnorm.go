// Package pathnorm puts a request path into the one canonical form that the
// proxy matches its rules against and forwards: the escapes of characters a
// path may hold as they are (unreserved, sub-delims but ';', ':' and '@')
// percent-decoded, every other escape upper-cased, dot segments resolved
// (including encoded ones), duplicate and trailing slashes removed. Paths
// that could be read differently by the upstream (an encoded '/', a '\',
// a raw ';', a segment ending in '.' or a space, a NUL or another control
// character, a broken escape) are refused.
package pathnorm

import "errors"

// Errors returned by Append. Each means "answer 400, forward nothing".
var (
	ErrNotAbsolute  = errors.New("pathnorm: path does not start with '/'")
	ErrBadEscape    = errors.New("pathnorm: malformed percent escape")
	ErrEncodedSlash = errors.New("pathnorm: encoded '/' or '\\'")
	ErrBackslash    = errors.New("pathnorm: '\\' in path")
	ErrControl      = errors.New("pathnorm: NUL or control character in path")
	// ErrPathParam: a raw ';'. Servlet containers (Tomcat, Jetty, Spring)
	// cut a segment's ";parameters" off before they route, so "/a;x/b"
	// is /a/b to them and "/a/..;/b" is /b, while the rules would match
	// other segments. An encoded ';' (%3B) is a plain character of its
	// segment to every server, and is accepted.
	ErrPathParam = errors.New("pathnorm: ';' in path (send a literal ';' as %3B)")
	// ErrTrailingDot: a segment that ends in '.' or a space, raw or
	// encoded, other than the dot segments "." and "..". Windows (IIS,
	// ASP.NET, a file server on NTFS) and several frameworks drop a
	// segment's trailing dots and spaces, so "/admin." and "/admin%20/x"
	// are /admin and /admin/x to them, while the rules would match
	// another route ("/", or none of /admin's).
	ErrTrailingDot = errors.New("pathnorm: a path segment ends in '.' or a space (some servers drop them and read another path)")
)

const hexUpper = "0123456789ABCDEF"

// Append appends the normalized form of the raw (still percent-encoded)
// path to dst and returns the extended buffer. On error dst is returned
// unchanged in length.
func Append(dst, raw []byte) ([]byte, error) {
	if len(raw) == 0 || raw[0] != '/' {
		return dst, ErrNotAbsolute
	}
	if normal(raw) { // most paths: already in normal form, copied as they are
		return append(dst, raw...), nil
	}
	return appendSlow(dst, raw)
}

// pathChars are the bytes isPathChar accepts.
var pathChars = func() (t [256]bool) {
	for c := range 256 {
		t[c] = isPathChar(byte(c))
	}
	return t
}()

// normal reports whether raw (starting with '/') is its own normal form:
// only bytes allowed raw in a path (so no escapes), no empty segment nor
// one ending in '.' (".", "..", or one appendSlow refuses), and no
// trailing slash unless it is "/".
func normal(raw []byte) bool {
	seg := 1 // start of the current segment
	for i := 1; i < len(raw); i++ {
		c := raw[i]
		if !pathChars[c] {
			return false
		}
		if c == '/' {
			if emptyOrDotEnd(raw[seg:i]) {
				return false
			}
			seg = i + 1
		}
	}
	return len(raw) == 1 || !emptyOrDotEnd(raw[seg:])
}

func emptyOrDotEnd(seg []byte) bool {
	return len(seg) == 0 || seg[len(seg)-1] == '.'
}

// trailingDot reports whether seg (decoded by appendSlow's first pass, a
// space as "%20") ends in '.' or a space and is not a dot segment.
func trailingDot(seg []byte) bool {
	n := len(seg)
	if n >= 3 && seg[n-3] == '%' && seg[n-2] == '2' && seg[n-1] == '0' {
		return true
	}
	return n > 0 && seg[n-1] == '.' && !(n == 1 || n == 2 && seg[0] == '.')
}

// appendSlow is Append for a path that needs work: escapes decoded or
// canonicalised, segments resolved.
func appendSlow(dst, raw []byte) ([]byte, error) {
	start := len(dst)
	// Pass 1: decode unreserved escapes, canonicalise the others, escape
	// bytes that are not allowed raw in a path.
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '%':
			if i+2 >= len(raw) {
				return dst[:start], ErrBadEscape
			}
			hi, ok1 := unhex(raw[i+1])
			lo, ok2 := unhex(raw[i+2])
			if !ok1 || !ok2 {
				return dst[:start], ErrBadEscape
			}
			v := hi<<4 | lo
			switch {
			case v == '/' || v == '\\':
				return dst[:start], ErrEncodedSlash
			case v < 0x20 || v == 0x7f:
				return dst[:start], ErrControl
			case pathChars[v]:
				// Decoded: "%3A" and ":", "%40" and "@" are one
				// character to Go's ServeMux (it unescapes each
				// segment before it matches), so they must be one to
				// the rules too: else "/v1/notes%3Apurge" took a
				// shorter prefix's route than "/v1/notes:purge" while
				// the app served it as that. Routers that match the
				// path as sent (Express, Fiber) then get this form.
				dst = append(dst, v)
			default:
				dst = append(dst, '%', hexUpper[v>>4], hexUpper[v&15])
			}
			i += 2
		case c == '\\':
			return dst[:start], ErrBackslash
		case c == ';':
			return dst[:start], ErrPathParam
		case c < 0x20 || c == 0x7f:
			return dst[:start], ErrControl
		case pathChars[c]:
			dst = append(dst, c)
		default:
			dst = append(dst, '%', hexUpper[c>>4], hexUpper[c&15])
		}
	}
	// Pass 2, in place: resolve segments. The output is never longer than
	// the decoded input, so writing behind the read position is safe.
	buf := dst[start:]
	w := 0 // write position in buf
	r := 0
	for r < len(buf) {
		// buf[r] == '/' here; skip runs of slashes.
		for r < len(buf) && buf[r] == '/' {
			r++
		}
		if r == len(buf) {
			break
		}
		end := r
		for end < len(buf) && buf[end] != '/' {
			end++
		}
		seg := buf[r:end]
		if trailingDot(seg) {
			return dst[:start], ErrTrailingDot
		}
		switch {
		case len(seg) == 1 && seg[0] == '.':
		case len(seg) == 2 && seg[0] == '.' && seg[1] == '.':
			// Drop the last written segment.
			for w > 0 && buf[w-1] != '/' {
				w--
			}
			if w > 0 {
				w-- // the slash before it
			}
		default:
			buf[w] = '/'
			w++
			w += copy(buf[w:], seg)
		}
		r = end
	}
	if w == 0 {
		buf[0] = '/'
		w = 1
	}
	return dst[:start+w], nil
}

// String is Append for callers that want a string (tests, cold paths).
func String(raw string) (string, error) {
	b, err := Append(nil, []byte(raw))
	return string(b), err
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// isUnreserved is RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~".
func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// isPathChar reports whether c may appear unescaped in a normalized path:
// unreserved, sub-delims but ';' (refused: ErrPathParam), ':', '@' and '/'.
func isPathChar(c byte) bool {
	if isUnreserved(c) {
		return true
	}
	switch c {
	case '!', '$', '&', '\'', '(', ')', '*', '+', ',', '=', ':', '@', '/':
		return true
	}
	return false
}
