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

// An IPv6 address that embeds an IPv4 address (IPv4-mapped, 6to4, NAT64,
// Teredo) counts as that IPv4 address: whoever holds 192.0.2.1 holds all
// 65,536 /64s of 2002:c000:201::/48 and gets no budget per /64 of it.
func TestKeyLimiterEmbeddedIPv4(t *testing.T) {
	l := newKeyLimiter(3, time.Minute)
	now := time.Unix(1_800_000_000, 0)
	pid := []byte("abcdefghijklmnop")
	for _, ip := range []string{"2002:c000:201:1::1", "2002:c000:201:2::1", "::ffff:192.0.2.1"} {
		l.fail(pid, []byte(ip), now)
	}
	for _, ip := range []string{"192.0.2.1", "2002:c000:201:ffff::1", "64:ff9b::c000:201", "2001:0:4136:e378:8000:63bf:3fff:fdfe"} {
		if l.locked(pid, []byte(ip), now) == 0 {
			t.Errorf("%s: not locked after 3 failures from 192.0.2.1's addresses", ip)
		}
	}
	for _, ip := range []string{"192.0.2.2", "2002:c000:202::1", "2001:db8::1"} {
		if l.locked(pid, []byte(ip), now) != 0 {
			t.Errorf("%s: locked by 192.0.2.1's failures", ip)
		}
	}
}
