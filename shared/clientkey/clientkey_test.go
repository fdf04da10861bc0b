package clientkey_test

import (
	"net/netip"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/clientkey"
)

// TestOf: an IPv6 client is its /64, and an IPv6 address that embeds an
// IPv4 address (IPv4-mapped, 6to4, NAT64 well-known prefix, Teredo) is
// that IPv4 address, so one IPv4 address is one client however many
// IPv6 addresses it is reachable at.
func TestOf(t *testing.T) {
	for ip, want := range map[string]string{
		"192.0.2.1":            "192.0.2.1",
		"::ffff:192.0.2.1":     "192.0.2.1",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
		"2001:db8:1:2::1%eth0": "2001:db8:1:2::/64",
		"::1":                  "::/64",
		"unknown":              "unknown",
		"":                     "",
		// 6to4: 2002:c000:0201::/48 is 192.0.2.1's, every /64 of it.
		"2002:c000:201::1":           "192.0.2.1",
		"2002:c000:201:ffff:1:2:3:4": "192.0.2.1",
		"2002:c000:201:1234::%eth0":  "192.0.2.1",
		"2002:c000:202::1":           "192.0.2.2",
		"2002:c000:201:ffff::1":      "192.0.2.1",
		// NAT64 well-known prefix (RFC 6052): the last 32 bits.
		"64:ff9b::c000:201":     "192.0.2.1",
		"64:ff9b::198.51.100.7": "198.51.100.7",
		// Teredo (RFC 4380): the client's address, inverted, in the last
		// 32 bits, whatever the server, flags and port.
		"2001:0:4136:e378:8000:63bf:3fff:fdd2": "192.0.2.45",
		"2001:0:cb00:7101:0:ffff:3fff:fdd2":    "192.0.2.45",
		"2001:0:4136:e378:8000:63bf:3fff:fdd1": "192.0.2.46",
		"2001:0:4136:e378:8000:63bf:3fff:fdfe": "192.0.2.1",
		// Near the prefixes but outside them: their /64.
		"2001:1:4136:e378:8000:63bf:3fff:fdd2": "2001:1:4136:e378::/64",
		"64:ff9b:1::c000:201":                  "64:ff9b:1::/64",
		"2003:c000:201::1":                     "2003:c000:201::/64",
	} {
		if got := clientkey.Of(ip); got != want {
			t.Errorf("Of(%q) = %q, want %q", ip, got, want)
		}
	}
}

// TestPrefix: Prefix is Of's client as a prefix, without allocating.
func TestPrefix(t *testing.T) {
	for ip, want := range map[string]string{
		"192.0.2.1":         "192.0.2.1/32",
		"2002:c000:201::1":  "192.0.2.1/32",
		"2001:db8:1:2::1":   "2001:db8:1:2::/64",
		"64:ff9b::c000:201": "192.0.2.1/32",
	} {
		if got := clientkey.Prefix(netip.MustParseAddr(ip)).String(); got != want {
			t.Errorf("Prefix(%s) = %s, want %s", ip, got, want)
		}
	}
	a := netip.MustParseAddr("2002:c000:201::1")
	if n := testing.AllocsPerRun(100, func() { _ = clientkey.Prefix(a) }); n != 0 {
		t.Errorf("Prefix allocates %v times", n)
	}
}
