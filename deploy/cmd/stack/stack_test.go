package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"

	"github.com/tollgate-auth/tollgate/deploy/internal/repo"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/refused"
)

func TestEnsureHMACKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "identity.key")

	created, err := ensureHMACKey(path)
	if err != nil || !created {
		t.Fatalf("first ensureHMACKey = %v, %v; want true, nil", created, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o600 {
		t.Errorf("mode = %o, want 600", got)
	}
	first, _ := os.ReadFile(path)
	key, err := identity.LoadKey("", path)
	if err != nil {
		t.Fatalf("LoadKey: %v", err)
	}
	if len(key) != 32 {
		t.Errorf("key length = %d, want 32", len(key))
	}

	created, err = ensureHMACKey(path)
	if err != nil || created {
		t.Fatalf("second ensureHMACKey = %v, %v; want false, nil", created, err)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, first) {
		t.Error("second run changed the key")
	}

	other := filepath.Join(dir, "other.key")
	created2, _ := ensureHMACKey(other)
	k2, _ := os.ReadFile(other)
	if !created2 || bytes.Equal(k2, first) {
		t.Error("two fresh keys are equal")
	}
}

func TestEnsureHMACKeyKeepsABadFile(t *testing.T) {
	for name, content := range map[string]string{
		"short":      "c2hvcnQ=\n",
		"not base64": "this is not a key!\n",
		"empty":      "",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "identity.key")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := ensureHMACKey(path)
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("ensureHMACKey(bad) = %v, want an error naming the file", err)
			}
			if got, _ := os.ReadFile(path); string(got) != content {
				t.Errorf("file changed to %q", got)
			}
		})
	}
}

func TestPrefixWriter(t *testing.T) {
	var out bytes.Buffer
	w := newPrefixWriter(&out, "svc | ")
	for _, chunk := range []string{"one\ntw", "o\n", "three", "\nfour"} {
		if n, err := w.Write([]byte(chunk)); err != nil || n != len(chunk) {
			t.Fatalf("Write(%q) = %d, %v", chunk, n, err)
		}
	}
	want := "svc | one\nsvc | two\nsvc | three\n"
	if got := out.String(); got != want {
		t.Fatalf("before flush got %q, want %q", got, want)
	}
	w.Flush()
	want += "svc | four\n"
	if got := out.String(); got != want {
		t.Fatalf("after flush got %q, want %q", got, want)
	}

	out.Reset()
	long := strings.Repeat("x", maxLine+1)
	_, _ = w.Write([]byte(long))
	if got := out.String(); got != "svc | "+long+"\n" {
		t.Fatalf("an over-long partial line was held (got %d bytes)", len(got))
	}
}

func TestPortsFree(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	free := freeAddr(t)
	err = portsFree(stackPort{"-proxy-addr", addr}, stackPort{"-core-addr", free})
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("portsFree(busy) = %v, want an error naming %s", err, addr)
	}
	// It says how to move the stack: the busy address's flag, through
	// RUNFLAGS, with a suggested address; nothing about the free one.
	_, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	if n += 10000; n > 65535 {
		n -= 20000
	}
	moved := net.JoinHostPort("127.0.0.1", strconv.Itoa(n))
	if want := "make run RUNFLAGS='-proxy-addr " + moved + "'"; !strings.Contains(err.Error(), want) {
		t.Errorf("portsFree(busy) = %v, want it to suggest %s", err, want)
	}
	if strings.Contains(err.Error(), free) || strings.Contains(err.Error(), "-core-addr") {
		t.Errorf("portsFree(busy) = %v, names the free address", err)
	}
	l.Close()
	if err := portsFree(stackPort{"-proxy-addr", addr}); err != nil {
		t.Fatalf("portsFree(free) = %v", err)
	}
}

func TestMovedAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8080":  "127.0.0.1:18080",
		"127.0.0.1:60000": "127.0.0.1:50000",
		"[::1]:1025":      "[::1]:11025",
		"no-port":         "no-port",
	} {
		if got := movedAddr(in); got != want {
			t.Errorf("movedAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLocalURL(t *testing.T) {
	tests := map[string]string{
		":8080":          "http://127.0.0.1:8080",
		"0.0.0.0:9090":   "http://127.0.0.1:9090",
		"127.0.0.1:8081": "http://127.0.0.1:8081",
		"[::]:8080":      "http://127.0.0.1:8080",
		"[::1]:8080":     "http://[::1]:8080",
	}
	for in, want := range tests {
		if got := localURL(in); got != want {
			t.Errorf("localURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestEmbeddedNATS starts two embedded servers (the second cannot have the
// same port) and, through each, checks the users of the shipped
// configuration: coreapi's URL publishes an invalidation that authproxy's
// URL receives, a client without credentials is refused, authproxy may
// not publish, and the passwords are not left in the environment (the
// children inherit it).
func TestEmbeddedNATS(t *testing.T) {
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	var urls []string
	for range 2 {
		ns, err := startNATS(root)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		urls = append(urls, ns.ClientURL())
		for _, v := range natsPasswordVars {
			if _, ok := os.LookupEnv(v); ok {
				t.Errorf("%s left in the environment", v)
			}
		}
		if !strings.Contains(ns.coreURL, "coreapi:") || !strings.Contains(ns.proxyURL, "authproxy:") || ns.coreURL == ns.proxyURL {
			t.Fatalf("URLs %s, %s", redactURL(ns.coreURL), redactURL(ns.proxyURL))
		}

		if nc, err := nats.Connect(ns.ClientURL()); err == nil {
			nc.Close()
			t.Fatalf("%s accepted a client without credentials", ns.ClientURL())
		} else if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("without credentials: %v, want an authorization error", err)
		}

		violations := make(chan error, 4)
		proxy, err := nats.Connect(ns.proxyURL, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
		if err != nil {
			t.Fatal(err)
		}
		sub, err := proxy.SubscribeSync("auth.invalidate.>")
		if err != nil {
			t.Fatal(err)
		}
		if err := proxy.Flush(); err != nil {
			t.Fatal(err)
		}
		core, err := nats.Connect(ns.coreURL)
		if err != nil {
			t.Fatal(err)
		}
		if err := core.Publish("auth.invalidate.all", []byte(`{"at":1}`)); err != nil {
			t.Fatal(err)
		}
		msg, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("no message from coreapi's user to authproxy's: %v", err)
		}
		if string(msg.Data) != `{"at":1}` {
			t.Errorf("got %q", msg.Data)
		}
		if err := proxy.Publish("auth.invalidate.all", []byte(`{"at":2}`)); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-violations:
			if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
				t.Errorf("authproxy's publish: %v, want a permissions violation", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("authproxy's user published without a permissions violation")
		}
		if m, err := sub.NextMsg(200 * time.Millisecond); err == nil {
			t.Errorf("authproxy's own publication was delivered: %q", m.Data)
		}
		core.Close()
		proxy.Close()
	}
	if urls[0] == urls[1] {
		t.Fatalf("both servers at %s", urls[0])
	}
}

// TestRedactURL: the stack prints a NATS_URL it was given without its
// password or token.
func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                   "nats://127.0.0.1:4222",
		"nats://coreapi:s3cret@nats:4222":         "nats://coreapi:xxxxx@nats:4222",
		"tls://t0ken@nats:4222":                   "tls://xxxxx@nats:4222",
		"nats://a:s3cret@n1:4222,nats://b:x@n2:1": "nats://a:xxxxx@n1:4222,nats://b:xxxxx@n2:1",
		"nats://a:s3cret@n1:bad port":             "(unparsable URL)",
		// A '/', '?' or '#' left unescaped in a password ends the
		// authority before it: the parser finds no user information, and
		// the rest of the password in a path, query or fragment.
		"nats://a:12/s3cret@n1:4222":                "(unparsable URL)",
		"nats://a:12?s3cret@n1:4222":                "(unparsable URL)",
		"nats://a:12#s3cret@n1:4222":                "(unparsable URL)",
		"nats:a:s3cret@n1:4222":                     "(unparsable URL)",
		"nats://n0:4222,nats://a:12/s3cret@n1:4222": "nats://n0:4222,(unparsable URL)",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestMigrateTwice applies the migrations to a fresh database twice: the
// second run of `make run` must find nothing to do and not fail.
func TestMigrateTwice(t *testing.T) {
	dbURL := freshDatabase(t)
	for i := range 2 {
		if err := migrate(context.Background(), dbURL, 30*time.Second); err != nil {
			t.Fatalf("migrate #%d: %v", i+1, err)
		}
	}
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM information_schema.tables WHERE table_name = 'users'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("users table count = %d, %v; want 1", n, err)
	}
}

func TestMigrateUnreachable(t *testing.T) {
	addr := refused.Addr(t) // nothing listens there
	err := migrate(context.Background(), "postgres://postgres@"+addr+"/x?sslmode=disable&connect_timeout=1", 500*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "database unreachable") {
		t.Fatalf("migrate(unreachable) = %v, want a database unreachable error", err)
	}
}

// TestWaitDBSaysItWaits: a database that does not answer at once is
// reported once, with the error and how long it is retried, instead of
// leaving `make run` silent for up to -ready-timeout; one that answers at
// once, or refuses for good, is not.
func TestWaitDBSaysItWaits(t *testing.T) {
	var notes []string
	ctx := withDBWaitNote(context.Background(), func(err error, wait time.Duration) {
		notes = append(notes, fmt.Sprintf("%v for %v", err, wait))
	})
	tries := 0
	err := waitDB(ctx, time.Minute, func(context.Context) error {
		if tries++; tries < 3 {
			return errors.New("dial tcp 127.0.0.1:5433: connect: connection refused")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"dial tcp 127.0.0.1:5433: connect: connection refused for 1m0s"}; !slices.Equal(notes, want) {
		t.Errorf("notes = %q, want %q", notes, want)
	}

	notes = nil
	if err := waitDB(ctx, time.Minute, func(context.Context) error { return nil }); err != nil || notes != nil {
		t.Errorf("answering at once: err %v, notes %q", err, notes)
	}
	refusedErr := &pgconn.PgError{Severity: "FATAL", Code: "28000", Message: `role "x" does not exist`}
	if err := waitDB(ctx, time.Minute, func(context.Context) error { return refusedErr }); err == nil || notes != nil {
		t.Errorf("refused for good: err %v, notes %q", err, notes)
	}
}

// adminURL is the server tests create databases on (as coreapi's dbtest).
func adminURL() string {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// freshDatabase creates an empty database and drops it after the test. An
// unreachable server fails the test.
func freshDatabase(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, adminURL())
	if err != nil {
		t.Fatalf("connect to PostgreSQL (set DATABASE_URL or use `make test`): %v", err)
	}
	defer admin.Close(ctx)
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := "stack_" + hex.EncodeToString(rnd[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, adminURL())
		if err != nil {
			t.Errorf("drop %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	u, err := url.Parse(adminURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}
