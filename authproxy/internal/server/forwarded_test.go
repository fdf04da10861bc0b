package server

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// xffServer trusts 10.0.0.0/8 and fd00::/8, the trusted peer being
// 10.0.0.1.
func xffServer() *Server {
	return &Server{d: Deps{TrustedCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}}}
}

var xffPeer = netip.MustParseAddr("10.0.0.1")

func TestForwardedClient(t *testing.T) {
	s := xffServer()
	for _, tc := range []struct{ xff, want string }{
		{"", "10.0.0.1"},
		{"203.0.113.7", "203.0.113.7"},
		{"203.0.113.7, 10.0.0.2", "203.0.113.7"},
		{"6.6.6.6, 203.0.113.7, 10.0.0.2,10.0.0.3", "203.0.113.7"},
		{"203.0.113.7:4000", "203.0.113.7"},
		{"[2001:db8::2]:443", "2001:db8::2"},
		{"::ffff:203.0.113.8", "203.0.113.8"},
		{"not-an-address, 203.0.113.7", "203.0.113.7"},
		{"203.0.113.7, not-an-address", "10.0.0.1"},
		{"203.0.113.7, 10.0.0.9, not-an-address, 10.0.0.2", "10.0.0.2"},
		{" \t203.0.113.7\t ,", "10.0.0.1"},
		{",203.0.113.7", "203.0.113.7"},
		// A zone names an interface of the host that wrote it, no address
		// another host can reach: the hop does not parse.
		{"fe80::1%eth0", "10.0.0.1"},
		{"[fe80::1%eth0]:80", "10.0.0.1"},
		{"203.0.113.7, fd00::1%x", "10.0.0.1"},
		{"203.0.113.7, fd00::1", "203.0.113.7"},
	} {
		if got := s.forwardedClient([]byte(tc.xff), xffPeer); got.String() != tc.want {
			t.Errorf("forwardedClient(%q) = %s, want %s", tc.xff, got, tc.want)
		}
	}
}

// FuzzForwardedClient: the client behind a trusted peer is the rightmost
// X-Forwarded-For hop that is not itself trusted, the walk ending at the
// first hop that is not an address (with or without a port); the result is
// always a valid, unmapped address without a zone, whose text is the
// client IP the proxy signs and rate limits on.
func FuzzForwardedClient(f *testing.F) {
	for _, s := range []string{
		"", "203.0.113.7", "203.0.113.7, 10.0.0.2", "6.6.6.6, 203.0.113.21:4000", "203.0.113.22, 10.0.0.5:8080",
		"not-an-address, 203.0.113.23", "203.0.113.24, not-an-address", "[2001:db8::2]:443", "::ffff:203.0.113.8",
		"fe80::1%eth0", "[fe80::1%25eth0]:80", ",,", " \t, \t", "fd00::1, ::ffff:10.0.0.3",
	} {
		f.Add(s)
	}
	s := xffServer()
	f.Fuzz(func(t *testing.T, xff string) {
		got := s.forwardedClient([]byte(xff), xffPeer)
		if !got.IsValid() || got != got.Unmap() || got.Zone() != "" {
			t.Fatalf("forwardedClient(%q) = %v: not a plain address", xff, got)
		}
		// The walk as the doc says it, on the hops split out.
		want := xffPeer
		hops := strings.Split(xff, ",")
		for i := len(hops) - 1; i >= 0; i-- {
			hop := strings.Trim(hops[i], " \t")
			a, err := netip.ParseAddr(hop)
			if err != nil {
				ap, perr := netip.ParseAddrPort(hop)
				if perr != nil {
					break
				}
				a = ap.Addr()
			}
			if a.Zone() != "" {
				break
			}
			want = a.Unmap()
			if !s.isTrusted(want) {
				break
			}
		}
		if got != want {
			t.Fatalf("forwardedClient(%q) = %v, want %v", xff, got, want)
		}
	})
}

// A trusted peer's X-Forwarded-Prefix value is a list of paths, joined
// into one in order; a stripped route's prefix then follows.
func TestAppendOuterPrefixes(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"/", ""},
		{"/shop", "/shop"},
		{"/shop/", "/shop"},
		{"/shop//", "/shop"},
		{"shop", "/shop"},
		{"/eu,/shop", "/eu/shop"},
		{" /eu , /shop/ ", "/eu/shop"},
		{"/eu,,/,\t,/shop", "/eu/shop"},
		{"/a/b,c/", "/a/b/c"},
	} {
		if got := string(appendOuterPrefixes([]byte("x"), []byte(tc.in))); got != "x"+tc.want {
			t.Errorf("appendOuterPrefixes(%q) = %q, want %q", tc.in, got, "x"+tc.want)
		}
	}
}

// From a trusted peer, its X-Forwarded-Prefix lines and the stripped
// prefix become one line.
func TestForwardedPrefixTrustedLines(t *testing.T) {
	var h fasthttp.RequestHeader
	if err := h.Read(bufioReader("GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-Prefix: /eu\r\nx-forwarded-prefix: /shop/\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	h.DisableNormalizing() // as forward does
	(&Server{}).setForwardedPrefix(&h, &state{trusted: true}, []byte("/billing"), false)
	if got := h.PeekAll("X-Forwarded-Prefix"); len(got) != 1 || string(got[0]) != "/eu/shop/billing" {
		t.Fatalf("X-Forwarded-Prefix lines %q, want one: /eu/shop/billing", got)
	}
}
