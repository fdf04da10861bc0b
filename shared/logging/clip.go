package logging

import "unicode/utf8"

// MaxPathBytes bounds a request path as both services record it (access
// lines, error lines, the url.path span attribute). The client chooses its
// length, up to the request header buffer (16 KiB, at the proxy up to 76
// KiB with a large MAX_TOKEN_BYTES): a longer line is split by the
// container runtime (16 KiB per line under containerd and Docker) into
// parts that no longer parse as JSON.
const MaxPathBytes = 2048

// ClipPath returns path cut to MaxPathBytes, on a rune boundary when the
// path is UTF-8 there; it does not allocate.
func ClipPath(path string) string {
	return clip(path, MaxPathBytes)
}

// clip returns s cut to n bytes, on a rune boundary when s is UTF-8
// there.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for i := n; i > n-utf8.UTFMax && i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			n = i
			break
		}
	}
	return s[:n]
}
