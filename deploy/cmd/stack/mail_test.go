package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/smtp"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

func TestPlanMail(t *testing.T) {
	o, err := parseFlags(nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := planMail("", o)
	if !p.mailpit || p.smtpAddr != "127.0.0.1:1025" || p.uiAddr != "127.0.0.1:8025" || p.smtpURL != "smtp://127.0.0.1:1025?starttls=off" {
		t.Errorf("without SMTP_URL: %+v; want Mailpit on 127.0.0.1:1025/8025", p)
	}
	args := strings.Join(p.mailpitArgs("/data"), " ")
	for _, want := range []string{"--smtp 127.0.0.1:1025", "--listen 127.0.0.1:8025", "--disable-version-check", "--database /data/mailpit.db"} {
		if !strings.Contains(args, want) {
			t.Errorf("mailpit args %q lack %q", args, want)
		}
	}
	p = planMail("smtps://user:pw@mail.example.com", o)
	if p.mailpit || p.smtpURL != "smtps://user:pw@mail.example.com" {
		t.Errorf("with SMTP_URL: %+v; want no Mailpit and the user's URL", p)
	}
	o.mailSMTPAddr, o.mailUIAddr = "127.0.0.1:2525", "127.0.0.1:9025"
	if p := planMail("", o); p.smtpAddr != "127.0.0.1:2525" || p.uiAddr != "127.0.0.1:9025" || !strings.Contains(p.smtpURL, "2525") {
		t.Errorf("flags not used: %+v", p)
	}
}

// TestMailpit builds Mailpit from the module proxy (as `make run` does),
// runs it, delivers a mail over SMTP and reads it back through its API.
func TestMailpit(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var logs strings.Builder
	path, err := ensureMailpit(ctx, dir, &lockedWriter{w: &logs})
	if err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	if again, err := ensureMailpit(ctx, dir, io.Discard); err != nil || again != path {
		t.Errorf("second ensure = %q, %v; want the built binary reused", again, err)
	}
	// Offline (make run after a make reset, without a network): built
	// from the module cache, which the build above filled; go install
	// alone asks the module proxy even then.
	t.Run("offline", func(t *testing.T) {
		t.Setenv("GOPROXY", "http://127.0.0.1:1")
		var offline strings.Builder
		if _, err := ensureMailpit(ctx, t.TempDir(), &lockedWriter{w: &offline}); err != nil {
			t.Fatalf("offline build: %v\n%s", err, offline.String())
		}
	})
	o := options{mailSMTPAddr: freeAddr(t), mailUIAddr: freeAddr(t)}
	p := planMail("", o)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	pw, err := ensureMailpitPassword(filepath.Join(dir, "mailpit.password"))
	if err != nil {
		t.Fatal(err)
	}
	mailDir, err := mailpitDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := startChild(logger, "mailpit", path, p.mailpitArgs(mailDir), mailpitEnv(environ(), pw), &lockedWriter{w: &logs})
	if err != nil {
		t.Fatal(err)
	}
	defer c.stop(logger, 10*time.Second)
	if err := waitReady(ctx, localURL(p.uiAddr)+"/readyz", time.Minute, c); err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	msg := "To: you@example.com\r\nFrom: no-reply@example.com\r\nSubject: Confirm your email address\r\n\r\nhttp://localhost:8080/verify-email?token=abc\r\n"
	if err := smtp.SendMail(p.smtpAddr, nil, "no-reply@example.com", []string{"you@example.com"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	// Without the password the API (and the UI) refuses: the mails hold
	// reset and invitation links.
	for _, path := range []string{"/api/v1/messages", "/"} {
		resp, err := http.Get(localURL(p.uiAddr) + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without the password: %d, want 401", path, resp.StatusCode)
		}
	}
	req, err := http.NewRequest(http.MethodGet, localURL(p.uiAddr)+"/api/v1/messages", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(mailpitUser, pw)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Messages []struct {
			Subject string `json:"Subject"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	if len(list.Messages) != 1 || list.Messages[0].Subject != "Confirm your email address" {
		t.Errorf("Mailpit holds %+v, want the one mail sent", list.Messages)
	}
	// The mail is stored where no other local user reads it.
	if _, err := os.Stat(filepath.Join(mailDir, "mailpit.db")); err != nil {
		t.Errorf("Mailpit's database is not in its private directory: %v", err)
	}
	if fi, err := os.Stat(mailDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("Mailpit's directory: %v, %v; want mode 0700", fi, err)
	}
}

// TestMailpitDir: Mailpit's database lives in a directory of mode 0700,
// since Mailpit writes its files readable by every local user and the
// mails hold reset and invitation links; a directory left open is
// narrowed, and the database an earlier run kept in the data directory
// itself (world-readable there) is moved in with its -wal and -shm files.
func TestMailpitDir(t *testing.T) {
	dataDir := t.TempDir()
	if err := os.Chmod(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"mailpit.db", "mailpit.db-wal"} {
		if err := os.WriteFile(filepath.Join(dataDir, name), []byte(name+" reset-password?token=x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := mailpitDir(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if dir != filepath.Join(dataDir, "mailpit") {
		t.Errorf("dir = %q, want %q", dir, filepath.Join(dataDir, "mailpit"))
	}
	args := strings.Join(planMail("", options{mailSMTPAddr: "127.0.0.1:1025", mailUIAddr: "127.0.0.1:8025"}).mailpitArgs(dir), " ")
	if want := "--database " + filepath.Join(dir, "mailpit.db"); !strings.Contains(args, want) {
		t.Errorf("mailpit args %q lack %q", args, want)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("mailpit directory: %v, %v; want mode 0700", fi, err)
	}
	for _, name := range []string{"mailpit.db", "mailpit.db-wal"} {
		if _, err := os.Stat(filepath.Join(dataDir, name)); err == nil {
			t.Errorf("%s is still in the data directory, readable by every local user", name)
		}
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || !strings.HasPrefix(string(b), name) {
			t.Errorf("%s in the mailpit directory: %q, %v; want the earlier run's file", name, b, err)
		}
	}
	// A directory an earlier run (or the user) left open is narrowed.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := mailpitDir(dataDir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("mailpit directory after a second run: %v, %v; want mode 0700", fi, err)
	}
}

// TestMailpitPassword: the password is made once (mode 0600) and kept
// across runs; a file that does not hold one is replaced.
func TestMailpitPassword(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mailpit.password")
	pw, err := ensureMailpitPassword(path)
	if err != nil || !validMailpitPassword(pw) {
		t.Fatalf("first: %q, %v", pw, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if again, err := ensureMailpitPassword(path); err != nil || again != pw {
		t.Errorf("second run: %q, %v; want %q kept", again, err, pw)
	}
	if err := os.WriteFile(path, []byte("a b:c\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if fresh, err := ensureMailpitPassword(path); err != nil || !validMailpitPassword(fresh) || fresh == pw {
		t.Errorf("malformed file: %q, %v; want a new password", fresh, err)
	}
	o := options{mailUI: "http://localhost:8025", mailSMTPAddr: "127.0.0.1:1025", mailAuth: mailpitUser + ":" + pw}
	if got := mailWhere(o); !strings.Contains(got, "user "+mailpitUser+", password "+pw) {
		t.Errorf("mailWhere = %q, want the user and password", got)
	}
	if got := readMail(o); !strings.Contains(got, "curl -s -u '"+mailpitUser+":"+pw+"' http://localhost:8025/api/v1/messages") {
		t.Errorf("readMail = %q, want the API call with the password", got)
	}
}

// smtpCatcher is an in-process SMTP server (the stack test's SMTP_URL).
type smtpCatcher struct {
	addr string
	srv  *gosmtp.Server
	mu   sync.Mutex
	got  []string // "rcpt subject"
}

func startSMTPCatcher(t *testing.T) *smtpCatcher {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &smtpCatcher{addr: ln.Addr().String()}
	c.srv = gosmtp.NewServer(gosmtp.BackendFunc(func(*gosmtp.Conn) (gosmtp.Session, error) { return &catchSession{c: c}, nil }))
	c.srv.Domain = "stack-test.local"
	go func() { _ = c.srv.Serve(ln) }()
	t.Cleanup(func() { _ = c.srv.Close() })
	return c
}

func (c *smtpCatcher) received() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.got...)
}

type catchSession struct {
	c    *smtpCatcher
	rcpt []string
}

func (s *catchSession) Reset()                                 { s.rcpt = nil }
func (s *catchSession) Logout() error                          { return nil }
func (s *catchSession) Mail(string, *gosmtp.MailOptions) error { return nil }
func (s *catchSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	s.rcpt = append(s.rcpt, to)
	return nil
}
func (s *catchSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	subject := ""
	for _, line := range strings.Split(string(b), "\r\n") {
		if strings.HasPrefix(line, "Subject: ") {
			subject = strings.TrimPrefix(line, "Subject: ")
		}
	}
	s.c.mu.Lock()
	for _, r := range s.rcpt {
		s.c.got = append(s.c.got, r+" "+subject)
	}
	s.c.mu.Unlock()
	return nil
}

// TestMailpitBuildFailureSaysWhatToDo: when Mailpit cannot be built (no
// module proxy, a failing build), make run stops with an error that names
// the way around it, SMTP_URL, not with "exit status 1" alone.
func TestMailpitBuildFailureSaysWhatToDo(t *testing.T) {
	t.Setenv("GO", "false") // a go command that fails
	_, err := ensureMailpit(context.Background(), t.TempDir(), io.Discard)
	if err == nil {
		t.Fatal("ensureMailpit succeeded with a failing go command")
	}
	for _, want := range []string{"build mailpit " + mailpitVersion, "SMTP_URL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
