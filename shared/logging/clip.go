package logging

import (
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/clip"
)

// MaxPathBytes bounds a request path as both services record it (access
// lines, error lines, the url.path span attribute). The client chooses its
// length, up to the request header buffer (16 KiB, at the proxy up to 76
// KiB with a large MAX_TOKEN_BYTES): a longer line is split by the
// container runtime (16 KiB per line under containerd and Docker) into
// parts that no longer parse as JSON.
const MaxPathBytes = 2048

// ClipPath returns path as both services record it: each segment that
// holds a credential (HoldsCredential) replaced by RedactedSegment, then
// cut to MaxPathBytes, on a rune boundary when the path is UTF-8 there. It
// allocates only for a path it redacts.
func ClipPath(path string) string {
	if HoldsCredential(path) {
		path = redactSegments(path)
	}
	return clip.String(path, MaxPathBytes)
}

// RedactedSegment stands for a path segment that holds a credential.
const RedactedSegment = "[redacted]"

// minSecretRun is the length of the shortest run of base64url characters
// that is taken for a credential: 256 random bits (a refresh token, a
// one-time link token, an OAuth hand-over code: 43 characters), an API
// key's secret (43 letters and digits), each part of a JWS but a short
// header.
const minSecretRun = 43

// b64url[c]: 1 for a base64url character that is no letter, 2 for a
// lower-case letter, 4 for an upper-case one; 0 for any other byte.
var b64url = func() (t [256]byte) {
	for c := '0'; c <= '9'; c++ {
		t[c] = 1
	}
	t['-'], t['_'] = 1, 1
	for c := 'a'; c <= 'z'; c++ {
		t[c] = 2
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = 4
	}
	return t
}()

// HoldsCredential reports whether s holds something shaped like one of
// the credentials the services issue, so that a client (or an app's own
// links) that puts one in a path does not have it written to the log or a
// span: an API key (tg_, a public id of 16 lower-case letters and digits,
// _), or a run of at least 43 base64url characters with both upper- and
// lower-case letters, which every token of 256 random bits in base64url
// and every part of a JWS but a short header is, and no id, digest in hex,
// UUID or lower-case slug. It does not allocate.
func HoldsCredential(s string) bool {
	run, cases := 0, byte(0)
	for i := 0; i < len(s); i++ {
		k := b64url[s[i]]
		if k == 0 {
			run, cases = 0, 0
			continue
		}
		run++
		cases |= k
		if run >= minSecretRun && cases&6 == 6 {
			return true
		}
		if s[i] == '_' && run >= apikey.HeadLen && apikey.HasHead([]byte(s[i+1-apikey.HeadLen:i+1])) {
			return true
		}
	}
	return false
}

// redactSegments returns path with each segment that HoldsCredential
// replaced by RedactedSegment.
func redactSegments(path string) string {
	b := make([]byte, 0, len(path))
	for start := 0; start <= len(path); {
		end := start
		for end < len(path) && path[end] != '/' {
			end++
		}
		if seg := path[start:end]; HoldsCredential(seg) {
			b = append(b, RedactedSegment...)
		} else {
			b = append(b, seg...)
		}
		if end < len(path) {
			b = append(b, '/')
		}
		start = end + 1
	}
	return string(b)
}

// MaxStackBytes bounds a recovered panic's stack in the log (the `stack`
// of a `panic` line): its first frames, where the panic was raised. A
// panic deep in a recursion has a stack of any size, and a line longer
// than the container runtime's 16 KiB is split into parts that no longer
// parse as JSON.
const MaxStackBytes = 8 << 10

// ClipStack returns stack (debug.Stack's) cut to MaxStackBytes on a
// character boundary, followed by "..." when cut (clip.Mark).
func ClipStack(stack []byte) string {
	// Only what Mark looks at is copied into the string.
	if len(stack) > MaxStackBytes+1 {
		stack = stack[:MaxStackBytes+1]
	}
	return clip.Mark(string(stack), MaxStackBytes)
}
