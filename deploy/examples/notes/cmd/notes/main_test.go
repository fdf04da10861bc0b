package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/replay"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestDefaults(t *testing.T) {
	c, err := loadConfig(envOf(map[string]string{"TOLLGATE_IDENTITY_KEYS": "app-notes:" + base64.StdEncoding.EncodeToString(secret)}))
	if err != nil {
		t.Fatal(err)
	}
	if c.listen != "127.0.0.1:8082" || c.admin != "" || c.shutdown != 10*time.Second || len(c.keys) != 1 || c.keys[0].ID != "app-notes" ||
		c.replays != replay.DefaultSize || c.allowReplays {
		t.Fatalf("defaults = %+v", c)
	}
	for v, want := range map[string]config{"1024": {replays: 1024}, "off": {replays: replay.DefaultSize, allowReplays: true}} {
		c, err := loadConfig(envOf(map[string]string{"TOLLGATE_IDENTITY_KEYS": "app-notes:" + base64.StdEncoding.EncodeToString(secret),
			"NOTES_REPLAY_CACHE_SIZE": v}))
		if err != nil || c.replays != want.replays || c.allowReplays != want.allowReplays {
			t.Errorf("NOTES_REPLAY_CACHE_SIZE=%s: %+v, %v", v, c, err)
		}
	}
}

func TestConfigErrorsReportedTogether(t *testing.T) {
	err := run(context.Background(), envOf(map[string]string{
		"NOTES_LISTEN_ADDR": "no-port", "NOTES_ADMIN_ADDR": "also-none", "LOG_LEVEL": "loud", "SHUTDOWN_TIMEOUT": "-1s",
		"NOTES_REPLAY_CACHE_SIZE": "12",
	}), true, io.Discard, nil)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"NOTES_LISTEN_ADDR", "NOTES_ADMIN_ADDR", "LOG_LEVEL", "SHUTDOWN_TIMEOUT", "TOLLGATE_IDENTITY_KEYS", "NOTES_REPLAY_CACHE_SIZE"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "keys")
	if err := os.WriteFile(file, []byte("app-notes:"+base64.StdEncoding.EncodeToString(secret)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), envOf(map[string]string{"TOLLGATE_IDENTITY_KEYS_FILE": file}), true, io.Discard, nil); err != nil {
		t.Fatalf("-check-config with a key file: %v", err)
	}
}

// TestReplayCacheSizeBounded: -check-config refuses a replay memory
// larger than verify.New takes; it passed one, which then panicked at
// start or asked for that much memory.
func TestReplayCacheSizeBounded(t *testing.T) {
	keys := "app-notes:" + base64.StdEncoding.EncodeToString(secret)
	for _, v := range []string{"1073741825", "1099511627776", "9223372036854775807"} {
		err := run(context.Background(), envOf(map[string]string{"TOLLGATE_IDENTITY_KEYS": keys, "NOTES_REPLAY_CACHE_SIZE": v}), true, io.Discard, nil)
		if err == nil || !strings.Contains(err.Error(), "NOTES_REPLAY_CACHE_SIZE") {
			t.Errorf("NOTES_REPLAY_CACHE_SIZE=%s: %v, want refused", v, err)
		}
	}
	c, err := loadConfig(envOf(map[string]string{"TOLLGATE_IDENTITY_KEYS": keys, "NOTES_REPLAY_CACHE_SIZE": "1073741824"}))
	if err != nil || c.replays != 1<<30 {
		t.Fatalf("NOTES_REPLAY_CACHE_SIZE=1073741824: %+v, %v", c, err)
	}
}

// TestRun starts the command as it runs in production, from the
// environment, serves a signed request and an unsigned one, and stops on
// cancel.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	done := make(chan error, 1)
	logs := &syncBuf{}
	env := envOf(map[string]string{
		"NOTES_LISTEN_ADDR":      "127.0.0.1:0",
		"NOTES_ADMIN_ADDR":       "127.0.0.1:0",
		"TOLLGATE_IDENTITY_KEYS": "app-notes:" + base64.StdEncoding.EncodeToString(secret),
		"LOG_LEVEL":              "debug",
	})
	go func() { done <- run(ctx, env, false, logs, ready) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready after 10 s")
	}
	s, err := identity.NewKeySigner(identity.Key{ID: "app-notes", Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := http.NewRequest("POST", "http://"+addr+"/notes", strings.NewReader(`{"text":"hi"}`))
	r.Header.Set("Content-Type", "application/json")
	if err := verify.Sign(r, s, identity.Identity{UserID: "u1", TenantID: "t1", Permissions: []string{"notes:write"}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 201 {
		t.Fatalf("signed POST: %d", res.StatusCode)
	}
	// The same signed request again: a replay, refused by default.
	again, _ := http.NewRequest("POST", "http://"+addr+"/notes", strings.NewReader(`{"text":"hi"}`))
	again.Header = r.Header.Clone()
	res, err = http.DefaultClient.Do(again)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("the signed POST again: %d, want 401", res.StatusCode)
	}
	res, err = http.Get("http://" + addr + "/notes")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("unsigned GET: %d", res.StatusCode)
	}
	m := regexp.MustCompile(`"msg":"admin listening"[^}]*"addr":"([^"]+)"`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no admin address in the log: %s", logs.String())
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		res, err := http.Get("http://" + m[1] + p)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("admin %s: %d", p, res.StatusCode)
		}
	}
	if !strings.Contains(logs.String(), `"reason":"missing"`) {
		t.Errorf("debug log lacks the rejection reason: %s", logs.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("did not stop")
	}
}
