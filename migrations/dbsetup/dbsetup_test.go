package dbsetup

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
)

// versions lists the migrations applied to the database at dbURL, each
// with the time goose recorded it was applied.
func versions(t *testing.T, dbURL string) []string {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, `SELECT version_id::text || ' ' || tstamp::text FROM goose_db_version ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	v, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func create(t *testing.T, prefix string) (name, dbURL string) {
	t.Helper()
	name, dbURL, drop, err := Create(context.Background(), AdminURL(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	return name, dbURL
}

// Two databases are copies of one migrated database (the migrations ran
// once, at the same recorded times), not each migrated anew: migrating
// took a test most of its set-up time.
func TestCreateCopiesOneMigratedDatabase(t *testing.T) {
	_, first := create(t, "dbsetup")
	_, second := create(t, "dbsetup")
	a, b := versions(t, first), versions(t, second)
	if len(a) < 40 {
		t.Fatalf("%d migrations applied, want every one: %v", len(a), a)
	}
	if !slices.Equal(a, b) {
		t.Fatalf("the second database was migrated anew:\n%v\n%v", a, b)
	}
}

// The template of the migrations is complete, marked a template, and takes
// no connection: a session left open on it would make every copy fail,
// and one that wrote to it would write into every later test's database.
func TestTemplateTakesNoConnections(t *testing.T) {
	create(t, "dbsetup")
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var isTemplate, allowConn bool
	const q = `SELECT datistemplate, datallowconn FROM pg_database WHERE datname = $1`
	if err := admin.QueryRow(ctx, q, TemplateName()).Scan(&isTemplate, &allowConn); err != nil {
		t.Fatalf("template %s: %v", TemplateName(), err)
	}
	if !isTemplate || allowConn {
		t.Fatalf("template %s: datistemplate %v, datallowconn %v; want true, false", TemplateName(), isTemplate, allowConn)
	}
}
