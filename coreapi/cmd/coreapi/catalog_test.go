package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/natstest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

const notesCatalog = "permissions:\n  - {name: notes:read, description: Read notes, member_default: true}\n  - {name: notes:write, description: Create notes}\n"

func TestCheckConfigPermissions(t *testing.T) {
	file := filepath.Join(t.TempDir(), "permissions.yaml")
	if err := os.WriteFile(file, []byte(notesCatalog), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"DATABASE_URL":      "postgres://app@db:5432/tollgate",
		"IDENTITY_HMAC_KEY": testKey,
		"SIGNING_KEYS_DIR":  t.TempDir(),
		"PERMISSIONS_FILE":  file,
		"MAIL_TO_LOG":       "true",
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"keys", "generate"}, envOf(env), &out); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{"-check-config"}, envOf(env), &out); err != nil {
		t.Fatalf("check-config: %v", err)
	}
	if !strings.Contains(out.String(), "# permission catalog: 2 declared [notes:read notes:write]") {
		t.Errorf("output lacks the catalog:\n%s", out.String())
	}
	if err := os.WriteFile(file, []byte("- {name: notes_read, description: x}\n- {name: roles:read, description: x}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), []string{"-check-config"}, envOf(env), &out)
	for _, want := range []string{`"notes_read": name: want resource:action`, `"roles:read": name: a built-in permission cannot be redeclared`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("check-config with a bad catalog = %v, want it to report %s", err, want)
		}
	}
}

