// Package tlscert serves the certificate of a PEM certificate and key file
// pair to a TLS listener, reading the pair again when either file changes:
// cert-manager (or any other issuer) rotates them in place, and the
// listener presents the new certificate from the next handshake on,
// without a restart. A changed pair that does not load (a garbled file, a
// key that does not match, a write caught half done) leaves the current
// certificate in use and is logged as an error.
package tlscert

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// CheckEvery is how often, at most, the files are looked at again: a
// handshake at least this long after the last look stats them (two
// stat calls; the files are read only when they changed).
const CheckEvery = 5 * time.Second

// Options configure a Files.
type Options struct {
	Log *slog.Logger
	// Now and Every are the clock and the check interval (tests);
	// zero: time.Now and CheckEvery.
	Now   func() time.Time
	Every time.Duration
}

// Files is the certificate of a certificate file and a key file.
type Files struct {
	certFile, keyFile string
	o                 Options

	cert atomic.Pointer[tls.Certificate]

	mu      sync.Mutex // one look at the files at a time
	checked time.Time  // when the files were last looked at
	seen    [2]os.FileInfo

	failures atomic.Uint64 // changed pairs that did not load, unreadable files
}

// Load reads the pair; an error names the file at fault.
func Load(certFile, keyFile string, o Options) (*Files, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Every == 0 {
		o.Every = CheckEvery
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	f := &Files{certFile: certFile, keyFile: keyFile, o: o}
	seen, _ := f.stat()
	c, err := f.read()
	if err != nil {
		return nil, err
	}
	f.cert.Store(c)
	f.seen, f.checked = seen, o.Now()
	return f, nil
}

// TLSConfig is the server configuration of the listener: TLS 1.2 at least,
// HTTP/1.1, the certificate from GetCertificate.
func (f *Files) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}, GetCertificate: f.GetCertificate}
}

// Certificate is the certificate presented now.
func (f *Files) Certificate() *tls.Certificate { return f.cert.Load() }

// GetCertificate is tls.Config.GetCertificate: the current certificate,
// after a look at the files if the last one is CheckEvery old. A
// handshake that comes while another looks does not wait for it.
func (f *Files) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return f.Current(), nil
}

// Current is the certificate presented from now on: GetCertificate's look
// at the files, for callers other than a handshake (a metrics scrape, so
// that the expiry it reports is the renewed certificate's even when no
// connection came since the renewal).
func (f *Files) Current() *tls.Certificate {
	if f.mu.TryLock() {
		if now := f.o.Now(); now.Sub(f.checked) >= f.o.Every {
			f.checked = now
			f.check()
		}
		f.mu.Unlock()
	}
	return f.cert.Load()
}

// Failures counts the looks at changed files that left the certificate
// in use: files gone or unreadable, or a changed pair that did not load.
func (f *Files) Failures() uint64 { return f.failures.Load() }

// check reads the pair again if either file changed since it was last
// read (f.mu held). A pair that does not load is not read again until a
// file changes once more.
func (f *Files) check() {
	seen, err := f.stat()
	if err != nil {
		f.failures.Add(1)
		f.o.Log.Error("TLS certificate files unreadable; still serving the certificate loaded before", "err", err)
		return
	}
	if same(seen[0], f.seen[0]) && same(seen[1], f.seen[1]) {
		return
	}
	f.seen = seen
	c, err := f.read()
	if err != nil {
		f.failures.Add(1)
		f.o.Log.Error("TLS certificate files changed but do not load; still serving the certificate loaded before", "err", err,
			"not_after", f.cert.Load().Leaf.NotAfter)
		return
	}
	f.cert.Store(c)
	f.o.Log.Info("TLS certificate reloaded", "cert_file", f.certFile, "subject", c.Leaf.Subject.String(),
		"serial", c.Leaf.SerialNumber.String(), "not_after", c.Leaf.NotAfter)
}

// stat looks at both files (through symbolic links: a Kubernetes Secret
// volume swaps a link to a new directory).
func (f *Files) stat() ([2]os.FileInfo, error) {
	var seen [2]os.FileInfo
	for i, p := range []string{f.certFile, f.keyFile} {
		fi, err := os.Stat(p)
		if err != nil {
			return seen, err
		}
		seen[i] = fi
	}
	return seen, nil
}

// same reports whether a file is unchanged: the same file (inode), with
// the same modification time and size.
func same(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

// read loads the pair and parses the leaf.
func (f *Files) read() (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s and key %s: %w", f.certFile, f.keyFile, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("TLS certificate %s: %w", f.certFile, err)
		}
	}
	return &c, nil
}
