//go:build linux

// Package refused gives tests a TCP address that refuses connections for
// as long as the test runs.
//
// Listening on port 0 and closing the listener, the usual trick, frees the
// port: another test, or another package's test binary running at the same
// time, may bind it before the connection is tried, and the "closed" port
// then answers. Addr instead binds a socket and never listens on it. Linux
// answers every connection with a reset (ECONNREFUSED), and, since the
// socket holds the port without SO_REUSEADDR, nobody else can bind it until
// the test ends. (BSD lets a listener with SO_REUSEADDR bind the wildcard
// address beside it: off Linux, Addr falls back to a closed listener's
// port.)
package refused

import (
	"net"
	"strconv"
	"syscall"
	"testing"
)

// Addr returns "127.0.0.1:port" for a port that refuses connections until
// the test and its subtests end.
func Addr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0) // no child process inherits the port
	if err != nil {
		t.Fatalf("refused: socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("refused: bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("refused: getsockname: %v", err)
	}
	in4, ok := sa.(*syscall.SockaddrInet4)
	if !ok {
		t.Fatalf("refused: bound to %T", sa)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(in4.Port))
}
