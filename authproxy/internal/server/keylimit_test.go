package server

import (
	"testing"
	"time"
)

// An IPv6 client is counted by its /64: wrong secrets from one address of
// a /64 lock the key for every address of it (a host is commonly given a
// whole /64), not for another /64; IPv4 addresses count one by one.
func TestKeyLimiterIPv6Prefix(t *testing.T) {
	l := newKeyLimiter(3, time.Minute)
	now := time.Unix(1_800_000_000, 0)
	pid := []byte("abcdefghijklmnop")
	for i, ip := range []string{"2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"} {
		if w := l.locked(pid, []byte(ip), now); w != 0 {
			t.Fatalf("locked before %d failures", i)
		}
		l.fail(pid, []byte(ip), now)
	}
	for _, ip := range []string{"2001:db8:1:2::1", "2001:db8:1:2::99", "2001:db8:1:2:abcd:1:2:3"} {
		if l.locked(pid, []byte(ip), now) == 0 {
			t.Errorf("%s: not locked after 3 failures from its /64", ip)
		}
	}
	for _, ip := range []string{"2001:db8:1:3::1", "192.0.2.1"} {
		if l.locked(pid, []byte(ip), now) != 0 {
			t.Errorf("%s: locked by another /64's failures", ip)
		}
	}
	for _, ip := range []string{"192.0.2.1", "192.0.2.1", "192.0.2.1"} {
		l.fail(pid, []byte(ip), now)
	}
	if l.locked(pid, []byte("192.0.2.1"), now) == 0 || l.locked(pid, []byte("192.0.2.2"), now) != 0 {
		t.Error("IPv4: want the failing address locked, its neighbour not")
	}
}
