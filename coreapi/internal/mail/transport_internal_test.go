package mail

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// TestSendDialsTheURLsAddress: Send connects to the URL's host and port
// and delivers there, for an IPv4 literal, an IPv6 literal (dialled in
// brackets: "::1:port" is no address a dialler takes) and a name. Each
// mail is one session at the listener the URL names.
func TestSendDialsTheURLsAddress(t *testing.T) {
	for _, tc := range []struct{ listen, host string }{
		{"127.0.0.1:0", "127.0.0.1"},
		{"[::1]:0", "[::1]"},
		{"127.0.0.1:0", "localhost"},
	} {
		t.Run(tc.host, func(t *testing.T) {
			r := startResponder(t, tc.listen, false, false)
			url := "smtp://" + tc.host + ":" + r.port()
			if err := mustParse(t, url).Send(context.Background(), testMail); err != nil {
				t.Fatalf("Send through %s = %v", url, err)
			}
			if ss := r.sessions(); len(ss) != 1 || !ss[0].delivered {
				t.Errorf("Send through %s: sessions %+v; want one, the mail delivered", url, ss)
			}
		})
	}
}

// TestParseSMTPURLDialsOnlyItsAddress: the server is dialled at the URL's
// host and port (the scheme's default port when none is written), once,
// and at no other port: go-mail's port policy used to add port 25 as a
// fallback for smtp://, dialled when the port given did not answer. The
// dialler here refuses every connection, so each URL's dials are all that
// Send makes of it.
func TestParseSMTPURLDialsOnlyItsAddress(t *testing.T) {
	for _, tc := range []struct{ url, addr string }{
		{"smtp://mail.example.com", "mail.example.com:587"},
		{"smtp://u:p@127.0.0.1:1025", "127.0.0.1:1025"},
		{"smtp://h:2525?starttls=required", "h:2525"},
		{"smtp://h:25?starttls=off", "h:25"},
		{"smtp://h?starttls=off", "h:587"},
		{"smtps://mail.example.com", "mail.example.com:465"},
		{"smtps://[::1]", "[::1]:465"},
		{"smtp://[2001:db8::25]:2525", "[2001:db8::25]:2525"},
	} {
		if got := dialsOf(t, mustParse(t, tc.url)); !slices.Equal(got, []string{tc.addr}) {
			t.Errorf("%s: dials %q, want %q only", tc.url, got, tc.addr)
		}
	}
}

// TestSendTLSModes: the URL's TLS mode, seen from the server. smtp://
// uses STARTTLS when the server offers it; ?starttls=required refuses a
// server that does not, before any mail is named; ?starttls=off never
// issues STARTTLS; smtps:// opens with a TLS handshake instead of waiting
// for the server's greeting. The server here answers STARTTLS with 454
// (the tests need to know only that it was asked for), which fails the
// session before the mail.
func TestSendTLSModes(t *testing.T) {
	for _, tc := range []struct {
		name, scheme, query string
		offer               bool // the server offers STARTTLS
		starttls            bool // the client issues STARTTLS
		sent                bool // Send succeeds, the mail delivered
	}{
		{"auto, offered", "smtp", "", true, true, false},
		{"auto, not offered", "smtp", "", false, false, true},
		{"auto named, offered", "smtp", "?starttls=auto", true, true, false},
		{"required, offered", "smtp", "?starttls=required", true, true, false},
		{"required, not offered", "smtp", "?starttls=required", false, false, false},
		{"off, offered", "smtp", "?starttls=off", true, false, true},
		{"off, not offered", "smtp", "?starttls=off", false, false, true},
		{"implicit TLS", "smtps", "", false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startResponder(t, "127.0.0.1:0", tc.offer, tc.scheme == "smtps")
			url := tc.scheme + "://127.0.0.1:" + r.port() + tc.query
			err := mustParse(t, url).Send(context.Background(), testMail)
			if (err == nil) != tc.sent {
				t.Fatalf("Send through %s = %v, want it sent: %v", url, err, tc.sent)
			}
			ss := r.sessions()
			if len(ss) != 1 {
				t.Fatalf("%s: %d sessions, want 1", url, len(ss))
			}
			s := ss[0]
			if s.tlsHello != (tc.scheme == "smtps") {
				t.Errorf("%s: opened with a TLS handshake: %v", url, s.tlsHello)
			}
			if tc.scheme == "smtps" {
				if len(s.cmds) != 0 {
					t.Errorf("%s: sent %q in plain SMTP", url, s.cmds)
				}
				return
			}
			if len(s.cmds) == 0 || s.cmds[0] != "EHLO" {
				t.Errorf("%s: commands %q, want EHLO first", url, s.cmds)
			}
			if s.has("STARTTLS") != tc.starttls {
				t.Errorf("%s: issued STARTTLS %v, want %v (commands %q)", url, s.has("STARTTLS"), tc.starttls, s.cmds)
			}
			// A session that fails names no mail: no MAIL FROM, no RCPT TO.
			if s.has("MAIL") != tc.sent || s.has("RCPT") != tc.sent || s.delivered != tc.sent {
				t.Errorf("%s: commands %q, delivered %v; want the mail sent %v", url, s.cmds, s.delivered, tc.sent)
			}
		})
	}
}

// testMail is a mail the responder takes.
var testMail = Outgoing{From: "no-reply@example.com", MessageID: "<1@example.com>",
	Rendered: Rendered{To: "ada@example.com", Subject: "hello", Text: "hello", HTML: "<p>hello</p>"}}

func mustParse(t *testing.T, url string) *SMTP {
	t.Helper()
	s, err := ParseSMTPURL(url)
	if err != nil {
		t.Fatalf("ParseSMTPURL(%q) = %v", url, err)
	}
	return s
}

