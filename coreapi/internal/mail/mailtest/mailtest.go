// Package mailtest runs a real SMTP server in the test process
// (github.com/emersion/go-smtp) that keeps what it receives, so tests read
// the mails coreapi really sent. It can be taken down and brought back on
// the same port (mail server down), told to refuse messages with a code
// (4xx temporary, 5xx permanent), and made to refuse whole sessions (its
// greeting, AUTH, MAIL FROM) as a misconfigured mail server does.
package mailtest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is one received mail.
type Message struct {
	From    string
	Rcpt    []string
	Header  mail.Header
	Subject string
	Raw     string // the whole DATA, headers and MIME parts
}

// Server is an in-process SMTP server on 127.0.0.1.
type Server struct {
	Addr string // host:port

	srv  *smtp.Server
	down atomic.Bool

	mu     sync.Mutex
	msgs   []Message
	refuse int // 0: accept; else the SMTP code DATA is answered with
	// greet, refuseMail, refuseRcpt: 0, or the code the greeting, MAIL
	// FROM or RCPT TO is answered with.
	greet, refuseMail, refuseRcpt int
	failAuth                      bool // offer AUTH CRAM-MD5 and refuse it with 535
	authAttempts                  int  // AUTH commands received
	// hangUp: once a message is accepted, its connection is closed
	// when the client sends its next command (RSET, QUIT), unanswered.
	hangUp bool
	// asciiOnly: a non-ASCII address in MAIL FROM or RCPT TO is refused
	// with 553 (see ASCIIOnly).
	asciiOnly bool
	notify    chan struct{}
}

// Start listens on a random loopback port until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{notify: make(chan struct{}, 1)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("mailtest: %v", err)
	}
	s.Addr = ln.Addr().String()
	s.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &session{s: s, conn: c}, nil }))
	s.srv.Domain = "mailtest.local"
	s.srv.ReadTimeout = 10 * time.Second
	s.srv.WriteTimeout = 10 * time.Second
	s.srv.AllowInsecureAuth = true // AUTH is offered only by FailAuth
	go func() { _ = s.srv.Serve(&gate{Listener: ln, s: s}) }()
	t.Cleanup(func() { _ = s.srv.Close() })
	return s
}

// URL is the SMTP_URL of the server (plain SMTP, no STARTTLS offered).
func (s *Server) URL() string { return "smtp://" + s.Addr }

// Stop takes the server down: connections are dropped at once, before
// the greeting, until Restart. The port stays reserved, so nothing else
// can take it meanwhile.
func (s *Server) Stop() { s.down.Store(true) }

// Restart brings the server back on the same address.
func (s *Server) Restart(testing.TB) { s.down.Store(false) }

// gate drops every connection while down, and answers each with the
// greeting code set by Greet (then closes it) while one is set.
type gate struct {
	net.Listener
	s *Server
}

func (g *gate) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return c, err
		}
		if g.s.down.Load() {
			_ = c.Close()
			continue
		}
		g.s.mu.Lock()
		code := g.s.greet
		g.s.mu.Unlock()
		if code == 0 {
			return &hangUpConn{Conn: c}, nil
		}
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = fmt.Fprintf(c, "%d mailtest.local not accepting mail (the test)\r\n", code)
		_ = c.Close()
	}
}

// hangUpConn closes itself at its next read once hangUp is set: the
// server then answers nothing more on it.
type hangUpConn struct {
	net.Conn
	hangUp atomic.Bool
}

func (c *hangUpConn) Read(b []byte) (int, error) {
	if c.hangUp.Load() {
		_ = c.Conn.Close()
		return 0, io.EOF
	}
	return c.Conn.Read(b)
}

// HangUpAfterData makes the server accept each message (250 after DATA)
// and then close the connection without answering the client's next
// command (the RSET or QUIT that follows): a connection lost after the
// message was delivered. false answers them again.
func (s *Server) HangUpAfterData(on bool) {
	s.mu.Lock()
	s.hangUp = on
	s.mu.Unlock()
}

// Refuse makes DATA answer code (e.g. 550 or 451); 0 accepts again.
func (s *Server) Refuse(code int) {
	s.mu.Lock()
	s.refuse = code
	s.mu.Unlock()
}

// Greet makes the server answer each new connection with code (e.g. 554)
// instead of its 220 greeting, and close it; 0 greets again.
func (s *Server) Greet(code int) {
	s.mu.Lock()
	s.greet = code
	s.mu.Unlock()
}

// FailAuth makes the server offer AUTH CRAM-MD5 (a mechanism a client
// uses without TLS) and answer every attempt with 535 5.7.8, as it does
// to a wrong password; false offers no AUTH again.
func (s *Server) FailAuth(on bool) {
	s.mu.Lock()
	s.failAuth = on
	s.mu.Unlock()
}

// AuthAttempts is how many AUTH commands the server has received (each a
// login a real server would count against the account).
func (s *Server) AuthAttempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authAttempts
}

// RefuseMail makes MAIL FROM answer code (e.g. 530 or 553); 0 accepts
// again.
func (s *Server) RefuseMail(code int) {
	s.mu.Lock()
	s.refuseMail = code
	s.mu.Unlock()
}

