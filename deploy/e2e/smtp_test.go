package e2e

import (
	"io"
	"mime"
	"net"
	"net/mail"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// mailbox is a real SMTP server in the test process: both coreapi
// processes deliver the account mails to it, and tests read them back.
type mailbox struct {
	addr string
	srv  *smtp.Server
	mu   sync.Mutex
	msgs []received
}

type received struct {
	rcpt    []string
	subject string
	raw     string
}

func startMailbox() (*mailbox, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	mb := &mailbox{addr: ln.Addr().String()}
	mb.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &mailSession{mb: mb}, nil }))
	mb.srv.Domain = "e2e.local"
	mb.srv.ReadTimeout, mb.srv.WriteTimeout = 10*time.Second, 10*time.Second
	go func() { _ = mb.srv.Serve(ln) }()
	return mb, nil
}

func (mb *mailbox) close() { _ = mb.srv.Close() }

// url is the SMTP_URL of the mailbox.
func (mb *mailbox) url() string { return "smtp://" + mb.addr }

var linkRE = regexp.MustCompile(`https?://[^\s"<>]+\?token=[A-Za-z0-9_\-]+`)

// link waits for a mail to rcpt whose subject contains subject and returns
// the first link of its plain-text part.
func (mb *mailbox) link(t testing.TB, rcpt, subject string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		mb.mu.Lock()
		msgs := append([]received(nil), mb.msgs...)
		mb.mu.Unlock()
		for i := len(msgs) - 1; i >= 0; i-- {
			m := msgs[i]
			if !strings.Contains(m.subject, subject) || len(m.rcpt) != 1 || !strings.EqualFold(m.rcpt[0], rcpt) {
				continue
			}
			body := strings.ReplaceAll(strings.ReplaceAll(m.raw, "=\r\n", ""), "=3D", "=")
			if l := linkRE.FindString(body); l != "" {
				return l
			}
			t.Fatalf("mail %q to %s has no link:\n%s", m.subject, rcpt, m.raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no mail to %s about %q within 15s", rcpt, subject)
	return ""
}

type mailSession struct {
	mb   *mailbox
	rcpt []string
}

func (s *mailSession) Reset()                               { s.rcpt = nil }
func (s *mailSession) Logout() error                        { return nil }
func (s *mailSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpt = append(s.rcpt, to)
	return nil
}

func (s *mailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m, err := mail.ReadMessage(strings.NewReader(string(b)))
	if err != nil {
		return err
	}
	subj, _ := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	s.mb.mu.Lock()
	s.mb.msgs = append(s.mb.msgs, received{rcpt: append([]string(nil), s.rcpt...), subject: subj, raw: string(b)})
	s.mb.mu.Unlock()
	return nil
}
