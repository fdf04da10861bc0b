// Package migrations embeds the SQL migrations of the data model, in goose
// format ("-- +goose Up" / "-- +goose Down"), beside the few written in Go
// where SQL cannot do the work (addresses.go). coreapi applies them with
// `coreapi migrate up|down|status`; tests apply them to a fresh database.
package migrations

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
)

// FS holds the migration files under sql/.
//
//go:embed sql/*.sql
var FS embed.FS

// Dir is the directory inside FS that holds the migrations.
const Dir = "sql"

func mustSub() fs.FS {
	sub, err := fs.Sub(FS, Dir)
	if err != nil {
		panic(err) // Dir is a constant that exists in FS
	}
	return sub
}

// Fingerprint names the set of migrations this build applies: a hash of
// every SQL file's name and text and of the versions of those in Go. Two
// builds with the same fingerprint migrate an empty database to the same
// schema (the migrations in Go only rewrite rows, of which an empty
// database has none), so a migrated copy made by one serves the other
// (dbsetup's template databases).
func Fingerprint() string {
	h := sha256.New()
	err := fs.WalkDir(mustSub(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(mustSub(), path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "sql %s %d\n", path, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		panic(err) // FS is embedded: every file in it can be read
	}
	for _, m := range goMigrations() {
		fmt.Fprintf(h, "go %d\n", m.Version)
	}
	return hex.EncodeToString(h.Sum(nil))
}
