package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/silent"
)

// TestStartWithSilentCoreAndNATS: a proxy whose coreapi (IDENTITY_URL)
// and NATS servers (three in NATS_URL) accept connections and never
// answer (a partition, a failover to a stale address) comes up within
// seconds, /healthz answering and /readyz not: neither the key set's
// fetch nor the NATS connection is waited for before it listens.
func TestStartWithSilentCoreAndNATS(t *testing.T) {
	out, _ := stdoutFile(t)
	log := func() string { b, _ := os.ReadFile(out.Name()); return string(b) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- run(ctx, nil, envFrom(map[string]string{
			"IDENTITY_HMAC_KEY": testenv.HMACKeyText, "IDENTITY_URL": "http://" + silent.Addr(t),
			"NATS_URL":          "nats://" + silent.Addr(t) + ",nats://" + silent.Addr(t) + ",nats://" + silent.Addr(t),
			"PROXY_LISTEN_ADDR": "127.0.0.1:0", "PROXY_ADMIN_ADDR": "127.0.0.1:0",
		}), out)
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("run did not return")
		}
	}()
	// The first NATS connection is made in the background (the client's
	// own pass before it returned took 2 s for each silent server: 6 s
	// here); the key set is fetched in the background.
	const bound = 3 * time.Second
	var admin string
	for admin == "" {
		if time.Since(start) > bound {
			t.Fatalf("not listening within %s with coreapi and NATS silent:\n%s", bound, log())
		}
		select {
		case err := <-done:
			t.Fatalf("run returned: %v\n%s", err, log())
		case <-time.After(20 * time.Millisecond):
		}
		for _, l := range strings.Split(log(), "\n") {
			var rec struct {
				Msg       string `json:"msg"`
				AdminAddr string `json:"admin_addr"`
			}
			if json.Unmarshal([]byte(l), &rec) == nil && rec.Msg == "listening" {
				admin = rec.AdminAddr
			}
		}
	}
	t.Logf("listening after %v", time.Since(start))
	c := http.Client{Timeout: 5 * time.Second}
	for _, p := range []struct {
		path string
		want int
	}{{"/healthz", http.StatusOK}, {"/readyz", http.StatusServiceUnavailable}} {
		resp, err := c.Get("http://" + admin + p.path)
		if err != nil {
			t.Fatalf("GET %s: %v", p.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != p.want {
			t.Errorf("%s = %d, want %d\n%s", p.path, resp.StatusCode, p.want, log())
		}
	}
}
