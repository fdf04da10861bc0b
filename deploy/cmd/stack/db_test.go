package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/shared/identity"
)

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// dropLater drops database name (if it exists then) when the test ends.
func dropLater(t *testing.T, name string) string {
	t.Helper()
	t.Cleanup(func() {
		if err := dropDatabase(context.Background(), adminURL(), name, 30*time.Second); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	return name
}

// tableCount is the number of tables outside the system schemas of the
// database at dbURL.
func tableCount(t *testing.T, dbURL string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func databaseExists(t *testing.T, name string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, adminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var ok bool
	if err := c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestDatabaseURL(t *testing.T) {
	got, err := databaseURL("postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "tollgate")
	if err != nil || got != "postgres://postgres@127.0.0.1:5432/tollgate?sslmode=disable" {
		t.Fatalf("databaseURL = %q, %v", got, err)
	}
	for _, bad := range []struct{ server, name, want string }{
		{"postgres://h/postgres", "postgres", "belongs to the server"},
		{"postgres://h/postgres", "Template1", "belongs to the server"},
		{"postgres://h/postgres", "", "empty database name"},
		{"mysql://h/x", "tollgate", "postgres:// URL"},
		{"postgres://h:bad-port/x", "tollgate", "DATABASE_URL"},
	} {
		if _, err := databaseURL(bad.server, bad.name); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("databaseURL(%q, %q) = %v, want an error containing %q", bad.server, bad.name, err, bad.want)
		}
	}
}

// TestEnsureDatabase creates the stack's database once and finds it the
// second time; dropDatabase removes it and is idempotent.
func TestEnsureDatabase(t *testing.T) {
	name := dropLater(t, "stack_"+randHex(6))
	for i, wantCreated := range []bool{true, false} {
		u, created, err := ensureDatabase(context.Background(), adminURL(), name, 30*time.Second)
		if err != nil {
			t.Fatalf("ensureDatabase #%d: %v", i+1, err)
		}
		if created != wantCreated {
			t.Errorf("ensureDatabase #%d: created = %v, want %v", i+1, created, wantCreated)
		}
		if pu, _ := url.Parse(u); pu == nil || pu.Path != "/"+name {
			t.Errorf("ensureDatabase #%d: URL %q does not name %s", i+1, u, name)
		}
	}
	if !databaseExists(t, name) {
		t.Fatal("database not created")
	}
	for range 2 {
		if err := dropDatabase(context.Background(), adminURL(), name, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if databaseExists(t, name) {
		t.Fatal("database not dropped")
	}
	if err := dropDatabase(context.Background(), adminURL(), "postgres", time.Second); err == nil {
		t.Fatal("dropDatabase(postgres) succeeded")
	}
}

// TestPermanentDatabaseErrors: an unknown database or role is the
// server's final answer; the stack reports its message within seconds
// instead of waiting the whole ready timeout.
func TestPermanentDatabaseErrors(t *testing.T) {
	server, err := url.Parse(adminURL())
	if err != nil {
		t.Fatal(err)
	}
	noDB := *server
	noDB.Path = "/no_such_db_" + randHex(4)
	noRole := *server
	noRole.User = url.User("no_such_role_" + randHex(4))
	for name, tc := range map[string]struct {
		run  func() error
		want string
	}{
		"migrate, unknown database": {func() error { return migrate(context.Background(), noDB.String(), time.Minute) }, "does not exist"},
		"ensure, unknown role": {func() error {
			_, _, err := ensureDatabase(context.Background(), noRole.String(), "stack_"+randHex(6), time.Minute)
			return err
		}, "does not exist"},
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			err := tc.run()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "database refused") {
				t.Fatalf("err = %v, want the server's message (%q)", err, tc.want)
			}
			// Functional, not a performance bound: waiting would take the minute.
			if d := time.Since(start); d > 30*time.Second {
				t.Fatalf("took %v: the permanent error was retried", d)
			}
		})
	}
}

func TestEnsureAppKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "app-notes.keys")
	created, err := ensureAppKey(path, "app-notes")
	if err != nil || !created {
		t.Fatalf("first ensureAppKey = %v, %v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("stat = %v, %v; want mode 600", st, err)
	}
	first, _ := os.ReadFile(path)
	keys, err := identity.LoadKeys("", path)
	if err != nil || len(keys) != 1 || keys[0].ID != "app-notes" || len(keys[0].Secret) != 32 {
		t.Fatalf("LoadKeys = %+v, %v", keys, err)
	}
	if created, err := ensureAppKey(path, "app-notes"); err != nil || created {
		t.Fatalf("second ensureAppKey = %v, %v; want false, nil", created, err)
	}
	if again, _ := os.ReadFile(path); string(again) != string(first) {
		t.Error("second run changed the key")
	}
	for name, content := range map[string]string{
		"garbage":  "not a key list\n",
		"other id": "app-other:" + strings.TrimPrefix(strings.TrimSpace(string(first)), "app-notes:") + "\n",
		"empty":    "",
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "k")
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := ensureAppKey(p, "app-notes"); err == nil || !strings.Contains(err.Error(), p) {
				t.Fatalf("ensureAppKey(%s) = %v, want an error naming the file", name, err)
			}
			if got, _ := os.ReadFile(p); string(got) != content {
				t.Errorf("file changed to %q", got)
			}
		})
	}
}

