// Package outbox is the transactional outbox: Write stores invalidation
// events in the same transaction as the change they announce, and the relay
// publishes them to NATS after commit, so none is lost if the process dies.
package outbox

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// Row is one pending invalidation: a NATS subject (built with
// shared/invalidation: UserSubject, TenantSubject, APIKeySubject,
// SubjectAll or SubjectKeysChanged; invalidation.CheckSubject must take
// it) and the
// reason that goes into the published invalidation.Event.
type Row struct {
	Subject string
	Reason  string
	// Keys, on an auth.keys.changed row, is the invalidation.KeySetDigest
	// of the JWKS the writer serves ("": none is sent).
	Keys string
	// CoveredBy is the subject whose invalidation, at a proxy, also
	// evicts what Subject names ("": none): the user subject of the user
	// an API key acts as, whose invalidation makes every cached entry of
	// that user's keys a miss. It is not stored: the row is written and
	// published as any other. It only spares the Collector from reporting
	// Subject when the request also wrote CoveredBy.
	CoveredBy string
}

// The payload is the invalidation.Event body minus its final commit time:
// {"reason": ..., "at": unix ms}, and "keys" when the row has Keys. "at" is the statement clock at insert,
// which precedes the commit by at most the rest of the transaction; the
// relay may overwrite it with the row's publication-time knowledge.
const qInsert = `
INSERT INTO outbox (subject, payload)
SELECT s, jsonb_build_object('reason', r, 'at', (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
       || CASE WHEN k = '' THEN '{}'::jsonb ELSE jsonb_build_object('keys', k) END
FROM unnest($1::text[], $2::text[], $3::text[]) AS u(s, r, k)`

// Write inserts rows into the outbox inside the caller's transaction, in
// one statement, so they commit or roll back with the change they announce.
// Writing no rows sends nothing. A row whose subject invalidation.CheckSubject
// refuses writes none and fails the write (its error wraps
// invalidation.ErrInvalidSubject): NATS would never deliver it as written.
// The subjects are recorded in ctx's Collector, if it carries one.
func Write(ctx context.Context, tx pgx.Tx, rows ...Row) error {
	if len(rows) == 0 {
		return nil
	}
	if err := check(rows); err != nil {
		return err
	}
	CollectorFrom(ctx).add(rows)
	subjects, reasons, keys := split(rows)
	if _, err := tx.Exec(ctx, qInsert, subjects, reasons, keys); err != nil {
		return fmt.Errorf("write outbox: %w", err)
	}
	return nil
}

// Queue adds the same insert to a batch that the caller sends inside its
// transaction (one round trip for several statements). A row whose subject
// invalidation.CheckSubject refuses has the batch insert none and fail
// when its results are read (Close returns the error, as Write's). The
// subjects are recorded in ctx's Collector, if it carries one: ctx is the
// context the batch is sent with.
func Queue(ctx context.Context, b *pgx.Batch, rows ...Row) {
	if len(rows) == 0 {
		return
	}
	if err := check(rows); err != nil {
		b.Queue(qInsert, []string{}, []string{}, []string{}).Exec(func(pgconn.CommandTag) error { return err })
		return
	}
	CollectorFrom(ctx).add(rows)
	subjects, reasons, keys := split(rows)
	b.Queue(qInsert, subjects, reasons, keys)
}

// check refuses rows whose subject NATS would not deliver as written.
func check(rows []Row) error {
	for _, r := range rows {
		if err := invalidation.CheckSubject(r.Subject); err != nil {
			return fmt.Errorf("write outbox: %w", err)
		}
	}
	return nil
}

func split(rows []Row) (subjects, reasons, keys []string) {
	subjects = make([]string, len(rows))
	reasons = make([]string, len(rows))
	keys = make([]string, len(rows))
	for i, r := range rows {
		subjects[i] = r.Subject
		reasons[i] = r.Reason
		keys[i] = r.Keys
	}
	return subjects, reasons, keys
}
