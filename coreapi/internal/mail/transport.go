package mail

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	netmail "net/mail"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	gomail "github.com/wneessen/go-mail"
)

// Outgoing is one rendered message with its envelope.
type Outgoing struct {
	Rendered
	From string
	// MessageID is stable per queue row, so a retry after a lost
	// acknowledgement carries the same Message-ID (receivers can drop it).
	MessageID string
}

// Transport delivers one message. An error wrapping ErrPermanent is not
// retried (but for the first refusal the Sender waits a verdict on:
// Sender.refusal); one wrapping ErrSession keeps the other mails of the
// batch back until the failed one's retry.
type Transport interface {
	Send(ctx context.Context, m Outgoing) error
}

// ErrPermanent marks a delivery that retrying cannot fix (SMTP 5xx to the
// mail's recipient or content).
var ErrPermanent = errors.New("permanent delivery failure")

// ErrSession marks a failure of the mail server's session, not of the mail
// (see mailAnswer): every other mail would meet it alike, each in a
// session of its own.
var ErrSession = errors.New("mail server session failed")

// stage is where the mail server refused a mail with a 5xx: its RCPT TO
// or its DATA (the command, or the end of the message).
type stage int

const (
	atRcpt stage = iota
	atData
	stages // how many
)

// refused is an ErrPermanent that is a 5xx answer to the mail's RCPT TO
// or DATA (at): refused, as far as this one mail tells. The Sender
// decides, from the refusals before it, whether the server refuses every
// mail that way instead (Sender.refusal). Its text is the error's.
type refused struct {
	err error
	at  stage
}

func (e refused) Error() string { return e.err.Error() }
func (e refused) Unwrap() error { return e.err }

// SMTP sends over SMTP with github.com/wneessen/go-mail.
type SMTP struct {
	host string
	opts []gomail.Option
}

// DefaultSMTPTimeout bounds connecting and each SMTP command.
const DefaultSMTPTimeout = 10 * time.Second

