// Package migrations embeds the SQL migrations of the data model, in goose
// format ("-- +goose Up" / "-- +goose Down"), beside the few written in Go
// where SQL cannot do the work (addresses.go). coreapi applies them with
// `coreapi migrate up|down|status`; tests apply them to a fresh database.
package migrations

import (
	"embed"
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
