// Package pgcheck checks how a local PostgreSQL cluster the tools start
// admits its superuser.
package pgcheck

import (
	"context"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// WantPasswordRequired fails t unless the server at dbURL admits the URL's
// user with the URL's password (and runs a query), and refuses that user
// without a password and with a wrong one. It clears PGPASSWORD and
// PGPASSFILE for the rest of the test, so that neither supplies a password
// the URL lacks; t must not be parallel.
func WantPasswordRequired(t testing.TB, dbURL string) {
	t.Helper()
	t.Setenv("PGPASSWORD", "")
	t.Setenv("PGPASSFILE", filepath.Join(t.TempDir(), "none"))
	connect := func(u string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		var one int
		return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
	}
	if err := connect(dbURL); err != nil {
		t.Fatalf("with the URL's password: %v", err)
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	for name, user := range map[string]*url.Userinfo{
		"no password":    url.User(u.User.Username()),
		"wrong password": url.UserPassword(u.User.Username(), "wrong"),
	} {
		u.User = user
		if err := connect(u.String()); err == nil {
			t.Errorf("%s: the cluster let the superuser in", name)
		}
	}
}
