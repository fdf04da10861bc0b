package schema_test

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/schema"
	"github.com/tollgate-auth/tollgate/migrations"
)

func sqlDB(t *testing.T, url string) *sql.DB {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDB(*cfg)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// TestCheckAndReadiness: a migrated database passes; one migration behind,
// or never migrated, Check says what to run and /readyz answers 503 with it.
func TestCheckAndReadiness(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	if schema.Needed() < 3 {
		t.Fatalf("Needed() = %d, want the newest embedded migration", schema.Needed())
	}
	a := httpapi.NewAdmin(db.Pool, prometheus.NewRegistry())
	a.SetSchemaCheck(func(ctx context.Context) error { return schema.Check(ctx, db.Pool) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = a.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	readyz := func() (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + ln.Addr().String() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 512)
		n, _ := resp.Body.Read(buf)
		b.Write(buf[:n])
		return resp.StatusCode, b.String()
	}

	if err := schema.Check(ctx, db.Pool); err != nil {
		t.Fatalf("Check on a migrated database = %v", err)
	}
	if code, body := readyz(); code != http.StatusOK {
		t.Fatalf("readyz on a migrated database = %d %s", code, body)
	}

	sdb := sqlDB(t, db.URL)
	if err := migrations.Down(ctx, sdb, false); err != nil {
		t.Fatal(err)
	}
	err = schema.Check(ctx, db.Pool)
	if !errors.Is(err, schema.ErrOutdated) || !strings.Contains(err.Error(), "coreapi migrate up") {
		t.Fatalf("Check one migration behind = %v, want ErrOutdated naming `coreapi migrate up`", err)
	}
	if code, body := readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "coreapi migrate up") {
		t.Fatalf("readyz one migration behind = %d %q, want 503 naming the command", code, body)
	}

	// Never migrated: no version table at all.
	if err := migrations.Down(ctx, sdb, true); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `DROP TABLE goose_db_version`); err != nil {
		t.Fatal(err)
	}
	if err := schema.Check(ctx, db.Pool); !errors.Is(err, schema.ErrOutdated) || !strings.Contains(err.Error(), "version 0") {
		t.Fatalf("Check on an empty database = %v, want ErrOutdated at version 0", err)
	}
	if code, _ := readyz(); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz on an empty database = %d, want 503", code)
	}

	// Migrated again: ready again.
	if err := migrations.Up(ctx, sdb); err != nil {
		t.Fatal(err)
	}
	if code, body := readyz(); code != http.StatusOK {
		t.Fatalf("readyz after migrate up = %d %s", code, body)
	}
}

// TestCaseMapping: the test databases lowercase beyond ASCII; one created
// with LC_CTYPE C does not, and CaseMapping says so with its LC_CTYPE.
func TestCaseMapping(t *testing.T) {
	ctx := context.Background()
	db := dbtest.New(t)
	if ok, ctype, err := schema.CaseMapping(ctx, db.Pool); err != nil || !ok {
		t.Fatalf("test database (LC_CTYPE %q): CaseMapping = %v, %v; want true", ctype, ok, err)
	}
	admin, err := pgx.Connect(ctx, dbtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	name := strings.ToLower(strings.ReplaceAll(t.Name(), "/", "_")) + "_c"
	_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") })
	cfg, err := pgx.ParseConfig(dbtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = name
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if ok, ctype, err := schema.CaseMapping(ctx, c); err != nil || ok || ctype != "C" {
		t.Errorf("LC_CTYPE C: CaseMapping = %v, %q, %v; want false, \"C\"", ok, ctype, err)
	}
}
