package migrations

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pressly/goose/v3"

	"github.com/tollgate-auth/tollgate/shared/address"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// AddressesVersion is migration 00044, in Go (PostgreSQL cannot do IDNA):
// it rewrites the addresses stored by earlier releases into the form
// coreapi now stores, compares and looks up (address.Canonical: the domain
// in its Unicode form, lower case, without trailing dots). An account
// stored as "ada@xn--bcher-kva.example", "ada@bücher。example" or
// "ada@bücher.example." is looked up as "ada@bücher.example" and was found
// by no spelling until rewritten.
//
// It follows migration 00012 (normalize_emails()): users, invitations,
// action_tokens and identities; only rows whose domain may be spelled
// another way are read (upper case, a character outside a-z 0-9 . -, a
// Punycode label, a trailing dot) and address.Canonical decides; a row
// already canonical keeps its address; the others are rewritten one at a
// time, each in a savepoint, verified accounts first, then the oldest, and
// a row whose canonical form has become another row's address (as the
// unique indexes compare them, with lower()) is left exactly as it is and
// reported with a WARNING, which `coreapi migrate up` prints and the
// server log records. Each account rewritten is announced in the outbox
// (user.email_changed): the proxies' cached projections carry its
// address. It does not fail on such a row: which of two accounts of one
// mailbox to keep is the operator's decision
// (docs/operations.md). `coreapi migrate addresses` runs the same rewrite
// again (RewriteAddresses), after a duplicate was resolved and once after
// the rollout. The Down migration changes nothing: the earlier spellings
// are not kept, and each canonical one is the same address.
const AddressesVersion = 44

// goMigrations are the migrations written in Go, beside the SQL files.
func goMigrations() []*goose.Migration {
	return []*goose.Migration{
		goose.NewGoMigration(AddressesVersion, &goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			_, _, err := RewriteAddresses(ctx, tx)
			return err
		}}, nil),
	}
}

// goMigrationName names a migration in Go in the status, as its file
// names a SQL one.
func goMigrationName(version int64) string {
	if version == AddressesVersion {
		return "rewrite_addresses"
	}
	return ""
}

// candidate selects the rows whose domain may not be in its one spelling:
// a letter in upper case or outside ASCII, any other character than a-z,
// 0-9, "." and "-" (a "。", an underscore, an address literal), a Punycode
// label, a trailing dot. address.Canonical decides for each.
const candidate = `substring(email from '@([^@]*)$') ~ '[^a-z0-9.-]|xn--|\.$'`

// addressTable is one table whose addresses RewriteAddresses rewrites.
type addressTable struct {
	// rows selects key, label (what the report names) and email of the
	// candidates, in the order they are rewritten.
	rows string
	// update sets email to $2 in the row of key $1 if it still holds $3.
	update string
	// holders lists (text) the rows, other than $1's, that hold $2 as the
	// unique index compares it; "" for a table without one.
	holders string
	// holdersAre introduces the holders in the report (%s: the list).
	holdersAre string
	// subject is the invalidation subject of the row of key (nil: none),
	// announced in the outbox when its address is rewritten: the proxies'
	// cached projections carry a user's address.
	subject func(key string) string
}

func addressTables() []addressTable {
	return []addressTable{{
		rows: `SELECT id::text, 'users ' || id, email FROM users WHERE ` + candidate + `
ORDER BY email_verified_at IS NULL, created_at, id`,
		update:     `UPDATE users SET email = $2, updated_at = now() WHERE id = $1::uuid AND email = $3`,
		holders:    `SELECT string_agg(id::text, ', ') FROM users WHERE lower(email) = lower($2) AND id <> $1::uuid`,
		holdersAre: "the address of users %s",
		subject:    invalidation.UserSubject,
	}, {
		rows: `SELECT id::text, 'invitations ' || id, email FROM invitations WHERE ` + candidate + `
ORDER BY created_at, id`,
		update: `UPDATE invitations SET email = $2, updated_at = now() WHERE id = $1::uuid AND email = $3`,
		// The unique index compared lower(email) until migration 00051,
		// and lower(normalize(email, NFC)) since (a holder stored
		// decomposed by an earlier release has the address too): either,
		// so that the report names the holder whichever index the
		// rewrite runs under (00044 runs before 00051).
		holders: `SELECT string_agg(o.id::text, ', ') FROM invitations o JOIN invitations i ON i.id = $1::uuid
WHERE o.tenant_id = i.tenant_id AND o.status = 'pending' AND i.status = 'pending'
  AND (lower(o.email) = lower($2) OR lower(normalize(o.email, NFC)) = lower(normalize($2, NFC))) AND o.id <> i.id`,
		holdersAre: "the address of pending invitations %s of the same tenant",
	}, {
		// No unique index: only the length CHECK can leave a row (a
		// mailed link, which expires within a day).
		rows: `SELECT encode(token_hash, 'hex'), 'action_tokens of users ' || user_id, email FROM action_tokens WHERE ` + candidate + `
ORDER BY created_at`,
		update: `UPDATE action_tokens SET email = $2 WHERE token_hash = decode($1, 'hex') AND email = $3`,
	}, {
		rows: `SELECT id::text, 'identities ' || id, email FROM identities WHERE ` + candidate + `
ORDER BY created_at, id`,
		update: `UPDATE identities SET email = $2 WHERE id = $1::uuid AND email = $3`,
	}}
}

