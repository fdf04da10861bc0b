package users

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// qListBatch is List's page query for several pages at once (any tenants,
// cursors and limits): each parameter array holds one value per page,
// and each row is led by the number of its page (from 1). Each page is
// List's query with its own parameters; its total (when asked for) is
// read once per page.
const qListBatch = `
SELECT p.ord, ` + memberCols + `, c.total
FROM unnest($1::text[]::uuid[], $2::timestamptz[], $3::text[]::uuid[], $4::int[], $5::bool[])
     WITH ORDINALITY AS p(tenant_id, after, after_id, lim, with_total, ord)
CROSS JOIN LATERAL (
    SELECT CASE WHEN p.with_total
           THEN coalesce((SELECT n.members FROM tenant_member_counts n WHERE n.tenant_id = p.tenant_id), 0)
           ELSE 0 END::bigint AS total
    OFFSET 0
) c
CROSS JOIN LATERAL (
    SELECT tenant_id, user_id, status, role_names, created_at, updated_at
    FROM memberships
    WHERE tenant_id = p.tenant_id AND (created_at, user_id) > (p.after, p.after_id)
    ORDER BY created_at, user_id
    LIMIT p.lim
) m
CROSS JOIN LATERAL (SELECT id, email, display_name, status, updated_at FROM users WHERE id = m.user_id OFFSET 0) u
ORDER BY p.ord, m.created_at, m.user_id`

// Concurrent member-list reads share round trips (see batcher): at most
// maxListRunners in flight, each carrying up to maxListBatch pages. A page
// costs PostgreSQL more than its round trip, so bigger batches save it
// little: with one runner, through authproxy at 64 connections, its CPU
// per page did not change and 5 to 11 % fewer pages a second were served
// (docs/benchmarks.md), so two stay.
const (
	maxListRunners = 2
	maxListBatch   = 16
)

// pageRow is what scanMemberRows records of each row of qListBatch.
type pageRow struct{ ord, total int64 }

// listLoader batches List reads.
type listLoader struct {
	pool *pgxpool.Pool
	b    batcher[listCall, *listCall]
}

// listCall is one queued page read.
type listCall struct {
	tenantID, afterID string
	after             time.Time
	limit             int
	withTotal         bool

	out   []Member
	total int64
	reply
}

func newListLoader(pool *pgxpool.Pool) *listLoader {
	l := &listLoader{pool: pool}
	l.b = batcher[listCall, *listCall]{runners: maxListRunners, maxBatch: maxListBatch, send: l.send}
	return l
}

// load reads one page (List's parameters, the cursor filled in); ctx is
// the request's.
func (l *listLoader) load(ctx context.Context, c *listCall) ([]Member, int64, error) {
	if _, err := canonicalUUID(c.tenantID); err != nil {
		return l.single(ctx, c) // alone: PostgreSQL answers it exactly as before
	}
	if _, err := canonicalUUID(c.afterID); err != nil || c.limit < 1 || c.limit > 1000 {
		return l.single(ctx, c)
	}
	if l.b.alone() {
		out, total, err := l.single(ctx, c)
		l.b.finish()
		return out, total, err
	}
	c.reply = newReply()
	l.b.queue(c)
	select {
	case <-c.done:
		return c.out, c.total, c.err
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
}

// single is one page as its own round trip.
func (l *listLoader) single(ctx context.Context, c *listCall) ([]Member, int64, error) {
	sql := qList
	if c.withTotal {
		sql = qListTotal
	}
	rows, err := l.pool.Query(ctx, sql, c.tenantID, c.after, c.afterID, c.limit)
	if err != nil {
		return nil, 0, err
	}
	return scanMembers(rows, c.limit)
}

// send makes one round trip for batch and answers every page in it. Any
// error of the batch makes each page go again alone, so that each gets the
// answer (or the error) List's own query gives it.
func (l *listLoader) send(ctx context.Context, batch []*listCall) {
	defer func() {
		for _, c := range batch {
			close(c.done)
		}
	}()
	if len(batch) == 1 {
		c := batch[0]
		c.out, c.total, c.err = l.single(ctx, c)
		return
	}
	var (
		tenants  = make([]string, len(batch))
		afters   = make([]time.Time, len(batch))
		afterIDs = make([]string, len(batch))
		limits   = make([]int32, len(batch))
		totals   = make([]bool, len(batch))
		n        int
	)
	for i, c := range batch {
		tenants[i], afters[i], afterIDs[i], limits[i], totals[i] = c.tenantID, c.after, c.afterID, int32(c.limit), c.withTotal
		n += c.limit
	}
	pages := make([]pageRow, 0, n)
	rows, err := l.pool.Query(ctx, qListBatch, tenants, afters, afterIDs, limits, totals)
	var out []Member
	if err == nil {
		out, _, err = scanMemberRows(rows, n, &pages)
	}
	if err != nil {
		for _, c := range batch {
			c.out, c.total, c.err = l.single(ctx, c)
		}
		return
	}
	if len(pages) != len(out) {
		for _, c := range batch {
			c.err = fmt.Errorf("list members: %d page numbers for %d rows", len(pages), len(out))
		}
		return
	}
	for _, c := range batch {
		c.out = []Member{}
	}
	for start := 0; start < len(out); {
		ord := pages[start].ord
		end := start + 1
		for end < len(out) && pages[end].ord == ord {
			end++
		}
		if ord < 1 || int(ord) > len(batch) {
			for _, c := range batch {
				c.out, c.err = nil, fmt.Errorf("list members: page number %d of %d", ord, len(batch))
			}
			return
		}
		c := batch[ord-1]
		c.out, c.total = out[start:end:end], pages[start].total
		start = end
	}
}
