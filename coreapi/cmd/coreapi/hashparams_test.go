package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/eventually"
)

// TestStoredHashParamsReadBesideReadiness: the read of the stored hashes'
// parameter sets (one pass over every account) does not hold serve's
// readiness. It ran inside the start's database checks, within their 5 s
// deadline: on a users table too large to read in that time (or one
// locked by a long migration) every check ran out of time, again and
// again, and coreapi never became ready. Here a transaction holds the
// users table: serve becomes ready all the same, and reads the sets once
// the table is free (its log names the older set).
func TestStoredHashParamsReadBesideReadiness(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	older, err := password.New(password.Params{Memory: 8192, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}, 1).Hash(ctx, "a password 1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO users (email, password_hash) VALUES ('older@example.org', $1)`, older); err != nil {
		t.Fatal(err)
	}
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, `LOCK TABLE users IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}

	env := serveEnv(t, db.URL)
	sctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var out testkit.LogBuffer
	errc := make(chan error, 1)
	go func() { errc <- serveWith(sctx, nil, envOf(env), &out, hooks{}) }()
	_, admin := listening(t, &out, errc)
	eventually.Within(t, startupDBTimeout+15*time.Second, func() error {
		if code, body := probe(t, "http://"+admin+"/readyz"); code != http.StatusOK {
			return fmt.Errorf("readyz = %d %s while the users table is held", code, body)
		}
		return nil
	})
	if strings.Contains(out.String(), "each parameter set of the stored hashes") {
		t.Fatalf("the stored sets were read while the users table was held:\n%s", out.String())
	}

	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	eventually.Within(t, 30*time.Second, func() error {
		if !strings.Contains(out.String(), "each parameter set of the stored hashes") || !strings.Contains(out.String(), "8192") {
			return errors.New("the stored hashes' parameter sets not read yet:\n" + out.String())
		}
		return nil
	})
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("serve after cancel = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
}
