package logging

import "github.com/tollgate-auth/tollgate/shared/clip"

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
	return clip.String(path, MaxPathBytes)
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
