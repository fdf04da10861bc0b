package main

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
)

// runProxy runs the proxy command with the rules file rules, a coreapi
// stand-in and a NATS server, until the test ends (when run must return
// nil), and returns a reader of its log.
func runProxy(t *testing.T, rules string) (log func() string) {
	t.Helper()
	core := testenv.NewCore(t)
	core.Publish(testenv.NewKey(t, "20260101T000000Z-0000aaaa", jwa.EdDSA))
	nats := testenv.StartNATS(t)
	out := filepath.Join(t.TempDir(), "out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, envFrom(map[string]string{
			"IDENTITY_HMAC_KEY": testenv.HMACKeyText, "IDENTITY_URL": core.URL(), "NATS_URL": nats.URL(),
			"PROXY_LISTEN_ADDR": "127.0.0.1:0", "PROXY_ADMIN_ADDR": "127.0.0.1:0", "RULES_FILE": rules,
		}), f)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run = %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("run did not return")
		}
		f.Close()
	})
	return func() string { b, _ := os.ReadFile(out); return string(b) }
}

// SIGHUP makes the running proxy reload its rules file.
func TestSIGHUPReloadsRules(t *testing.T) {
	p := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(p, []byte("routes: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	read := runProxy(t, p)
	// The handler is installed before the proxy says it listens.
	testenv.Eventually(t, func() error { return testenv.Contains("the log", read(), `"msg":"listening"`) })
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, func() error { return testenv.Contains("the log", read(), `"msg":"rules reloaded"`) })
}

// A SIGHUP that comes while the proxy is still starting (here, while it
// reads its rules file) is a reload once it serves: it had the default
// action, which ended the process (this test's with it).
func TestSIGHUPWhileStarting(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "rules.yaml")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	read := runProxy(t, p)
	// Opening the pipe to write returns once the proxy has opened it to
	// read: it is starting, and has read no rule yet.
	w, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The rules, then a plain file with them in the pipe's place for the
	// reload to read, before the proxy sees the end of the pipe.
	const rules = "routes: []\n"
	if _, err := w.WriteString(rules); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "rules.tmp")
	if err := os.WriteFile(plain, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(plain, p); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, func() error { return testenv.Contains("the log", read(), `"msg":"listening"`) })
	testenv.Eventually(t, func() error { return testenv.Contains("the log", read(), `"msg":"rules reloaded"`) })
}
