package forward

import (
	"context"
	"net"
	"slices"
	"time"

	"github.com/valyala/fasthttp"
)

// newDial returns the dialer of one client's connections to its upstream
// (isTLS: an https:// one, whose port defaults to 443). It picks addresses
// as Envoy's V4_PREFERRED lookup family does: an IP address is dialled as
// is, IPv6 included; a host name is dialled on its IPv4 addresses when it
// has any, else on its IPv6 ones. fasthttp's own dial resolves IPv4 only
// (an upstream at [::1], or a name with only AAAA records, failed every
// request with "couldn't find dns entries"), and its dual-stack dial goes
// round the IPv4 and IPv6 addresses alike and stops at the first dial
// that times out, so a name with an unreachable IPv6 address failed some
// requests. Otherwise it is fasthttp's dial: the addresses resolved are
// cached for fasthttp.DefaultDNSCacheDuration, dialled in turn until one
// answers, and the whole dial is bounded by timeout (3 s without one).
func newDial(isTLS bool, r fasthttp.Resolver) fasthttp.DialFuncWithTimeout {
	// The concurrency bound of fasthttp's default dialer.
	d := &fasthttp.TCPDialer{Concurrency: 1000, Resolver: v4Preferred{r}}
	return func(addr string, timeout time.Duration) (net.Conn, error) {
		// The dialer resolves only what v4Preferred keeps: dual stack
		// lets it dial the IPv6 addresses of a name that has no other.
		addr = fasthttp.AddMissingPort(addr, isTLS)
		if timeout > 0 {
			return d.DialDualStackTimeout(addr, timeout)
		}
		return d.DialDualStack(addr)
	}
}

// v4Preferred resolves a host to its IPv4 addresses when it has any, else
// to its IPv6 ones; an IP address resolves to itself.
type v4Preferred struct{ r fasthttp.Resolver }

func (v v4Preferred) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	addrs, err := v.r.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, err
	}
	if v4 := slices.DeleteFunc(slices.Clone(addrs), func(a net.IPAddr) bool { return a.IP.To4() == nil }); len(v4) > 0 {
		return v4, nil
	}
	return addrs, nil
}
