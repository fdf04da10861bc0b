package httpapi

import "testing"

// TestMethodName: the standard methods are their constants (kept as metric
// labels, they must not alias the request buffer), others are copies.
func TestMethodName(t *testing.T) {
	buf := []byte("GET")
	m := methodName(string(buf))
	if m != "GET" {
		t.Fatalf("methodName(GET) = %q", m)
	}
	buf2 := []byte("PROPFIND")
	s := unsafeString(buf2)
	got := methodName(s)
	buf2[0] = 'X'
	if got != "PROPFIND" {
		t.Fatalf("methodName(PROPFIND) aliases its argument: %q", got)
	}
}
