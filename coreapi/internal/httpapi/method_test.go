package httpapi

import "testing"

// TestMethodName: the standard methods are their constants (kept as metric
// labels, they must not alias the request buffer), the other methods the
// server routes are copies, and any other method is _OTHER (a client
// would otherwise choose metric labels).
func TestMethodName(t *testing.T) {
	buf := []byte("GET")
	m := methodName(string(buf))
	if m != "GET" {
		t.Fatalf("methodName(GET) = %q", m)
	}
	buf2 := []byte("TRACE")
	s := unsafeString(buf2)
	got := methodName(s)
	buf2[0] = 'X'
	if got != "TRACE" {
		t.Fatalf("methodName(TRACE) aliases its argument: %q", got)
	}
	for _, m := range []string{"PROPFIND", "get", "BREW"} {
		if got := methodName(m); got != "_OTHER" {
			t.Errorf("methodName(%q) = %q, want _OTHER", m, got)
		}
	}
}
