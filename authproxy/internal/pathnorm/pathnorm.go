// Package pathnorm puts a request path into the one canonical form that the
// proxy matches its rules against and forwards: the escapes of characters a
// path may hold as they are (unreserved, sub-delims but ';', ':' and '@')
// percent-decoded, every other escape upper-cased, dot segments resolved
// (including encoded ones), duplicate and trailing slashes removed. Paths
// that could be read differently by the upstream (an encoded '/', a '\',
// a raw ';', a segment ending in '.' or a space, an NTFS stream or 8.3
// short name, an ASP.NET cookieless segment, a NUL or another control
// character, a broken escape) are refused.
package pathnorm

import (
	"bytes"
	"errors"
)

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
	// ErrStream: a segment naming an NTFS data stream: a ':' followed by
	// '$' ("/admin::$DATA", "/admin:$DATA", "/admin::$INDEX_ALLOCATION",
	// "/admin:x:$DATA") or ending the segment ("/admin:", "/admin::").
	// A file server on Windows opens "admin::$DATA" as the file admin,
	// while the rules would match another route. A ':' followed by
	// anything else ("/v1/things/abc:activate", "/ips/fe80::1") passes:
	// on NTFS it names another stream than the file's, never the file.
	ErrStream = errors.New("pathnorm: a path segment names an NTFS data stream (':$' or a ':' ending it; Windows servers read the file before the ':')")
	// ErrShortName: a segment of the shape of a Windows 8.3 short name
	// (1 to 6 characters, '~', a digit 1-9 and maybe more digits, at most
	// 8 before an optional '.' and 1 to 3 characters: "ADMINI~1",
	// "WEB~1.CON"). A file server on an NTFS volume that keeps short names
	// opens "/ADMINI~1/x" as /administration/x, while the rules would
	// match another route. The characters counted are those the server
	// decodes: "AB%5ECD~1" is AB^CD~1, a short name, and so is a stem of
	// six escaped UTF-8 characters. "~alice", "~1", "a~1b" and "a%20~1"
	// (a short name holds no space) pass.
	ErrShortName = errors.New("pathnorm: a path segment has the shape of a Windows 8.3 short name (NAME~1, NAME~1.EXT; some servers read it as a longer name)")
	// ErrCookieless: a segment of the shape of ASP.NET's cookieless
	// tickets, "(S(...))", "(A(...)F(...))": a letter and a value in
	// parentheses, once or more, all in parentheses. ASP.NET's filter on
	// IIS takes such a segment out of the path before anything routes it
	// (whatever the application's session settings), so "/(S(x))/admin"
	// is /admin to it, while the rules would match "/" or another route
	// than /admin's.
	ErrCookieless = errors.New("pathnorm: a path segment has the shape of an ASP.NET cookieless ticket ((S(...)); IIS removes it and reads the rest of the path)")
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

// The classes of the bytes of a path for normal (plainClass): one load
// and one test a byte for most of them.
const (
	plainPlain = iota // passes without a look at its segment
	plainSlash        // '/': ends a segment
	plainColon        // ':': passes unless before a '$' or a segment's end
	plainNot          // for the slow path: not a pathChar, '~' (shortName) or '(' (cookieless)
)

// plainClass is each byte's class for normal (TestNormalByClass).
var plainClass = func() (t [256]uint8) {
	for c := range 256 {
		switch {
		case c == '/':
			t[c] = plainSlash
		case c == ':':
			t[c] = plainColon
		case !pathChars[c] || c == '~' || c == '(':
			t[c] = plainNot
		}
	}
	return t
}()

