package users

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// qMeBatch is qMe for several users at once, each row led by its id.
const qMeBatch = `
SELECT u.id, u.email, u.email_verified_at IS NOT NULL, u.display_name, u.status, u.created_at, u.updated_at, ` + mfaEnabled + `
FROM users u WHERE u.id = ANY($1::text[]::uuid[])`

// Concurrent /users/me reads share round trips (see batcher): one in
// flight, carrying up to maxMeBatch reads, and a second only once none has
// started or ended for meStallAfter. A lookup by key costs PostgreSQL
// little but the round trip, so one runner's bigger batches pay: against
// two runners, through authproxy at 64 connections, a third less
// PostgreSQL CPU per request and 7 to 10 % more requests a second
// (docs/benchmarks.md). Member-list pages keep two (listbatch.go).
const (
	maxMeRunners = 1
	meExtra      = 1
	meStallAfter = 50 * time.Millisecond
	maxMeBatch   = 64
)

// meLoader batches Me reads.
type meLoader struct {
	pool *pgxpool.Pool
	b    batcher[meCall, *meCall]
}

// meCall is one queued read: id in, me or err out; done is closed when
// they are set.
type meCall struct {
	id  string
	key [16]byte
	me  Me // the row's fields only
	reply
}

func newMeLoader(pool *pgxpool.Pool) *meLoader {
	l := &meLoader{pool: pool}
	l.b = batcher[meCall, *meCall]{runners: maxMeRunners, extra: meExtra, stallAfter: meStallAfter, maxBatch: maxMeBatch, send: l.send}
	return l
}

// load reads the profile row of id into me; ctx is the request's.
func (l *meLoader) load(ctx context.Context, id string, me *Me) error {
	key, err := canonicalUUID(id)
	if err != nil {
		// Not the canonical form the batch matches rows by: alone, so
		// that PostgreSQL answers it exactly as before.
		return l.single(ctx, id, me)
	}
	if l.b.alone() {
		err := l.single(ctx, id, me)
		l.b.finish()
		return err
	}
	c := &meCall{id: id, key: key, reply: newReply()}
	l.b.queue(c)
	select {
	case <-c.done:
		if c.err == nil {
			setRow(me, &c.me)
		}
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// single is one read as its own round trip.
func (l *meLoader) single(ctx context.Context, id string, me *Me) error {
	rows, err := l.pool.Query(ctx, qMe, id)
	if err != nil {
		return err
	}
	return scanMe(rows, me)
}

// send makes one round trip for batch and answers every call in it.
func (l *meLoader) send(ctx context.Context, batch []*meCall) {
	var err error
	if len(batch) == 1 {
		err = l.single(ctx, batch[0].id, &batch[0].me)
		batch[0].err = err
	} else {
		ids := make([]string, len(batch))
		for i, c := range batch {
			ids[i] = c.id
		}
		var rows pgx.Rows
		if rows, err = l.pool.Query(ctx, qMeBatch, ids); err == nil {
			err = scanMeBatch(rows, batch)
		}
		var de decodeError
		if errors.As(err, &de) {
			// A row the batch could not read (an infinite time, say):
			// each read alone, so that each gets the answer qMe gives it.
			for _, c := range batch {
				c.err = l.single(ctx, c.id, &c.me)
			}
		} else if err != nil {
			for _, c := range batch {
				c.err = err
			}
		}
	}
	for _, c := range batch {
		close(c.done)
	}
}

// decodeError is a row of qMeBatch that could not be read.
type decodeError struct{ err error }

func (e decodeError) Error() string { return e.err.Error() }
func (e decodeError) Unwrap() error { return e.err }

// scanMeBatch reads the rows of qMeBatch into the calls of batch by id;
// a call that no row answers gets pgx.ErrNoRows, as qMe's would. Binary
// rows are decoded as scanMe decodes them; other formats are scanned by
// pgx.
func scanMeBatch(rows pgx.Rows, batch []*meCall) error {
	defer rows.Close()
	found := make([]bool, len(batch))
	var (
		key pgtype.UUID
		me  Me
	)
	for rows.Next() {
		f := rows.FieldDescriptions()
		raw := rows.RawValues()
		if len(f) == 8 && f[0].Format == pgx.BinaryFormatCode && meBinary(f[1:]) {
			if len(raw[0]) != 16 {
				return fmt.Errorf("me: id of %d bytes", len(raw[0]))
			}
			copy(key.Bytes[:], raw[0])
			if err := decodeMe(raw[1:], &me); err != nil {
				return decodeError{err}
			}
		} else if err := rows.Scan(&key, &me.Email, &me.EmailVerified, &me.DisplayName, &me.Status,
			&me.CreatedAt, &me.UpdatedAt, &me.MFAEnabled); err != nil {
			return decodeError{err}
		}
		for i, c := range batch {
			if c.key == key.Bytes {
				setRow(&c.me, &me)
				found[i] = true
			}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for i, c := range batch {
		if !found[i] {
			c.err = pgx.ErrNoRows
		}
	}
	return nil
}

// canonicalUUID parses id when it is a UUID in its 36-character form (the
// form the proxy signs), in either case.
func canonicalUUID(id string) ([16]byte, error) {
	if len(id) != 36 {
		return [16]byte{}, fmt.Errorf("not a 36-character uuid")
	}
	u, err := uuid.Parse(id)
	return u, err
}

// setRow copies the fields of qMe's row from src to dst.
func setRow(dst, src *Me) {
	dst.Email, dst.EmailVerified, dst.DisplayName, dst.Status = src.Email, src.EmailVerified, src.DisplayName, src.Status
	dst.CreatedAt, dst.UpdatedAt, dst.MFAEnabled = src.CreatedAt, src.UpdatedAt, src.MFAEnabled
}
