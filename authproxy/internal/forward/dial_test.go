package forward

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/eventually"
)

// hosts resolves the names it holds, as a DNS server would.
type hosts map[string][]net.IPAddr

func (h hosts) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IPAddr{{IP: ip}}, nil
	}
	if a, ok := h[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// counted accepts connections on ln, counting them, until the test ends.
func counted(t *testing.T, ln net.Listener) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return &n
}

// TestDialV4Preferred: newDial dials an IP address as is, a name on its
// IPv4 addresses when it has any (every time, though it has an IPv6 one
// too), and a name with only IPv6 addresses on those. Listeners on the
// same port of 127.0.0.1 and [::1] count where the dials arrive.
func TestDialV4Preferred(t *testing.T) {
	var ln4, ln6 net.Listener
	for range 20 { // a port free on both loopbacks
		l4, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l6, err := net.Listen("tcp6", net.JoinHostPort("::1", strconv.Itoa(l4.Addr().(*net.TCPAddr).Port)))
		if err == nil {
			ln4, ln6 = l4, l6
			break
		}
		l4.Close()
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Skipf("no IPv6 loopback: %v", err)
		}
	}
	if ln4 == nil {
		t.Fatal("no port free on both 127.0.0.1 and [::1]")
	}
	v4, v6 := counted(t, ln4), counted(t, ln6)
	port := strconv.Itoa(ln4.Addr().(*net.TCPAddr).Port)
	dial := newDial(false, hosts{
		"both.test":   {{IP: net.ParseIP("::1")}, {IP: net.ParseIP("127.0.0.1")}},
		"v6only.test": {{IP: net.ParseIP("::1")}},
	})
	for _, tc := range []struct {
		host   string
		v4, v6 int64 // connections of 4 dials
	}{
		{"127.0.0.1", 4, 0},
		{"::1", 0, 4},
		{"both.test", 4, 0},
		{"v6only.test", 0, 4},
	} {
		t.Run(tc.host, func(t *testing.T) {
			b4, b6 := v4.Load(), v6.Load()
			for range 4 {
				c, err := dial(net.JoinHostPort(tc.host, port), time.Second)
				if err != nil {
					t.Fatalf("dial %s: %v", tc.host, err)
				}
				c.Close()
			}
			// Each dial is accepted on one listener or the other.
			eventually.Within(t, 5*time.Second, func() error {
				if g4, g6 := v4.Load()-b4, v6.Load()-b6; g4 != tc.v4 || g6 != tc.v6 {
					return fmt.Errorf("connections over IPv4 %d, IPv6 %d; want %d, %d", g4, g6, tc.v4, tc.v6)
				}
				return nil
			})
		})
	}
	if _, err := dial("gone.test:80", time.Second); !errors.As(err, new(*net.DNSError)) {
		t.Fatalf("dial of an unknown name: %v, want a DNS error", err)
	}
}