// ParseSMTPURL checks an SMTP_URL: smtp://[user:pass@]host[:port] (STARTTLS
// when the server offers it; ?starttls=required refuses a server without
// it, ?starttls=off never uses it) or smtps://… (implicit TLS, port 465 by
// default). The server is dialled at that host and port only: go-mail's
// port policies (WithTLSPortPolicy, WithSSLPort) would fall back to port 25
// when the port given does not answer, so the TLS mode is set apart from
// the port.
//
// Whatever else the URL holds is refused, not ignored: an operator's typo
// (?startls=required) would otherwise leave the mail server's TLS or AUTH
// other than meant, unnoticed. The errors name what is wrong and never
// quote the password (nor url.Parse's error, which quotes the URL).
func ParseSMTPURL(raw string) (*SMTP, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errSMTPURLForm
	}
	if strings.Contains(u.Path+u.RawQuery+u.Fragment, "@") {
		// "smtp://u:12?pw@h": the password's '?' ended the host, and the
		// rest of the password is the query. Quoting it would show it.
		return nil, errors.New(`"@" after the host: write a "/", "?" or "#" in the user name or password as %2F, %3F or %23`)
	}
	if u.Opaque != "" {
		return nil, errors.New(`no "//" before the host: want smtp://[user:password@]host[:port] or smtps://…`)
	}
	if u.Hostname() == "" {
		return nil, errSMTPURLForm
	}
	host := u.Hostname()
	if !dialableHost(host) {
		return nil, errors.New("bad host: want a DNS name or an IP address")
	}
	if strings.Contains(host, ":") {
		// An IPv6 literal: go-mail dials host + ":" + port, so it keeps
		// its brackets ("[::1]:587"), which TLS's name check takes too.
		host = "[" + host + "]"
	}
	s := &SMTP{host: host, opts: []gomail.Option{gomail.WithTimeout(DefaultSMTPTimeout)}}
	port := 0
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil || port < 1 || port > 65535 {
			return nil, errors.New("bad port")
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return nil, errors.New(`bad port: none after ":"`)
	}
	if p := u.EscapedPath(); p != "" && p != "/" {
		return nil, errors.New("a path after the host: nothing after host[:port] is used but ?starttls=")
	}
	if strings.Contains(raw, "#") {
		// url.Parse cuts at the first '#', so one is always the fragment's
		// (an empty fragment is not kept in u).
		return nil, errors.New("a fragment (#…): nothing after host[:port] is used but ?starttls=")
	}
	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, errors.New("bad query: want ?starttls=auto, required or off")
	}
	var unknown []string
	for name := range query {
		if name != "starttls" {
			unknown = append(unknown, strconv.Quote(name))
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return nil, fmt.Errorf("unknown query parameter %s: only starttls is taken", strings.Join(unknown, ", "))
	}
	starttls := query["starttls"]
	if len(starttls) > 1 {
		return nil, fmt.Errorf("starttls given %d times: give it once", len(starttls))
	}
	switch u.Scheme {
	case "smtp":
		if port == 0 {
			port = 587
		}
		policy := gomail.TLSOpportunistic
		if len(starttls) == 1 {
			switch starttls[0] {
			case "auto":
			case "required":
				policy = gomail.TLSMandatory
			case "off":
				policy = gomail.NoTLS
			default:
				return nil, fmt.Errorf("starttls=%q: want auto, required or off", starttls[0])
			}
		}
		s.opts = append(s.opts, gomail.WithTLSPolicy(policy))
	case "smtps":
		if port == 0 {
			port = 465
		}
		if len(starttls) > 0 {
			return nil, errors.New("starttls with smtps://: smtps is TLS from the first byte, STARTTLS is for smtp://")
		}
		s.opts = append(s.opts, gomail.WithSSL())
	default:
		return nil, fmt.Errorf("scheme %q: want smtp or smtps", u.Scheme)
	}
	s.opts = append(s.opts, gomail.WithPort(port))
	if u.User != nil {
		pw, hasPW := u.User.Password()
		switch {
		case u.User.Username() == "" && hasPW:
			return nil, errors.New("a password without a user name: want smtp://user:password@host, or no user information for a server that takes mail without AUTH")
		case u.User.Username() == "":
			return nil, errors.New(`an empty user name before "@": want smtp://user:password@host, or no user information for a server that takes mail without AUTH`)
		case pw == "":
			// go-mail would log in with an empty password: a server that
			// offers AUTH refuses it (a failed login on the account), one
			// that offers none fails every session ("server does not
			// support SMTP AUTH").
			return nil, errors.New("a user name without a password: want smtp://user:password@host, or no user information for a server that takes mail without AUTH")
		}
		s.opts = append(s.opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(u.User.Username()), gomail.WithPassword(pw))
	}
	return s, nil
}

// errSMTPURLForm refuses what is no smtp:// or smtps:// URL with a host.
var errSMTPURLForm = errors.New("want smtp://[user:password@]host[:port] or smtps://…")

// dialableHost reports whether host, a URL's Hostname, is one a dialler
// takes: an IP address (an IPv6 one with a zone of name characters) or a
// name of letters, digits, '-', '_' and '.'. url.Parse leaves much else in
// a host ("]x", "a,b", "a!b", "::%]"), which could never be reached.
func dialableHost(host string) bool {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Zone() == "" || nameChars(a.Zone())
	}
	return nameChars(host)
}

func nameChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return s != ""
}