// ASCIIOnly makes the server behave as one without the SMTPUTF8
// extension (RFC 6531) must: it does not offer it, and a non-ASCII address
// in MAIL FROM or RCPT TO ("ada@bücher.example") is refused with 553
// 5.6.7. Off (the default), such an address is accepted as sent.
func (s *Server) ASCIIOnly(on bool) {
	s.mu.Lock()
	s.asciiOnly = on
	s.mu.Unlock()
}

// nonASCII reports whether addr holds a byte outside US-ASCII.
func nonASCII(addr string) bool {
	for i := 0; i < len(addr); i++ {
		if addr[i] >= 0x80 {
			return true
		}
	}
	return false
}

// RefuseRcpt makes RCPT TO answer code (e.g. 550); 0 accepts again.
func (s *Server) RefuseRcpt(code int) {
	s.mu.Lock()
	s.refuseRcpt = code
	s.mu.Unlock()
}

// refusal is the answer a test asked for: code, with the enhanced code
// RFC 3463 gives its class, quoting the address refused (addr) as real
// servers do ("<ada@example.com>: Recipient address rejected").
func refusal(code int, addr string) error {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{code / 100, 0, 0}, Message: "<" + addr + ">: refused by the test"}
}

// Messages returns what was received so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// WaitFor waits until a message to rcpt whose subject contains subject
// arrives (matching ones already received count) and returns the newest.
func (s *Server) WaitFor(t testing.TB, rcpt, subject string, timeout time.Duration) Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs := s.Messages()
		for i := len(msgs) - 1; i >= 0; i-- {
			m := msgs[i]
			if strings.Contains(m.Subject, subject) && slices.ContainsFunc(m.Rcpt, func(r string) bool { return strings.EqualFold(r, rcpt) }) {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("mailtest: no mail to %s about %q within %v; received %d", rcpt, subject, timeout, len(msgs))
		}
		select {
		case <-s.notify:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

var tokenRE = regexp.MustCompile(`[?&]token=([A-Za-z0-9_%\-]+)`)

// Token extracts the token of the first link in the plain-text part.
func (m Message) Token() string {
	body := strings.ReplaceAll(m.Raw, "=\r\n", "") // undo quoted-printable soft breaks
	body = strings.ReplaceAll(body, "=3D", "=")
	if sm := tokenRE.FindStringSubmatch(body); sm != nil {
		return sm[1]
	}
	return ""
}

// nonASCIIRefusal answers a non-ASCII address while ASCIIOnly is on (RFC
// 6531 section 3.5: 553 5.6.7).
var nonASCIIRefusal = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7}, Message: "non-ASCII address without SMTPUTF8"}

type session struct {
	s    *Server
	conn *smtp.Conn
	from string
	rcpt []string
}

func (x *session) Reset()        { x.from, x.rcpt = "", nil }
func (x *session) Logout() error { return nil }

func (x *session) Mail(from string, _ *smtp.MailOptions) error {
	x.s.mu.Lock()
	code, asciiOnly := x.s.refuseMail, x.s.asciiOnly
	x.s.mu.Unlock()
	if code != 0 {
		return refusal(code, from)
	}
	if asciiOnly && nonASCII(from) {
		return nonASCIIRefusal
	}
	x.from = from
	return nil
}

func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.s.mu.Lock()
	code, asciiOnly := x.s.refuseRcpt, x.s.asciiOnly
	x.s.mu.Unlock()
	if code != 0 {
		return refusal(code, to)
	}
	if asciiOnly && nonASCII(to) {
		return nonASCIIRefusal
	}
	x.rcpt = append(x.rcpt, to)
	return nil
}

// AuthMechanisms offers CRAM-MD5 while FailAuth is on, else nothing (no
// AUTH in the EHLO answer).
func (x *session) AuthMechanisms() []string {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	if x.s.failAuth {
		return []string{"CRAM-MD5"}
	}
	return nil
}

func (x *session) Auth(string) (sasl.Server, error) {
	x.s.mu.Lock()
	x.s.authAttempts++
	x.s.mu.Unlock()
	return &refusedAuth{}, nil
}

// refusedAuth sends a CRAM-MD5 challenge and refuses whatever answers it.
type refusedAuth struct{ challenged bool }

func (a *refusedAuth) Next([]byte) ([]byte, bool, error) {
	if !a.challenged {
		a.challenged = true
		return []byte("<1.1@mailtest.local>"), false, nil
	}
	return nil, false, smtp.ErrAuthFailed
}

func (x *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	x.s.mu.Lock()
	code := x.s.refuse
	x.s.mu.Unlock()
	if code != 0 {
		return &smtp.SMTPError{Code: code, EnhancedCode: smtp.NoEnhancedCode, Message: "refused by the test for <" + strings.Join(x.rcpt, ">, <") + ">"}
	}
	m := Message{From: x.from, Rcpt: append([]string(nil), x.rcpt...), Raw: string(b)}
	if pm, err := mail.ReadMessage(strings.NewReader(string(b))); err == nil {
		m.Header = pm.Header
		dec := new(mimeDecoder)
		m.Subject = dec.header(pm.Header.Get("Subject"))
	} else {
		return errors.New("unparsable message")
	}
	x.s.mu.Lock()
	x.s.msgs = append(x.s.msgs, m)
	hangUp := x.s.hangUp
	x.s.mu.Unlock()
	if hc, ok := x.conn.Conn().(*hangUpConn); ok && hangUp {
		hc.hangUp.Store(true) // after the 250 this answer gets
	}
	select {
	case x.s.notify <- struct{}{}:
	default:
	}
	return nil
}
