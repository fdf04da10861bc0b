package tlscert

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/logbuffer"
	"github.com/tollgate-auth/tollgate/shared/testca"
)

// fakeClock is the Files' clock, moved by the test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// server is a TLS listener on 127.0.0.1 serving f's certificate, and a
// client that trusts ca.
type server struct {
	t    *testing.T
	addr string
	ca   *testca.CA
}

func serve(t *testing.T, f *Files, ca *testca.CA) *server {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", f.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				_, _ = c.Read(make([]byte, 1)) // until the client closes
			}()
		}
	}()
	return &server{t: t, addr: ln.Addr().String(), ca: ca}
}

// presented is the serial number of the certificate a new handshake gets.
func (s *server) presented() *big.Int {
	s.t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.ca.PEM)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", s.addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err != nil {
		s.t.Fatalf("handshake: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

func wantSerial(t *testing.T, got *big.Int, want *testca.Leaf, what string) {
	t.Helper()
	if got.Cmp(want.Cert.SerialNumber) != 0 {
		t.Fatalf("%s: presented serial %s, want %s", what, got, want.Cert.SerialNumber)
	}
}

func load(t *testing.T, certFile, keyFile string) (*Files, *fakeClock, *logbuffer.Buffer) {
	t.Helper()
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	var logs logbuffer.Buffer
	f, err := Load(certFile, keyFile, Options{Log: slog.New(slog.NewJSONHandler(&logs, nil)), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return f, clock, &logs
}

// Files replaced in place are read at the first handshake CheckEvery after
// the last look, which presents the new certificate; a garbled
// replacement, or a certificate without its key, keeps the one loaded
// before and is logged as an error, until a good pair comes.
func TestRotation(t *testing.T) {
	ca := testca.New(t, "test CA")
	dir := t.TempDir()
	first := ca.Issue(t, "127.0.0.1")
	certFile, keyFile := first.Write(t, dir)
	f, clock, logs := load(t, certFile, keyFile)
	s := serve(t, f, ca)
	wantSerial(t, s.presented(), first, "at start")

	second := ca.Issue(t, "127.0.0.1")
	second.Write(t, dir)
	wantSerial(t, s.presented(), first, "within CheckEvery of the last look")
	clock.Advance(CheckEvery)
	wantSerial(t, s.presented(), second, "after the files changed")
	if !strings.Contains(logs.String(), `"msg":"TLS certificate reloaded"`) {
		t.Errorf("no reload line:\n%s", logs)
	}

	// Garbled.
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\ngarbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	clock.Advance(CheckEvery)
	wantSerial(t, s.presented(), second, "after a garbled certificate file")
	if !strings.Contains(logs.String(), `"level":"ERROR","msg":"TLS certificate files changed but do not load`) {
		t.Errorf("no error line for the garbled file:\n%s", logs)
	}
	// Not logged again while the files stay as they are.
	clock.Advance(CheckEvery)
	wantSerial(t, s.presented(), second, "the garbled file still there")
	if n := strings.Count(logs.String(), "do not load"); n != 1 {
		t.Errorf("%d error lines for one bad pair, want 1", n)
	}
	if n := f.Failures(); n != 1 {
		t.Errorf("Failures() = %d after one bad pair, want 1", n)
	}

	// A new certificate with the old key.
	third := ca.Issue(t, "127.0.0.1")
	if err := os.WriteFile(certFile, third.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	clock.Advance(CheckEvery)
	wantSerial(t, s.presented(), second, "a certificate without its key")
	if n := strings.Count(logs.String(), "do not load"); n != 2 {
		t.Errorf("%d error lines, want 2:\n%s", n, logs)
	}
	// Its key arrives.
	if err := os.WriteFile(keyFile, third.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	clock.Advance(CheckEvery)
	wantSerial(t, s.presented(), third, "once the key matches")

	// Files removed: the certificate stays.
	if err := os.Remove(certFile); err != nil {
		t.Fatal(err)
	}
	clock.Advance(CheckEvery)
	wantSerial(t, s.presented(), third, "the files gone")
	if !strings.Contains(logs.String(), "TLS certificate files unreadable") {
		t.Errorf("no error line for the missing file:\n%s", logs)
	}
	if n := f.Failures(); n != 3 {
		t.Errorf("Failures() = %d after two bad pairs and missing files, want 3", n)
	}
}

// Current looks at the files as a handshake does: a metrics scrape sees a
// renewal (its expiry) even when no connection came since.
func TestCurrentSeesARenewalWithoutAHandshake(t *testing.T) {
	ca := testca.New(t, "test CA")
	dir := t.TempDir()
	first := ca.Issue(t, "127.0.0.1")
	certFile, keyFile := first.Write(t, dir)
	f, clock, _ := load(t, certFile, keyFile)
	if got := f.Current().Leaf.SerialNumber; got.Cmp(first.Cert.SerialNumber) != 0 {
		t.Fatalf("at start: serial %s, want %s", got, first.Cert.SerialNumber)
	}
	second := ca.Issue(t, "127.0.0.1")
	second.Write(t, dir)
	clock.Advance(CheckEvery)
	if got := f.Current().Leaf.SerialNumber; got.Cmp(second.Cert.SerialNumber) != 0 {
		t.Fatalf("after the renewal: serial %s, want %s", got, second.Cert.SerialNumber)
	}
	if n := f.Failures(); n != 0 {
		t.Errorf("Failures() = %d, want 0", n)
	}
}

// A Kubernetes Secret volume publishes a new pair by swapping the ..data
// link to a new directory: tls.crt and tls.key are links through it.
func TestSecretVolumeSwap(t *testing.T) {
	ca := testca.New(t, "test CA")
	vol := t.TempDir()
	version := func(name string, l *testca.Leaf) {
		d := filepath.Join(vol, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		l.Write(t, d)
		tmp := filepath.Join(vol, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(vol, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	first, second := ca.Issue(t, "127.0.0.1"), ca.Issue(t, "127.0.0.1")
	version("..v1", first)
	for _, n := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", n), filepath.Join(vol, n)); err != nil {
			t.Fatal(err)
		}
	}
	f, clock, _ := load(t, filepath.Join(vol, "tls.crt"), filepath.Join(vol, "tls.key"))
	s := serve(t, f, ca)
	wantSerial(t, s.presented(), first, "at start")
	version("..v2", second)
	clock.Advance(CheckEvery)
	wantSerial(t, s.presented(), second, "after the swap")
}

// A pair that does not load at start is an error naming the files.
func TestLoadRefusesABadPair(t *testing.T) {
	ca := testca.New(t, "test CA")
	dir := t.TempDir()
	a, b := ca.Issue(t, "127.0.0.1"), ca.Issue(t, "127.0.0.1")
	certFile, keyFile := a.Write(t, dir)
	if err := os.WriteFile(keyFile, b.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, files := range map[string][2]string{
		"mismatched key": {certFile, keyFile},
		"missing key":    {certFile, filepath.Join(dir, "none.key")},
	} {
		if _, err := Load(files[0], files[1], Options{}); err == nil || !strings.Contains(err.Error(), files[1]) {
			t.Errorf("%s: %v, want an error naming %s", name, err, files[1])
		}
	}
}