// normal reports whether raw (starting with '/') is its own normal form:
// only bytes allowed raw in a path (so no escapes), no empty segment nor
// one ending in '.' (".", "..", or one appendSlow refuses), no '~', no '('
// and no ':' before a '$' or a segment's end (the segments appendSlow may
// refuse as Windows or ASP.NET aliases), and no trailing slash unless it
// is "/". Every routed request's path is read so: each byte's class
// (plainClass) decides, most bytes' in one test.
func normal(raw []byte) bool {
	seg := 1 // start of the current segment
	for i := 1; i < len(raw); i++ {
		switch plainClass[raw[i]] {
		case plainPlain:
		case plainSlash:
			if emptyOrDotEnd(raw[seg:i]) {
				return false
			}
			seg = i + 1
		case plainColon:
			if i+1 == len(raw) || raw[i+1] == '$' || raw[i+1] == '/' {
				return false // for the slow path to judge
			}
		default:
			return false // '~', '(' and what is no pathChar: for the slow path
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

// ntfsStream reports whether seg holds a ':' followed by '$' or ending it.
func ntfsStream(seg []byte) bool {
	for i, c := range seg {
		if c == ':' && (i+1 == len(seg) || seg[i+1] == '$') {
			return true
		}
	}
	return false
}

// shortName reports whether seg (as appendSlow's first pass leaves it:
// the characters a path may hold raw decoded, every other byte as an
// upper-case "%XX") has the shape of an 8.3 short name that Windows
// generates: a stem of 1 to 6 characters other than '.', '~' or ':', then
// '~', a digit 1-9 and maybe more digits, at most 8 characters in all,
// then nothing or '.' and 1 to 3 characters other than '.', '~' or ':'.
// The characters are those the server reads after it decodes the path:
// an escape is one character ("AB%5ECD~1" is AB^CD~1, a short name), and
// the bytes of one UTF-8 character are one. An escape of a character that
// a short name never holds (a space, '"', '<', '>', '[', ']', '|') makes
// the segment no short name ("a%20~1" is no alias of anything).
func shortName(seg []byte) bool {
	t := bytes.IndexByte(seg, '~')
	if t < 1 || t+2 > len(seg) || seg[t+1] < '1' || seg[t+1] > '9' {
		return false
	}
	n, ok := shortChars(seg[:t])
	if !ok || n > 6 {
		return false
	}
	end := t + 2
	for end < len(seg) && seg[end] >= '0' && seg[end] <= '9' {
		end++
	}
	if n+end-t > 8 {
		return false
	}
	if end == len(seg) {
		return true
	}
	ext := seg[end:]
	if ext[0] != '.' {
		return false
	}
	n, ok = shortChars(ext[1:])
	return ok && n >= 1 && n <= 3 && bytes.IndexByte(ext[1:], '~') < 0
}

// shortChars counts the characters of part (a short name's stem or
// extension, escapes as appendSlow leaves them) and reports whether a
// short name could hold each: no '.', ':' nor an escape of a character
// outside the 8.3 set. The escapes that may stand in a short name are
// those of '#', '%', '^', '`', '{', '}' and of non-ASCII bytes, whose
// continuation bytes (0x80-0xBF) add no character.
func shortChars(part []byte) (n int, ok bool) {
	for i := 0; i < len(part); i++ {
		c := part[i]
		switch {
		case c == '.' || c == ':':
			return 0, false
		case c == '%' && i+2 < len(part):
			hi, _ := unhex(part[i+1])
			lo, _ := unhex(part[i+2])
			v := hi<<4 | lo
			i += 2
			switch {
			case v >= 0x80 && v < 0xc0:
				continue // a UTF-8 continuation byte: the same character
			case v >= 0x80, v == '#', v == '%', v == '^', v == '`', v == '{', v == '}':
			default:
				return 0, false
			}
		case c == '%':
			return 0, false
		}
		n++
	}
	return n, true
}

// cookieless reports whether seg (as appendSlow's first pass leaves it:
// '(' and ')' decoded) has the shape of ASP.NET's cookieless tickets: '(',
// then one or more of a letter, '(', a value without parentheses and ')',
// then ')'. "(S(abc))" and "(A(x)S(y))" have it; "(x)", "Foo_(bar)" and
// "(S(x)" do not.
func cookieless(seg []byte) bool {
	if len(seg) < len("(S())") || seg[0] != '(' || seg[len(seg)-1] != ')' {
		return false
	}
	in := seg[1 : len(seg)-1]
	for len(in) > 0 {
		c := in[0] | 0x20
		if c < 'a' || c > 'z' || len(in) < 3 || in[1] != '(' {
			return false
		}
		end := bytes.IndexByte(in[2:], ')')
		if end < 0 || bytes.IndexByte(in[2:2+end], '(') >= 0 {
			return false
		}
		in = in[2+end+1:]
	}
	return true
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
		if ntfsStream(seg) {
			return dst[:start], ErrStream
		}
		if shortName(seg) {
			return dst[:start], ErrShortName
		}
		if cookieless(seg) {
			return dst[:start], ErrCookieless
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