// TestServeRecordsCatalog runs the real serve command three times against
// one database and a real NATS server: the first start records its catalog
// and auth.invalidate.all goes out; a restart with the same catalog sends
// nothing; a start with another catalog sends it again.
func TestServeRecordsCatalog(t *testing.T) {
	db := dbtest.New(t)
	ns := natstest.Start(t, -1, "")
	var all atomic.Int32
	sub := natstest.Connect(t, ns.ClientURL())
	if _, err := sub.Subscribe(invalidation.SubjectAll, func(*nats.Msg) { all.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	keysDir := t.TempDir()
	if err := run(context.Background(), []string{"keys", "generate", "-dir", keysDir}, envOf(nil), &bytes.Buffer{}); err != nil {
		t.Fatalf("keys generate: %v", err)
	}
	serveOnce := func(catalog string) (changed bool) {
		t.Helper()
		env := map[string]string{
			"DATABASE_URL": db.URL, "IDENTITY_HMAC_KEY": testKey, "SIGNING_KEYS_DIR": keysDir,
			"COREAPI_LISTEN_ADDR": "127.0.0.1:0", "COREAPI_ADMIN_ADDR": "127.0.0.1:0",
			"NATS_URL": ns.ClientURL(), "PERMISSIONS": catalog, "SHUTDOWN_TIMEOUT": "5s",
			"MAIL_TO_LOG": "true",
		}
		var out testkit.LogBuffer
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- run(ctx, []string{"serve"}, envOf(env), &out) }()
		defer func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("serve: %v", err)
			}
		}()
		deadline := time.Now().Add(20 * time.Second)
		for {
			s := out.String()
			if i := strings.Index(s, `"msg":"permission catalog recorded"`); i >= 0 && pendingRows(t, db) == 0 {
				// Recorded, and the relay has published what it queued.
				line := s[i:]
				line = line[:strings.IndexByte(line, '\n')]
				return strings.Contains(line, `"changed":true`)
			}
			if time.Now().After(deadline) {
				t.Fatalf("no catalog line in the log:\n%s", s)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitAll := func(n int32) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for all.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("auth.invalidate.all received %d times, want %d", all.Load(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	if !serveOnce(notesCatalog) {
		t.Fatal("first start did not record its catalog")
	}
	waitAll(1)
	if serveOnce(notesCatalog) {
		t.Fatal("a restart with the same catalog recorded a change")
	}
	if !serveOnce("- {name: notes:read, description: Read notes, member_default: true}\n") {
		t.Fatal("a start with another catalog did not record it")
	}
	waitAll(2)
	// Every outbox row is out: the restart with the same catalog queued
	// none (two rows in all).
	var rows int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE subject = $1`, invalidation.SubjectAll).Scan(&rows); err != nil || rows != 2 {
		t.Fatalf("auth.invalidate.all outbox rows = %d, %v; want 2", rows, err)
	}
	var hash string
	if err := db.Pool.QueryRow(context.Background(), `SELECT hash FROM permission_catalog`).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	c, _ := permissions.Parse([]byte("- {name: notes:read, description: Read notes, member_default: true}\n"), "test")
	if hash != c.Hash() {
		t.Fatalf("stored hash %s, want %s", hash, c.Hash())
	}
	if got := all.Load(); got != 2 {
		t.Fatalf("auth.invalidate.all received %d times, want 2", got)
	}
}

func pendingRows(t *testing.T, db *dbtest.DB) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE published_at IS NULL`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestReadyOnceTheCatalogIsRecorded: a replica whose catalog is not the
// recorded one refuses every change that hands out privileges (503
// catalog_rollout), so it is not ready until it has recorded its own: a
// replica starting with another catalog than the stored one, whose record
// waits (here on the catalog's row, which a transaction of the test
// holds), answers /readyz with 503 naming the catalog, not 200, which
// sent it requests it would refuse; once the record is through it is
// ready, and the recorded catalog is its own.
func TestReadyOnceTheCatalogIsRecorded(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	if _, err := permissions.Record(ctx, db.Pool, permissions.Builtin()); err != nil {
		t.Fatal(err)
	}
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // committed below
	if _, err := tx.Exec(ctx, `SELECT 1 FROM permission_catalog FOR UPDATE`); err != nil {
		t.Fatal(err)
	}

	env := serveEnv(t, db.URL)
	env["PERMISSIONS"] = notesCatalog
	var out testkit.LogBuffer
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(sctx, []string{"serve"}, envOf(env), &out) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("serve: %v", err)
		}
	}()
	_, admin := listening(t, &out, done)

	// Either answer ends the wait: ready, or not ready for the catalog
	// alone (every other check passed).
	eventually.Within(t, 30*time.Second, func() error {
		code, body := probe(t, "http://"+admin+"/readyz")
		if code == http.StatusOK || strings.Contains(body, "permission catalog") {
			if code == http.StatusOK {
				t.Fatalf("readyz = 200 while the replica's catalog is not recorded (stored: the built-in one)")
			}
			return nil
		}
		return fmt.Errorf("readyz = %d %s", code, body)
	})
	if code, body := probe(t, "http://"+admin+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz before the record = %d %s, want 503", code, body)
	}

	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	eventually.Within(t, 30*time.Second, func() error {
		if code, body := probe(t, "http://"+admin+"/readyz"); code != http.StatusOK {
			return fmt.Errorf("readyz = %d %s", code, body)
		}
		return nil
	})
	c, err := permissions.Parse([]byte(notesCatalog), "test")
	if err != nil {
		t.Fatal(err)
	}
	var hash string
	if err := db.Pool.QueryRow(ctx, `SELECT hash FROM permission_catalog`).Scan(&hash); err != nil || hash != c.Hash() {
		t.Fatalf("stored hash %s, %v; want the replica's %s", hash, err, c.Hash())
	}
}

// TestStartBehindANewerCatalog: a replica whose catalog has a lower
// version than the recorded one (an old replica restarting mid-rollout)
// leaves the recorded catalog as it is, says so in its log, and becomes
// ready: it serves, refusing only what hands out privileges.
func TestStartBehindANewerCatalog(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	newer, err := permissions.Parse([]byte("version: 2\npermissions: [{name: notes:read, description: Read notes}]\n"), "test")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := permissions.Record(ctx, db.Pool, newer); err != nil || out != permissions.Stored {
		t.Fatalf("record the newer catalog: %v, %v", out, err)
	}

	env := serveEnv(t, db.URL)
	env["PERMISSIONS"] = notesCatalog // version 0
	var out testkit.LogBuffer
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(sctx, []string{"serve"}, envOf(env), &out) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("serve: %v", err)
		}
	}()
	_, admin := listening(t, &out, done)
	eventually.Within(t, 30*time.Second, func() error {
		if code, body := probe(t, "http://"+admin+"/readyz"); code != http.StatusOK {
			return fmt.Errorf("readyz = %d %s", code, body)
		}
		return nil
	})
	if !strings.Contains(out.String(), `"msg":"permission catalog behind the recorded one; not recorded"`) {
		t.Errorf("no warning that the catalog is behind in the log:\n%s", out.String())
	}
	var hash string
	var version int64
	if err := db.Pool.QueryRow(ctx, `SELECT hash, version FROM permission_catalog`).Scan(&hash, &version); err != nil {
		t.Fatal(err)
	}
	if hash != newer.Hash() || version != 2 {
		t.Fatalf("recorded %s version %d, want the newer catalog's %s version 2", hash, version, newer.Hash())
	}
	// The metrics say it too.
	_, metrics := probe(t, "http://"+admin+"/metrics")
	for _, want := range []string{"coreapi_permission_catalog_behind 1\n", "coreapi_permission_catalog_recorded_version 2\n", "coreapi_permission_catalog_version 0\n"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestRereadCatalog: a replica whose catalog was the recorded one at its
// start becomes behind when a rollout's new replica records another; it
// reads the record again every catalogRereadEvery, so its gauge shows it
// without waiting for a refused change, and shows when the recorded
// catalog is its own again.
func TestRereadCatalog(t *testing.T) {
	db := dbtest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	old, err := permissions.Parse([]byte(notesCatalog), "test")
	if err != nil {
		t.Fatal(err)
	}
	newer, err := permissions.Parse([]byte("version: 2\npermissions: [{name: notes:read, description: Read notes}]\n"), "test")
	if err != nil {
		t.Fatal(err)
	}
	recorded := make(chan struct{})
	done := make(chan error, 1)
	var out testkit.LogBuffer
	log := slog.New(slog.NewJSONHandler(&out, nil))
	go func() { done <- recordCatalog(old, db.Pool, log, recorded)(ctx) }()
	<-recorded
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rereads := make(chan error, 1)
	go func() { rereads <- rereadCatalog(old, db.Pool, log, 10*time.Millisecond, recorded)(ctx) }()
	defer func() {
		cancel()
		if err := <-rereads; err != nil {
			t.Errorf("rereadCatalog: %v", err)
		}
	}()
	if behind, v, read := old.Standing(); behind || v != 0 || !read {
		t.Fatalf("standing after the start = %v, %d, %v; want current, version 0", behind, v, read)
	}
	if _, err := permissions.Record(context.Background(), db.Pool, newer); err != nil {
		t.Fatal(err)
	}
	eventually.Within(t, 10*time.Second, func() error {
		if behind, v, _ := old.Standing(); !behind || v != 2 {
			return fmt.Errorf("standing = %v, %d; want behind version 2", behind, v)
		}
		return nil
	})
	// The old permissions under a higher version: current again.
	rollback, err := permissions.Parse([]byte("version: 3\n"+notesCatalog), "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := permissions.Record(context.Background(), db.Pool, rollback); err != nil {
		t.Fatal(err)
	}
	eventually.Within(t, 10*time.Second, func() error {
		if behind, v, _ := old.Standing(); behind || v != 3 {
			return fmt.Errorf("standing = %v, %d; want current, version 3", behind, v)
		}
		return nil
	})
}
