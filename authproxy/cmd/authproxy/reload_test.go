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

// SIGHUP makes the running proxy reload its rules file.
func TestSIGHUPReloadsRules(t *testing.T) {
	core := testenv.NewCore(t)
	core.Publish(testenv.NewKey(t, "20260101T000000Z-0000aaaa", jwa.EdDSA))
	nats := testenv.StartNATS(t)
	p := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(p, []byte("routes: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	read := func() string { b, _ := os.ReadFile(out); return string(b) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, envFrom(map[string]string{
			"IDENTITY_HMAC_KEY": testenv.HMACKeyText, "IDENTITY_URL": core.URL(), "NATS_URL": nats.URL(),
			"PROXY_LISTEN_ADDR": "127.0.0.1:0", "PROXY_ADMIN_ADDR": "127.0.0.1:0", "RULES_FILE": p,
		}), f)
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("run did not return")
		}
	}()
	// The handler is installed before the proxy says it listens.
	testenv.Eventually(t, func() error { return testenv.Contains("the log", read(), `"msg":"listening"`) })
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, func() error { return testenv.Contains("the log", read(), `"msg":"rules reloaded"`) })
}