// errNotDialled is what dialsOf's dialler answers every dial with.
var errNotDialled = errors.New("not dialled (the test)")

// dialsOf is every address Send through s dials, in order, with a
// dialler that refuses each one (so that nothing is reached and a
// fallback, were there one, would be dialled too).
func dialsOf(t testing.TB, s *SMTP) []string {
	t.Helper()
	var dials []string
	rec := *s
	rec.opts = append(slices.Clip(s.opts), gomail.WithDialContextFunc(func(_ context.Context, network, addr string) (net.Conn, error) {
		dials = append(dials, addr)
		return nil, errNotDialled
	}))
	if err := rec.Send(context.Background(), testMail); !errors.Is(err, errNotDialled) {
		t.Fatalf("Send with a dialler that refuses = %v, want its refusal", err)
	}
	return dials
}

// responder is a minimal SMTP server: it greets, answers EHLO (offering
// STARTTLS when told), answers STARTTLS with 454, takes MAIL, RCPT and
// DATA, and keeps what each session sent, each command before it answers
// it: once Send has returned, its session holds all it sent. With
// implicitTLS it does not greet: it reads the client's first bytes, a TLS
// handshake record from a client that speaks TLS first, and hangs up.
type responder struct {
	ln          net.Listener
	offer       bool
	implicitTLS bool

	mu   sync.Mutex
	seen []*session
}

// session is what one connection to the responder sent.
type session struct {
	cmds      []string // the commands' verbs, in order
	delivered bool     // a message ended with "." (and was answered 250)
	tlsHello  bool     // the client spoke first, with a TLS handshake record
}

// has reports whether the session sent the command verb.
func (s session) has(verb string) bool { return slices.Contains(s.cmds, verb) }

func startResponder(t *testing.T, addr string, offerSTARTTLS, implicitTLS bool) *responder {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	r := &responder{ln: ln, offer: offerSTARTTLS, implicitTLS: implicitTLS}
	var conns sync.Map
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, nil)
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		// go-mail leaves a connection open when the session fails
		// before the mail (a STARTTLS refused): close them all.
		_ = ln.Close()
		conns.Range(func(c, _ any) bool { _ = c.(net.Conn).Close(); return true })
		wg.Wait()
	})
	return r
}

func (r *responder) port() string {
	return strconv.Itoa(r.ln.Addr().(*net.TCPAddr).Port)
}

// sessions is what each connection sent so far.
func (r *responder) sessions() []session {
	r.mu.Lock()
	defer r.mu.Unlock()
	ss := make([]session, len(r.seen))
	for i, s := range r.seen {
		ss[i] = *s
		ss[i].cmds = slices.Clone(s.cmds)
	}
	return ss
}

func (r *responder) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	s := &session{}
	r.mu.Lock()
	r.seen = append(r.seen, s)
	r.mu.Unlock()
	record := func(f func()) {
		r.mu.Lock()
		f()
		r.mu.Unlock()
	}
	if r.implicitTLS {
		// A TLS record: content type 22 (handshake), version 3.x.
		b := make([]byte, 2)
		_, err := io.ReadFull(c, b)
		record(func() { s.tlsHello = err == nil && b[0] == 22 && b[1] == 3 })
		return
	}
	in := bufio.NewReader(c)
	reply := func(lines ...string) bool {
		_, err := io.WriteString(c, strings.Join(lines, "\r\n")+"\r\n")
		return err == nil
	}
	if !reply("220 responder ESMTP") {
		return
	}
	for {
		line, err := in.ReadString('\n')
		if err != nil {
			return
		}
		verb, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		verb = strings.ToUpper(verb)
		record(func() { s.cmds = append(s.cmds, verb) })
		ok := true
		switch verb {
		case "EHLO":
			if r.offer {
				ok = reply("250-responder", "250 STARTTLS")
			} else {
				ok = reply("250 responder")
			}
		case "STARTTLS":
			ok = reply("454 4.7.0 TLS not available (the test)")
		case "DATA":
			if ok = reply("354 go on"); !ok {
				break
			}
			for {
				l, err := in.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			record(func() { s.delivered = true })
			ok = reply("250 2.0.0 taken")
		case "QUIT":
			reply("221 bye")
			return
		default:
			ok = reply("250 ok")
		}
		if !ok {
			return
		}
	}
}

// TestHostOfIsAMessageIDDomain: the domain of Message-IDs, taken from the
// verification link's host, is one RFC 5322 takes after a msg-id's '@' in
// ASCII: a Unicode host (PUBLIC_BASE_URL=https://bücher.example) in its
// ASCII form, which went out as raw UTF-8 (valid only with SMTPUTF8), and
// an IPv6 address in brackets, whose colons no dot-atom holds.
func TestHostOfIsAMessageIDDomain(t *testing.T) {
	for in, want := range map[string]string{
		"https://auth.example.com/verify?t={token}": "auth.example.com",
		"https://auth.example.com:8443/verify":      "auth.example.com",
		"https://Bücher.example/verify":             "xn--bcher-kva.example",
		"https://bücher.example./verify":            "xn--bcher-kva.example",
		"http://127.0.0.1:8080/verify":              "127.0.0.1",
		"http://[::1]:8080/verify":                  "[::1]",
		"http://[2001:db8::1]/verify":               "[2001:db8::1]",
		"":                                          "localhost",
		"/verify":                                   "localhost",
	} {
		if got := hostOf(in); got != want {
			t.Errorf("hostOf(%q) = %q, want %q", in, got, want)
		}
	}
}