// Send delivers m in its own SMTP session.
func (s *SMTP) Send(ctx context.Context, m Outgoing) error {
	msg := gomail.NewMsg()
	// The sender's domain goes out in ASCII too (MAIL FROM and the From
	// header): a MAIL_FROM with a Unicode domain, sent as written, was
	// refused at MAIL FROM by every server without SMTPUTF8, each session.
	from, err := netmail.ParseAddress(m.From)
	if err != nil {
		return fmt.Errorf("%w: from: %v", ErrPermanent, err)
	}
	from.Address = wireAddress(from.Address)
	msg.FromMailAddress(from)
	if err := msg.To(wireAddress(m.To)); err != nil {
		return fmt.Errorf("%w: to: %v", ErrPermanent, err)
	}
	msg.Subject(subjectHeader(m.Subject))
	msg.SetMessageIDWithValue(m.MessageID)
	msg.SetDate()
	// Sent by a program, not a person (RFC 3834 section 5): a vacation
	// reply or another auto-responder must not answer it, to MAIL_FROM or
	// into a loop with another robot. Exchange and Outlook read their own
	// header for the same.
	msg.SetGenHeader("Auto-Submitted", "auto-generated")
	msg.SetGenHeader("X-Auto-Response-Suppress", "All")
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	c, err := gomail.NewClient(s.host, s.opts...)
	if err != nil {
		return fmt.Errorf("%w: smtp client: %w", ErrSession, err)
	}
	if err := c.DialAndSendWithContext(ctx, msg); err != nil {
		// The server accepted the message (250 after DATA), and what
		// failed came after: the RSET or QUIT that ends the session, or
		// the connection, lost meanwhile. The mail was delivered: sent
		// again, it would arrive twice (its link in both); taken for a
		// 5xx, a delivered mail would be parked.
		if msg.IsDelivered() {
			return nil
		}
		code, rcpt, ok := mailAnswer(err)
		if !ok {
			return fmt.Errorf("%w: %w", ErrSession, err)
		}
		if code >= 500 {
			at := atData
			if rcpt {
				at = atRcpt
			}
			return refused{fmt.Errorf("%w: %v", ErrPermanent, err), at}
		}
		return fmt.Errorf("smtp send: %w", err)
	}
	return nil
}

// wireAddress is addr as the SMTP session names it, in RCPT TO and in the
// To header (and the sender's, in MAIL FROM and the From header): its
// domain in ASCII (inboxDomain: "ada@bücher.example" is sent as
// "ada@xn--bcher-kva.example"). Addresses are stored with the
// domain in Unicode (Canonical), as their owners type and read them;
// go-mail sends an address as given, and a raw UTF-8 domain is valid only
// in a session with the SMTPUTF8 extension (RFC 6531), which many relays
// lack and refuse it without (553 5.6.7). The ASCII form reaches the same
// mailbox over any server. A domain IDNA refuses (an address literal) is
// sent as stored; a local part that is not ASCII still needs a server with
// SMTPUTF8.
func wireAddress(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return addr
	}
	return addr[:at+1] + inboxDomain(addr[at+1:])
}

// mailAnswer is the SMTP code (4xx or 5xx, none sessionAnswer names) err
// answered the mail's own RCPT TO or DATA with, and whether it was the
// RCPT TO's; ok is false for any other failure, which is the session's
// (ErrSession). Only an answer to the mail's RCPT TO or DATA
// is the mail's: a 5xx there refuses it (its address, its content:
// ErrPermanent), and a 4xx is its too (a full mailbox, greylisting), so
// the batch's other mails go on. Whatever fails before a recipient is
// named is the mail server's or its configuration's, alike for every
// mail: the connection, TLS, the greeting, AUTH (go-mail returns those as
// plain errors, no SendError), and MAIL FROM (the sender MAIL_FROM, a
// session without the TLS or AUTH the server wants). So is a 530 (RFC
// 3207, RFC 4954: STARTTLS or AUTH first) wherever it comes, a 421 (RFC
// 5321 3.8, 4.2.2: the server closes the channel, shutting down or
// throttling the client) wherever it comes, and a connection lost or
// timed out without an answer. So are the answers about authentication
// and encryption (sessionAnswer: 534, 535, 538, and the enhanced codes
// X.7.8, X.7.9, X.7.11), which some servers give at RCPT TO to a client
// that has not authenticated as they want. Taken for the mail's, a 421 had each other
// mail of the batch open a session of its own to meet it again, and
// parked every mail after MaxAttempts of a throttling that outlasted them. Parking each queued
// mail for those would scrub every link for an operator's mistake: they
// are retried with the backoff instead, as a mail server that is down is.
func mailAnswer(err error) (code int, rcpt, ok bool) {
	var se *gomail.SendError
	if !errors.As(err, &se) {
		return 0, false, false
	}
	code = se.ErrorCode()
	if code < 400 || code > 599 || sessionAnswer(code, se.EnhancedStatusCode()) {
		return 0, false, false
	}
	switch se.Reason {
	case gomail.ErrSMTPRcptTo:
		return code, true, true
	case gomail.ErrSMTPData, gomail.ErrSMTPDataClose:
		return code, false, true
	}
	return 0, false, false
}

