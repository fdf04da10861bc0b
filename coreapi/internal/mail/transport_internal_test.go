package mail

import (
	"net"
	"testing"
)

// TestParseSMTPURLDials: the server is dialled at the URL's host and port
// (an IPv6 literal in brackets, as net.Dial takes it) with the URL's TLS
// mode, and at no other port: go-mail's port policy used to add port 25
// as a fallback for smtp://, dialled when the port given did not answer,
// and an IPv6 host was dialled as "::1:587", which no dialler takes.
func TestParseSMTPURLDials(t *testing.T) {
	for _, tc := range []struct {
		url, addr, tls string
		ssl            bool
	}{
		{"smtp://mail.example.com", "mail.example.com:587", "TLSOpportunistic", false},
		{"smtp://u:p@127.0.0.1:1025", "127.0.0.1:1025", "TLSOpportunistic", false},
		{"smtp://h:2525?starttls=required", "h:2525", "TLSMandatory", false},
		{"smtp://h:25?starttls=off", "h:25", "NoTLS", false},
		{"smtp://h?starttls=off", "h:587", "NoTLS", false},
		{"smtps://mail.example.com", "mail.example.com:465", "TLSMandatory", true},
		{"smtps://[::1]", "[::1]:465", "TLSMandatory", true},
		{"smtp://[2001:db8::25]:2525", "[2001:db8::25]:2525", "TLSOpportunistic", false},
	} {
		s, err := ParseSMTPURL(tc.url)
		if err != nil {
			t.Fatalf("ParseSMTPURL(%q) = %v", tc.url, err)
		}
		c := smtpClient(t, s)
		if got := c.ServerAddr(); got != tc.addr {
			t.Errorf("%s: dials %q, want %q", tc.url, got, tc.addr)
		}
		if _, _, err := net.SplitHostPort(c.ServerAddr()); err != nil {
			t.Errorf("%s: %v", tc.url, err)
		}
		if fb := unexported(c, "fallbackPort").Int(); fb != 0 {
			t.Errorf("%s: falls back to port %d", tc.url, fb)
		}
		if got := c.TLSPolicy(); got != tc.tls {
			t.Errorf("%s: TLS policy %s, want %s", tc.url, got, tc.tls)
		}
		if got := unexported(c, "useSSL").Bool(); got != tc.ssl {
			t.Errorf("%s: implicit TLS %v, want %v", tc.url, got, tc.ssl)
		}
	}
}
