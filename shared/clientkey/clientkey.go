// Package clientkey names the client an address belongs to, for the
// per-client limits of both services: an IPv4 address is itself, an IPv6
// address is its /64 (what one customer line or host is given, which can
// pick any of its 2^64 addresses for each request), and an IPv6 address
// that embeds an IPv4 address (IPv4-mapped, 6to4, the NAT64 well-known
// prefix, Teredo) is that IPv4 address: whoever holds one IPv4 address
// holds all 65,536 /64s of its 6to4 /48, and so would hold as many
// budgets if they counted by the /64.
package clientkey

import "net/netip"

var (
	sixToFour = netip.MustParsePrefix("2002::/16")
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	teredo    = netip.MustParsePrefix("2001::/32")
)

// Prefix is the client a (without zone) belongs to: an IPv4 address, or
// an IPv4 address embedded in a, as a /32 of that IPv4 address; any other
// IPv6 address as its /64. It does not allocate.
//
//   - IPv4-mapped (::ffff:a.b.c.d) and NAT64 well-known prefix
//     (64:ff9b::a.b.c.d, RFC 6052) addresses carry it in their last 32
//     bits; every IPv4 address is in the NAT64 prefix's one /64, so the
//     /64 would also make all its clients one.
//   - 6to4 (2002:AABB:CCDD::/48, RFC 3056) carries it in bits 16-47.
//   - Teredo (2001:0:SSSS:SSSS:FLAG:PORT:CCCC:CCCC, RFC 4380) carries its
//     server's IPv4 address in bits 32-63 and, inverted, the client's
//     public IPv4 address (the one its relays send to) in bits 96-127:
//     the client's is the key. Keying by the server too would give a
//     client one budget per Teredo server it chose to name.
func Prefix(a netip.Addr) netip.Prefix {
	a = a.WithZone("").Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	b := a.As16()
	switch {
	case nat64.Contains(a):
		return v4(b[12], b[13], b[14], b[15])
	case sixToFour.Contains(a):
		return v4(b[2], b[3], b[4], b[5])
	case teredo.Contains(a):
		return v4(^b[12], ^b[13], ^b[14], ^b[15])
	}
	return netip.PrefixFrom(a, 64).Masked()
}

func v4(a, b, c, d byte) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{a, b, c, d}), 32)
}

// Of is the client the address text ip belongs to (Prefix): an IPv4
// address, embedded or not, as its address ("192.0.2.1"), another IPv6
// address as its /64 ("2001:db8:1:2::/64"), and text that is no address
// ("unknown", "") as it is, a key of its own.
func Of(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	p := Prefix(a)
	if p.Addr().Is4() {
		return p.Addr().String()
	}
	return p.String()
}