// sessionAnswer reports whether an SMTP answer refuses the session,
// whatever command it answers: 421 (the server closes the channel), 530
// (STARTTLS or AUTH first, RFC 3207 and 4954), 534 (the AUTH mechanism is
// too weak), 535 (the credentials are wrong), 538 (AUTH needs
// encryption), and, with any code, the enhanced codes RFC 4954 gives
// those (X.7.8 credentials invalid, X.7.9 mechanism too weak, X.7.11
// encryption required). None says anything of the recipient.
func sessionAnswer(code int, enhanced string) bool {
	switch code {
	case 421, 530, 534, 535, 538:
		return true
	}
	if _, detail, ok := strings.Cut(enhanced, "."); ok {
		switch detail {
		case "7.8", "7.9", "7.11":
			return true
		}
	}
	return false
}

// subjectHeader is the Subject header's value for subject. One of
// printable ASCII only is left as it is (and one with other characters
// go-mail encodes as RFC 2047 encoded words), unless it holds "=?": a
// tenant's name may be any printable text, and an encoded word typed into
// it ("=?UTF-8?B?...?=") would be decoded by the recipient's mail client
// into text of the name's writer's choosing (a line break, a
// right-to-left override: what the name checks refuse). Such a subject is
// encoded whole, so the recipient reads the characters as typed.
func subjectHeader(subject string) string {
	if !strings.Contains(subject, "=?") {
		return subject
	}
	// RFC 2047 section 2: at most 75 characters a word; 45 bytes are 60
	// in base64, 72 with "=?UTF-8?B?" and "?=". A word holds whole
	// characters (section 5), and the white space between two words is
	// not part of the text (section 6.2).
	const maxChunk = 45
	var words []string
	for subject != "" {
		n := min(len(subject), maxChunk)
		for n < len(subject) && n > 1 && !utf8.RuneStart(subject[n]) {
			n--
		}
		words = append(words, "=?UTF-8?B?"+base64.StdEncoding.EncodeToString([]byte(subject[:n]))+"?=")
		subject = subject[n:]
	}
	return strings.Join(words, " ")
}

// Log writes messages to the log instead of sending them (development,
// when SMTP_URL is unset). The links are in the log: never use it where
// others read the logs.
type Log struct {
	Logger *slog.Logger
}

// Send logs m.
func (l Log) Send(_ context.Context, m Outgoing) error {
	l.Logger.Info("mail (not sent: SMTP_URL is unset)", "to", m.To, "subject", m.Subject, "message_id", m.MessageID, "text", m.Text)
	return nil
}

// hostOf is the host part of a URL, for Message-IDs: the part after the
// '@' of one, which RFC 5322 (3.6.4) takes as a dot-atom or a bracketed
// literal, in ASCII. A Unicode name goes in its ASCII form (inboxDomain:
// raw UTF-8 in a header needs SMTPUTF8, as in an address), an IPv6
// address in brackets (its colons are no atom's).
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return "localhost"
	}
	h := u.Hostname()
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Is4() {
			return h
		}
		return "[" + a.WithZone("").String() + "]"
	}
	return inboxDomain(h)
}
