//go:build unix

package fasttransport

import (
	"net"
	"syscall"
)

// errAgain is a read's answer when the socket has nothing to read.
var errAgain error = syscall.EAGAIN

// wrap makes a dialed socket an upstreamConn; any other connection (one
// a custom dial function made TLS itself) is kept as it is, and not looked
// at between exchanges.
func wrap(c net.Conn, isTLS bool) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return newUpstreamConn(c, raw, isTLS)
}

// readNow reads fd once without blocking (Go's sockets are non-blocking):
// syscall.EAGAIN when there is nothing.
func readNow(fd uintptr, p []byte) (int, error) {
	for {
		n, err := syscall.Read(int(fd), p)
		if err != syscall.EINTR {
			return max(n, 0), err
		}
	}
}
