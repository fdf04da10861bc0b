package migrations

import (
	"context"
	"database/sql"
	"fmt"
	"io"

	"github.com/pressly/goose/v3"
)

// NewProvider returns a goose provider over the embedded migrations for a
// PostgreSQL database.
func NewProvider(db *sql.DB) (*goose.Provider, error) {
	p, err := goose.NewProvider(goose.DialectPostgres, db, mustSub(), goose.WithLogger(goose.NopLogger()))
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return p, nil
}

// Up applies every pending migration.
func Up(ctx context.Context, db *sql.DB) error {
	p, err := NewProvider(db)
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrations up: %w", err)
	}
	return nil
}

// Down rolls back the most recent migration; with all set, every one.
func Down(ctx context.Context, db *sql.DB, all bool) error {
	p, err := NewProvider(db)
	if err != nil {
		return err
	}
	if all {
		_, err = p.DownTo(ctx, 0)
	} else {
		_, err = p.Down(ctx)
	}
	if err != nil {
		return fmt.Errorf("migrations down: %w", err)
	}
	return nil
}

// Status writes one line per migration (version, state, applied time) to w.
func Status(ctx context.Context, db *sql.DB, w io.Writer) error {
	p, err := NewProvider(db)
	if err != nil {
		return err
	}
	st, err := p.Status(ctx)
	if err != nil {
		return fmt.Errorf("migrations status: %w", err)
	}
	for _, s := range st {
		applied := "-"
		if !s.AppliedAt.IsZero() {
			applied = s.AppliedAt.UTC().Format("2006-01-02T15:04:05Z")
		}
		fmt.Fprintf(w, "%05d  %-8s  %s  %s\n", s.Source.Version, s.State, applied, s.Source.Path)
	}
	return nil
}
