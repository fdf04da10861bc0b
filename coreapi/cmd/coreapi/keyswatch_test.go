package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/keys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// TestKeyChangeAnnounced runs the real serve command: it announces the
// keys it starts with (auth.keys.changed: a replica started after a key
// was removed has no reload to announce), and removing a signing key file
// takes it out of the JWKS and publishes auth.keys.changed (through the
// outbox, with its Nats-Msg-Id) within a second; SIGHUP reloads. Each
// event names the key set served then (its digest), so that proxies that
// hold it already need not refetch it.
func TestKeyChangeAnnounced(t *testing.T) {
	db := dbtest.New(t)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	changed := make(chan *nats.Msg, 16)
	if _, err := nc.ChanSubscribe(invalidation.SubjectKeysChanged, changed); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	oldKid, err := keys.Generate(dir, keys.AlgEdDSA, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	newKid, err := keys.Generate(dir, keys.AlgEdDSA, time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var out testkit.LogBuffer
	env := map[string]string{
		"DATABASE_URL":        db.URL,
		"IDENTITY_KEYS":       "core:" + testKey,
		"SIGNING_KEYS_DIR":    dir,
		"NATS_URL":            ns.ClientURL(),
		"COREAPI_LISTEN_ADDR": "127.0.0.1:0",
		"COREAPI_ADMIN_ADDR":  "127.0.0.1:0",
		"SHUTDOWN_TIMEOUT":    "5s",
		"MAIL_TO_LOG":         "true",
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve"}, envOf(env), &out) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("serve: %v", err)
		}
	}()
	base := "http://" + waitListening(t, &out, done)
	eventually.Within(t, 10*time.Second, func() error {
		if !strings.Contains(out.String(), "watching signing keys") {
			return errors.New("the key directory is not watched yet")
		}
		return nil
	})
	jwks := func() (string, error) {
		resp, err := http.Get(base + "/.well-known/jwks.json")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	if j, err := jwks(); err != nil || !strings.Contains(j, oldKid) {
		t.Fatalf("jwks before = %s, %v; want %s in it", j, err, oldKid)
	}
	// The start's announcement.
	select {
	case m := <-changed:
		var ev invalidation.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Reason != invalidation.ReasonKeysChanged || m.Header.Get(outbox.MsgIDHeader) == "" {
			t.Fatalf("start event %s (%v): %v", m.Data, m.Header, err)
		}
		j, _ := jwks()
		if want, err := invalidation.KeySetDigest([]byte(j)); err != nil || ev.Keys != want {
			t.Errorf("start event keys = %q, want %q, the digest of the JWKS served (%v)", ev.Keys, want, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s at start\n%s", invalidation.SubjectKeysChanged, out.String())
	}
	select {
	case m := <-changed:
		t.Fatalf("a second %s at start: %s", invalidation.SubjectKeysChanged, m.Data)
	case <-time.After(200 * time.Millisecond):
	}

	removed := time.Now()
	if err := os.Remove(filepath.Join(dir, oldKid+".pem")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-changed:
		var ev invalidation.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Reason != invalidation.ReasonKeysChanged {
			t.Fatalf("event body %s: %v", m.Data, err)
		}
		j, _ := jwks()
		if want, err := invalidation.KeySetDigest([]byte(j)); err != nil || ev.Keys != want {
			t.Errorf("event keys = %q, want %q, the digest of the JWKS served after the removal (%v)", ev.Keys, want, err)
		}
		if m.Header.Get(outbox.MsgIDHeader) == "" {
			t.Errorf("event without %s: not from the outbox", outbox.MsgIDHeader)
		}
		t.Logf("auth.keys.changed %s after the file was removed", time.Since(removed))
	case <-time.After(time.Second):
		t.Fatalf("no %s within 1s of removing a key file\n%s", invalidation.SubjectKeysChanged, out.String())
	}
	if j, err := jwks(); err != nil || strings.Contains(j, oldKid) || !strings.Contains(j, newKid) {
		t.Fatalf("jwks after = %s, %v; want only %s", j, err, newKid)
	}

	// SIGHUP reloads at once (and does not stop the server).
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually.Within(t, 5*time.Second, func() error {
		if !strings.Contains(out.String(), `"msg":"reloading signing keys","signal":"hangup"`) {
			return fmt.Errorf("no reload logged after SIGHUP")
		}
		return nil
	})
	if _, err := jwks(); err != nil {
		t.Fatalf("after SIGHUP: %v", err)
	}
}
