// Package tenantrows reads what the schema holds of one tenant, for tests
// that check a request changed nothing of a tenant it did not act in
// (coreapi's TestTenantIsolation, deploy/e2e's shared-member test).
package tenantrows

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Querier is a pool or a connection.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Churn are the tables with a tenant_id whose rows background work changes
// while the services run (the outbox relay marks rows published, the mail
// sender marks mails sent): Snapshot leaves them out.
var Churn = map[string]bool{"outbox": true, "mail_queue": true}

// tables lists the schema's tables with which of the columns that tie a
// row to a tenant they have.
const tables = `
SELECT c.table_name, bool_or(c.column_name = 'tenant_id'), bool_or(c.column_name = 'user_id'), bool_or(c.column_name = 'session_id')
FROM information_schema.columns c
JOIN information_schema.tables tb ON tb.table_schema = c.table_schema AND tb.table_name = c.table_name AND tb.table_type = 'BASE TABLE'
WHERE c.table_schema = 'public'
GROUP BY 1 ORDER BY 1`

// Snapshot returns, by table, the rows of a tenant as JSON: its own row of
// tenants; those of each table with a tenant_id; for its members, those of
// users and of each table with a user_id and no tenant_id (what is the
// account's, in every tenant); for its sessions, those of each table with
// a session_id (refresh tokens). The Churn tables are left out. Tables
// added by a later migration are read the same way, with no change here.
func Snapshot(ctx context.Context, db Querier, tenantID string) (map[string]string, error) {
	rows, err := db.Query(ctx, tables)
	if err != nil {
		return nil, err
	}
	var q []string
	for rows.Next() {
		var tbl string
		var hasTenant, hasUser, hasSession bool
		if err := rows.Scan(&tbl, &hasTenant, &hasUser, &hasSession); err != nil {
			return nil, err
		}
		var where string
		switch {
		case Churn[tbl]:
			continue
		case hasTenant:
			where = "x.tenant_id = $1"
		case hasUser:
			where = "x.user_id IN (SELECT user_id FROM memberships WHERE tenant_id = $1)"
		case hasSession:
			where = "x.session_id IN (SELECT id FROM sessions WHERE tenant_id = $1)"
		case tbl == "tenants":
			where = "x.id = $1"
		case tbl == "users":
			where = "x.id IN (SELECT user_id FROM memberships WHERE tenant_id = $1)"
		default:
			continue
		}
		q = append(q, fmt.Sprintf(`SELECT %s, COALESCE(json_agg(x ORDER BY x::text)::text, '[]') FROM %q x WHERE %s`,
			quoteLiteral(tbl), tbl, where))
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = db.Query(ctx, strings.Join(q, " UNION ALL "), tenantID)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for rows.Next() {
		var tbl, v string
		if err := rows.Scan(&tbl, &v); err != nil {
			return nil, err
		}
		out[tbl] = v
	}
	return out, rows.Err()
}

// Diff names the tables whose rows differ between two snapshots, with both
// versions; "" when none does.
func Diff(before, after map[string]string) string {
	var diffs []string
	for _, tbl := range slices.Sorted(maps.Keys(before)) {
		if before[tbl] != after[tbl] {
			diffs = append(diffs, fmt.Sprintf("%s: before %s\nafter %s", tbl, before[tbl], after[tbl]))
		}
	}
	return strings.Join(diffs, "\n")
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