// RewriteAddresses rewrites, in tx, the stored addresses whose domain is
// not in its one spelling into address.Canonical form, and reports each
// row it has to leave with a WARNING (see AddressesVersion). It returns
// how many rows it rewrote and how many it left.
func RewriteAddresses(ctx context.Context, tx *sql.Tx) (rewritten, left int, err error) {
	for _, t := range addressTables() {
		rw, l, err := rewriteTable(ctx, tx, t)
		rewritten, left = rewritten+rw, left+l
		if err != nil {
			return rewritten, left, fmt.Errorf("rewrite addresses: %w", err)
		}
	}
	return rewritten, left, nil
}

// qAnnounce queues invalidation $1 for reason $2 in the outbox, as
// coreapi's outbox.Write does.
const qAnnounce = `INSERT INTO outbox (subject, payload)
VALUES ($1, jsonb_build_object('reason', $2::text, 'at', (extract(epoch FROM clock_timestamp()) * 1000)::bigint))`

// addressRow is a candidate row and its address's canonical form.
type addressRow struct{ key, label, email, canonical string }

func rewriteTable(ctx context.Context, tx *sql.Tx, t addressTable) (rewritten, left int, err error) {
	rows, err := tx.QueryContext(ctx, t.rows)
	if err != nil {
		return 0, 0, err
	}
	var todo []addressRow
	for rows.Next() {
		var r addressRow
		if err := rows.Scan(&r.key, &r.label, &r.email); err != nil {
			_ = rows.Close()
			return 0, 0, err
		}
		if r.canonical = address.Canonical(r.email); r.canonical != r.email {
			todo = append(todo, r)
		}
	}
	if err := rows.Close(); err != nil {
		return 0, 0, err
	}
	if err := rows.Err(); err != nil {
		return 0, 0, err
	}

	for _, r := range todo {
		c := r.canonical
		if _, err := tx.ExecContext(ctx, `SAVEPOINT rewrite_address`); err != nil {
			return rewritten, left, err
		}
		_, err := tx.ExecContext(ctx, t.update, r.key, c, r.email)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && (pe.Code == "23505" || pe.Code == "23514") { // unique_violation, check_violation
			if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT rewrite_address`); err != nil {
				return rewritten, left, err
			}
			left++
			reason := "its canonical form is too long"
			if pe.Code == "23505" {
				// The holders query finds the rows of the table's unique
				// index; a violation it cannot explain (another unique
				// index) is named by its constraint.
				reason = fmt.Sprintf("its canonical form %s is taken (%s)", quote(c), pe.ConstraintName)
			}
			if pe.Code == "23505" && t.holders != "" {
				var holders sql.NullString
				if err := tx.QueryRowContext(ctx, t.holders, r.key, c).Scan(&holders); err != nil {
					return rewritten, left, err
				}
				if holders.Valid {
					reason = fmt.Sprintf("its canonical form %s is "+t.holdersAre, quote(c), holders.String)
				}
			}
			if err := warn(ctx, tx, fmt.Sprintf("rewrite_addresses: %s keeps its address %s (its domain not in its one spelling): %s",
				r.label, quote(r.email), reason)); err != nil {
				return rewritten, left, err
			}
			continue
		}
		if err != nil {
			return rewritten, left, err
		}
		if t.subject != nil {
			if _, err := tx.ExecContext(ctx, qAnnounce, t.subject(r.key), invalidation.ReasonUserEmailChanged); err != nil {
				return rewritten, left, err
			}
		}
		if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT rewrite_address`); err != nil {
			return rewritten, left, err
		}
		rewritten++
	}
	return rewritten, left, nil
}

// warn raises a WARNING with msg in tx: the channel through which SQL
// migrations report (RAISE WARNING), which `coreapi migrate` prints and
// the server log records. The message goes through a setting, not into
// the statement's text.
func warn(ctx context.Context, tx *sql.Tx, msg string) error {
	const set = `SELECT set_config('tollgate.migration_warning', $1, true)`
	const raise = `DO $$ BEGIN RAISE WARNING '%', current_setting('tollgate.migration_warning'); END $$`
	if _, err := tx.ExecContext(ctx, set, msg); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, raise)
	return err
}

// quote writes s as an SQL string literal, as the reports of migration
// 00012 do (quote_literal).
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