func TestNotesRules(t *testing.T) {
	root := filepath.Join("..", "..", "..")
	o, err := parseFlags(nil, root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := notesRules(root, o)
	if err != nil || got != filepath.Join(root, "deploy", "examples", "notes", "rules.yaml") {
		t.Fatalf("default address: %q, %v; want the example's own rules.yaml", got, err)
	}
	o.dataDir, o.notesAddr = t.TempDir(), "127.0.0.1:18082"
	got, err = notesRules(root, o)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(got)
	if !strings.Contains(string(b), "url: http://127.0.0.1:18082") || strings.Contains(string(b), defaultNotesAddr) {
		t.Fatalf("rewritten rules:\n%s", b)
	}
}

// TestDefaultsOnLoopback: every port of `make run` is on 127.0.0.1, and the
// database is the stack's own.
func TestDefaultsOnLoopback(t *testing.T) {
	o, err := parseFlags(nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{o.coreAddr, o.coreAdmin, o.proxyAddr, o.proxyAdmin, o.notesAddr, o.notesAdmin} {
		if !strings.HasPrefix(a, "127.0.0.1:") {
			t.Errorf("default address %q is not on loopback", a)
		}
	}
	if o.database != "tollgate" {
		t.Errorf("default database %q, want tollgate", o.database)
	}
	if _, err := parseFlags([]string{"-database", "postgres", "-reset", "extra"}, t.TempDir()); err == nil {
		t.Error("a stray argument was accepted")
	}
}

// TestRunReset: `stack -reset` (make reset) drops the stack's database
// and nothing else.
func TestRunReset(t *testing.T) {
	name := dropLater(t, "stack_"+randHex(6))
	if _, _, err := ensureDatabase(context.Background(), adminURL(), name, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DATABASE_URL", adminURL())
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	data := recordRun(t, name, true)
	if err := run(context.Background(), logger, []string{"-reset", "-database", name, "-data", data}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	if databaseExists(t, name) {
		t.Fatal("database still there after -reset")
	}
	for _, reserved := range []string{"postgres", "template1"} {
		data := t.TempDir()
		writeRecord(t, data, usedDB{Database: reserved, ServerID: thisServerID(t), Created: true})
		err := run(context.Background(), logger, []string{"-reset", "-database", reserved, "-data", data}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "belongs to the server") {
			t.Errorf("-reset -database %s = %v, want a refusal", reserved, err)
		}
	}
}

// TestRunFailsFastOnPermanentDatabaseError: the whole runner stops with
// the server's message before building anything.
func TestRunFailsFastOnPermanentDatabaseError(t *testing.T) {
	u, err := url.Parse(adminURL())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User("no_such_role_" + randHex(4))
	t.Setenv("DATABASE_URL", u.String())
	data := t.TempDir()
	args := []string{"-data", data, "-database", "stack_" + randHex(6), "-ready-timeout", "2m",
		"-core-addr", freeAddr(t), "-core-admin-addr", freeAddr(t), "-proxy-addr", freeAddr(t),
		"-proxy-admin-addr", freeAddr(t), "-notes-addr", freeAddr(t), "-notes-admin-addr", freeAddr(t),
		"-mail-smtp-addr", freeAddr(t), "-mail-ui-addr", freeAddr(t)}
	start := time.Now()
	err = run(context.Background(), slog.New(slog.NewJSONHandler(io.Discard, nil)), args, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "database refused") || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("run = %v, want the server's refusal", err)
	}
	if d := time.Since(start); d > time.Minute {
		t.Fatalf("took %v: the permanent error was retried", d)
	}
	if _, err := os.Stat(filepath.Join(data, "bin")); err == nil {
		t.Error("binaries were built before the database was checked")
	}
}

// TestResetRefusesDatabaseInUse: `make reset` while a stack still uses its
// database (make run in another terminal) refuses, naming the cause, and
// drops nothing; it dropped the database from under that stack (and make
// then removed .data/ too). Once nothing is connected it drops it.
func TestResetRefusesDatabaseInUse(t *testing.T) {
	name := dropLater(t, "stack_"+randHex(6))
	dbURL, _, err := ensureDatabase(context.Background(), adminURL(), name, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("DATABASE_URL", adminURL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-reset", "-database", name, "-data", recordRun(t, name, true)}
	err = run(ctx, slog.New(slog.DiscardHandler), args, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "open connection") || !strings.Contains(err.Error(), "stop it first") {
		t.Errorf("reset with the database in use = %v", err)
	}
	if !databaseExists(t, name) {
		t.Fatal("reset dropped a database in use")
	}
	c.Close(ctx)
	if err := run(ctx, slog.New(slog.DiscardHandler), args, io.Discard, io.Discard); err != nil {
		t.Fatalf("reset with nothing connected: %v", err)
	}
	if databaseExists(t, name) {
		t.Error("reset did not drop the database")
	}
}

// TestResetDropsOnlyTheDatabaseRunUsed: `make reset` found its server by
// the rules `make run` follows, so after `PG_LOCAL=1 make run` (a cluster
// under .data/) a plain reset reached 127.0.0.1:5432 and dropped the
// `tollgate` there, which the stack never used. Reset now drops the
// database the run recorded, only on the server the run used (by its
// system identifier, whatever its port) and only when the run created it;
// with no record it drops nothing. Every database here is the test's own.
func TestResetDropsOnlyTheDatabaseRunUsed(t *testing.T) {
	name := dropLater(t, "stack_"+randHex(6))
	if _, _, err := ensureDatabase(context.Background(), adminURL(), name, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DATABASE_URL", adminURL())
	reset := func(data string) (string, error) {
		var logs strings.Builder
		err := run(context.Background(), slog.New(slog.NewJSONHandler(&logs, nil)), []string{"-reset", "-database", name, "-data", data}, io.Discard, io.Discard)
		return logs.String(), err
	}
	for _, tt := range []struct {
		name    string
		record  *usedDB // nil: none
		wantErr string
		wantLog string
	}{
		{"no record", nil, "", "no record of the database make run used"},
		{"another server's", &usedDB{Database: name, Server: "127.0.0.1:24680", ServerID: "1", Local: "/elsewhere/.data/postgres", Created: true},
			"another server", ""},
		{"not created by the stack", &usedDB{Database: name, ServerID: thisServerID(t), Created: false}, "", "existed before make run"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data := t.TempDir()
			if tt.record != nil {
				writeRecord(t, data, *tt.record)
			}
			logs, err := reset(data)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("reset = %v, want %q", err, tt.wantErr)
			}
			if !strings.Contains(logs, tt.wantLog) {
				t.Errorf("reset logged %s, want %q", logs, tt.wantLog)
			}
			if !databaseExists(t, name) {
				t.Fatal("reset dropped a database make run did not record as its own")
			}
		})
	}
	// The run's record names another database than -database: that one goes.
	other := dropLater(t, "stack_"+randHex(6))
	if _, _, err := ensureDatabase(context.Background(), adminURL(), other, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	data := recordRun(t, other, true)
	if logs, err := reset(data); err != nil {
		t.Fatalf("reset of the recorded database: %v\n%s", err, logs)
	}
	if databaseExists(t, other) || !databaseExists(t, name) {
		t.Errorf("after reset: recorded %s exists %v, -database %s exists %v; want only the recorded one gone",
			other, databaseExists(t, other), name, databaseExists(t, name))
	}
	if _, err := readUsedDB(data); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("record after the drop: %v, want it gone", err)
	}
}

// TestNoteDatabase: the record keeps that the stack created its database
// across runs that find it (make run again), names the kept cluster
// scripts/with-postgres.sh passes on, and a run on another database
// starts afresh.
func TestNoteDatabase(t *testing.T) {
	data := t.TempDir()
	ctx := context.Background()
	if _, _, err := noteDatabase(ctx, data, adminURL(), "stack_a", true, "", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	rec, forgotten, err := noteDatabase(ctx, data, adminURL(), "stack_a", false, "/x/.data/postgres", 30*time.Second)
	if err != nil || forgotten.Created {
		t.Fatalf("second run on the same database: forgotten %+v, %v; want none", forgotten, err)
	}
	if got, err := readUsedDB(data); err != nil || got != rec || !got.Created || got.Local != "/x/.data/postgres" || got.ServerID != thisServerID(t) {
		t.Errorf("second run's record %+v, %v; want stack_a created, this server, the cluster named", got, err)
	}
	// A run on another database (another server's, as after a run on
	// 5432 and one with PG_LOCAL=1) replaces the record: the database the
	// stack created is named, for make run to warn that make reset will
	// not drop it.
	if rec, forgotten, err := noteDatabase(ctx, data, adminURL(), "stack_b", false, "", 30*time.Second); err != nil || rec.Created ||
		!forgotten.Created || forgotten.Database != "stack_a" {
		t.Errorf("record of another database %+v, forgotten %+v, %v; want it not created by the stack, stack_a forgotten", rec, forgotten, err)
	}
	if err := os.WriteFile(filepath.Join(data, recordFile), []byte("created=true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readUsedDB(data); err == nil || !strings.Contains(err.Error(), "names no database") {
		t.Errorf("a record without a database: %v, want it refused", err)
	}
}

// thisServerID is the system identifier of the tests' server.
func thisServerID(t *testing.T) string {
	t.Helper()
	id, err := serverID(context.Background(), adminURL(), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// recordRun is a data directory whose record says a run used database
// name on the tests' server (created by it or not).
func recordRun(t *testing.T, name string, created bool) string {
	t.Helper()
	data := t.TempDir()
	if _, _, err := noteDatabase(context.Background(), data, adminURL(), name, created, "", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return data
}

func writeRecord(t *testing.T, data string, rec usedDB) {
	t.Helper()
	body := fmt.Sprintf("database=%s\nserver=%s\nsystem_identifier=%s\nlocal=%s\ncreated=%t\n", rec.Database, rec.Server, rec.ServerID, rec.Local, rec.Created)
	if err := os.WriteFile(filepath.Join(data, recordFile), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}
