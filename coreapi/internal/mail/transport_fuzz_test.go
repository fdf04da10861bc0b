package mail

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseSMTPURL builds an SMTP_URL from a scheme, a user with a
// password, a host, a port and a query. A URL ParseSMTPURL accepts is
// dialled once, at the host and port written (the default port of the
// scheme when none is), and never at another port (dialsOf; the TLS
// modes are TestSendTLSModes's); a refused one's error never holds the
// password.
func FuzzParseSMTPURL(f *testing.F) {
	const secret = "Zq9Secret7"
	for _, c := range []struct{ scheme, user, host, port, query string }{
		{"smtp", "", "127.0.0.1", "1025", ""}, {"smtp", "user", "mail.example.com", "", ""}, {"smtps", "", "mail.example.com", "", ""},
		{"smtp", "", "mail.example.com", "587", "?starttls=required"}, {"smtp", "", "h", "25", "?starttls=off"},
		{"smtp", "", "h", "0", ""}, {"smtp", "", "h", "99999", ""}, {"smtp", "", "h", "x", ""}, {"smtp", "", "h", "", "?starttls=maybe"},
		{"http", "u", "mail.example.com", "", ""}, {"smtp", "", "", "", ""}, {"smtps", "u", "[::1]", "465", ""},
		{"smtp", "u", "[fe80::1%25eth0]", "2525", "?starttls=auto"}, {"SMTP", "u", "h", "0025", ""}, {"smtp", "u@x", "h", "", "#f"},
	} {
		f.Add(c.scheme, c.user, c.host, c.port, c.query)
	}
	f.Fuzz(func(t *testing.T, scheme, user, host, port, query string) {
		if strings.Contains(scheme+user+host+port+query, secret[:3]) {
			return
		}
		raw := scheme + "://" + user + ":" + secret + "@" + host
		if port != "" {
			raw += ":" + port
		}
		raw += query
		s, err := ParseSMTPURL(raw)
		if err != nil {
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("ParseSMTPURL(%q) = %v", raw, err)
			}
			return
		}
		if scheme = strings.ToLower(scheme); scheme != "smtp" && scheme != "smtps" {
			t.Fatalf("ParseSMTPURL(%q) accepted the scheme %q", raw, scheme)
		}
		dials := dialsOf(t, s)
		if len(dials) != 1 {
			t.Fatalf("ParseSMTPURL(%q): dials %q, want one address", raw, dials)
		}
		h, p, err := net.SplitHostPort(dials[0])
		if err != nil {
			t.Fatalf("ParseSMTPURL(%q): dials %q: %v", raw, dials[0], err)
		}
		if strings.ContainsAny(user+host+port, "/?#@\\") || strings.ContainsAny(user, ":") || strings.Contains(host, "%") ||
			query != "" && query[0] != '?' && query[0] != '#' {
			return // the parts are not where they were written
		}
		if want := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"); h != want {
			t.Fatalf("ParseSMTPURL(%q): dials host %q", raw, h)
		}
		want := map[string]int{"smtp": 587, "smtps": 465}[scheme]
		if port != "" {
			want, _ = strconv.Atoi(port)
		}
		if p != strconv.Itoa(want) {
			t.Fatalf("ParseSMTPURL(%q): dials port %s, want %d", raw, p, want)
		}
	})
}
