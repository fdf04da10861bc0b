// Package apikeys is coreapi's API-key surface: tenant keys
// (/api/v1/api-keys, api-keys:write) and personal keys
// (/api/v1/users/me/api-keys), the internal routes through which a proxy
// resolves a presented key and reports which keys it saw used,
// RevokeAPIKey for RFC 7009 revocation, and RevokeUserKeys, with which a
// member's keys end with their removal from the tenant, and a service
// account's with any of its client secrets.
//
// A key acts as the user who created it, in its tenant; what it may do is
// its own permissions intersected with that user's current ones, and only
// while user, membership and tenant are active (docs/security.md): a
// disabled member's keys do nothing until the member is enabled again. The
// secret is shown once; the database keeps HMAC-SHA256(pepper, key), the
// pepper (API_KEY_PEPPER) never leaves coreapi. Creation and revocation
// write their audit row, and revocation its invalidation
// (auth.invalidate.apikey.<public id>), in the same transaction.
package apikeys

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/clientsecret"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/projection"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// Errors of the store.
var (
	// ErrNotFound: no such key (in this tenant, or of this user).
	ErrNotFound = errors.New("no such API key")
	// ErrEscalation: the key would hold a permission its creator lacks.
	ErrEscalation = errors.New("an API key cannot hold a permission its creator does not hold")
	// ErrLimit: the tenant already has MaxLivePerTenant live tenant keys.
	ErrLimit = errors.New("the tenant has reached its limit of live API keys; revoke unused ones")
	// ErrPersonalLimit: the member already has MaxLivePersonalPerMember
	// live personal keys in the tenant.
	ErrPersonalLimit = errors.New("you have reached your limit of live personal API keys in this tenant; revoke unused ones")
	// ErrWrongSecret: a key with this public id exists, the secret is not its.
	ErrWrongSecret = errors.New("wrong API key secret")
	// ErrRevoked and ErrExpired: the secret is right, the key no longer works.
	ErrRevoked = errors.New("API key revoked")
	ErrExpired = errors.New("API key expired")
	// ErrUnavailable: no pepper is configured (API_KEY_PEPPER), so keys
	// can be neither created nor checked.
	ErrUnavailable = errors.New("API keys are not configured on this server (API_KEY_PEPPER)")
	// ErrKeyCreatesKey: a request authenticated by an API key tried to
	// create one (which would launder the key's expiry).
	ErrKeyCreatesKey = errors.New("an API key cannot create API keys")
	// ErrNotMember: the creator is no longer a member of the tenant (a
	// request let through before a proxy heard of the removal).
	ErrNotMember = errors.New("the creator is no longer a member of this tenant")
	// ErrInactive: the creator's account, membership or tenant is not
	// active (a request let through before a proxy heard of the change).
	ErrInactive = errors.New("the account or its membership is no longer active")
	// ErrNoClientSecret: the creator is a service account without a
	// client secret, so none of its access tokens is live any more (each
	// secret's deletion ends them all): the request was signed with one
	// by a proxy that had not yet heard of the last deletion.
	ErrNoClientSecret = errors.New("the service account has no client secret left: its access tokens have ended")
	// ErrNotPermitted: the caller no longer holds the permission the
	// route needs (api-keys:write), though its request was signed with it
	// (demoted, or its membership disabled, meanwhile: roles.Live).
	ErrNotPermitted = errors.New("the caller no longer holds api-keys:write")
	// ErrStrongerKey: the key may use a permission the caller revoking it
	// does not hold.
	ErrStrongerKey = errors.New("revoking this key needs every permission it may use, and the caller lacks one")
)

// Kinds of key.
const (
	KindTenant   = "tenant"
	KindPersonal = "personal"
)

// MaxLivePerTenant bounds the live tenant keys of a tenant: neither
// revoked nor expired (keys made to expire on their own, one per CI job
// say, must not fill the tenant up).
const MaxLivePerTenant = 500

// MaxLivePersonalPerMember bounds the live personal keys of one member in
// a tenant. Personal keys count apart from the tenant's: any member may
// make them, without a permission, and one counted with the tenant's
// could fill it up, every tenant key and every other member's personal
// key then refused.
const MaxLivePersonalPerMember = 50

// Limits bound what a tenant and its members create, and what a revoked
// key's uses write (Options.Limits; a zero field takes DefaultLimits'
// value). They are each Service's own, so that the services of one
// process (the tests') each keep what they were configured with.
type Limits struct {
	// PersonalCreations bounds how many personal keys a member creates
	// in a tenant in a window, revoked or expired ones included: the
	// live-key limit does not count them, so a member holding no
	// permission could create and revoke (or create to expire at once)
	// without end, each key a row kept for SweepKeep, an audit row and,
	// when revoked, an invalidation every proxy receives. A creation
	// refused by another check is not counted.
	PersonalCreations ratelimit.Limit
	// TenantCreations bounds how many tenant keys a tenant creates in a
	// window, revoked or expired ones included (API_KEY_CREATIONS_PER_HOUR
	// an hour). Anyone can sign up and own a tenant, with api-keys:write;
	// MaxLivePerTenant counts live keys only, so without it a tenant
	// could create and revoke without end, each revoke an invalidation
	// every proxy of the fleet receives and acts on (it drops the cached
	// keys that share the revoked key's stripe, other tenants' among
	// them). Generous for one short-lived key per CI job. A creation
	// refused by another check is not counted.
	TenantCreations ratelimit.Limit
	// RevokedUseAudit bounds how many uses of one revoked key are audited
	// (api_key.used_after_revocation) in a window; the uses beyond are
	// refused alike, unaudited.
	RevokedUseAudit ratelimit.Limit
}

// DefaultTenantCreationsPerHour is TenantCreations' default
// (API_KEY_CREATIONS_PER_HOUR).
const DefaultTenantCreationsPerHour = 1000

// DefaultLimits returns the limits a Service has unless its Options say
// otherwise: 100 personal keys a member in a tenant in 24 hours,
// DefaultTenantCreationsPerHour tenant keys a tenant in an hour, 20
// audited uses of a revoked key an hour.
func DefaultLimits() Limits {
	return Limits{
		PersonalCreations: ratelimit.Limit{N: 100, Window: 24 * time.Hour},
		TenantCreations:   ratelimit.Limit{N: DefaultTenantCreationsPerHour, Window: time.Hour},
		RevokedUseAudit:   ratelimit.Limit{N: 20, Window: time.Hour},
	}
}

// orDefault returns l with each zero field replaced by its default.
func (l Limits) orDefault() Limits {
	d := DefaultLimits()
	return Limits{PersonalCreations: l.PersonalCreations.Or(d.PersonalCreations),
		TenantCreations: l.TenantCreations.Or(d.TenantCreations), RevokedUseAudit: l.RevokedUseAudit.Or(d.RevokedUseAudit)}
}

// Key is an API key as listed (never its secret).
type Key struct {
	ID          string     `json:"id"`
	PublicID    string     `json:"public_id"`
	Kind        string     `json:"kind"`
	Name        string     `json:"name"`
	Permissions []string   `json:"permissions"`
	UserID      string     `json:"user_id"`
	ExpiresAt   *time.Time `json:"expires_at"`
	CreatedAt   time.Time  `json:"created_at"`
	LastUsedAt  *time.Time `json:"last_used_at"`
}

// Store reads and writes api_keys.
type Store struct {
	pool   *pgxpool.Pool
	pepper []byte
	proj   *projection.Store
	now    func() time.Time
	limits Limits
	// all and member are the catalog's arrays (roles.CatalogArgs), with
	// which the caller's permissions are read again (roles.Live).
	all, member string
	catalog     *permissions.Catalog // permissions.CheckCurrent
}

// hash is the stored form of a key.
func (s *Store) hash(key string) []byte {
	m := hmac.New(sha256.New, s.pepper)
	m.Write([]byte(key))
	return m.Sum(nil)
}

// NewKey describes a key to create.
type NewKey struct {
	TenantID, UserID, Kind, Name string
	// SessionID is the session the creator's request was signed with
	// (httpapi.SessionOf; "" for none): it must still be live.
	SessionID string
	// SecretID is the client secret the creator's access token was
	// obtained with (httpapi.ClientSecretOf; "" for none): a service
	// account's, it must still exist (clientsecret.ErrDeleted).
	SecretID    string
	Permissions []string
	ExpiresAt   *time.Time
	RequestID   string
	// Held is what the creator's request was signed with (its
	// X-Auth-Permissions).
	Held []string
}

// Create stores a new key and returns it with its secret (shown once).
// Its audit row is written in the same transaction. A creator who is no
// longer a member of the tenant is ErrNotMember: removal revokes a
// member's keys under the tenant's key lock (RevokeUserKeys), so a
// creation either commits first and is revoked with the others, or comes
// after and finds no membership.
//
// The key's permissions must be among those the creator holds when the
// creation runs, not only among those its request was signed with
// (n.Held): after the tenant's lock (roles.LockTenant), which every change
// that can demote a member takes, they are narrowed to what the
// creator's membership grants now (roles.Live), and a key asking for one
// it lost is ErrEscalation; a tenant key's creator who lost
// api-keys:write is ErrNotPermitted. A creator whose account, membership
// or tenant is not active (whose bearer a proxy that has not yet heard of
// the change still forwards) is ErrInactive, a key without permissions
// included.
//
// A creator whose session (n.SessionID) has ended is sessions.ErrEnded,
// checked after the tenant's lock, which a password reset of an account
// with an unproven address takes before it revokes the account's keys
// (package lifecycle): either the creation commits first and the reset
// revokes the key with the others, or it comes after and finds the
// session ended. A proxy that has not yet heard of the end lets the
// request through; without the check its key would outlive the reset.
// So for a service account whose last client secret was deleted (by an
// admin, or by the reset of its creator's unproven address), which
// deletes under the tenant's lock too: every token it obtained ended with
// that secret, and a key minted with one would outlive it
// (ErrNoClientSecret). So, too, for a secret deleted while the account
// keeps others: a token obtained with it ended with it, and names it
// (n.SecretID), so a key it would mint is clientsecret.ErrDeleted.
func (s *Store) Create(ctx context.Context, n NewKey) (Key, string, error) {
	if s.pepper == nil {
		return Key{}, "", ErrUnavailable
	}
	secret, publicID := apikey.New()
	perms := slices.Clone(n.Permissions)
	slices.Sort(perms)
	perms = slices.Compact(perms)
	if perms == nil {
		perms = []string{}
	}
	// The live keys of the kind: a tenant's tenant keys, or the creator's
	// own personal keys in it.
	const qCount = `
SELECT (SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND kind = $3 AND ($3 = 'tenant' OR user_id = $2)
          AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())),
       EXISTS (SELECT 1 FROM memberships WHERE tenant_id = $1 AND user_id = $2),
       EXISTS (SELECT 1 FROM memberships m JOIN users u ON u.id = m.user_id JOIN tenants t ON t.id = m.tenant_id
               WHERE m.tenant_id = $1 AND m.user_id = $2
                 AND m.status = 'active' AND u.status = 'active' AND t.status = 'active'),
       NOT EXISTS (SELECT 1 FROM users u WHERE u.id = $2 AND u.kind = 'service'
                   AND NOT EXISTS (SELECT 1 FROM service_account_secrets x WHERE x.user_id = u.id))`
	const qInsert = `
INSERT INTO api_keys (public_id, tenant_id, user_id, kind, name, permissions, secret_hash, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING id::text, created_at`
	k := Key{PublicID: publicID, Kind: n.Kind, Name: n.Name, Permissions: perms, UserID: n.UserID, ExpiresAt: n.ExpiresAt}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The tenant's lock first, as a member's removal takes it before
		// the key lock (RevokeUserKeys): every demotion committed before
		// this creation is seen below.
		if err := roles.LockTenant(ctx, tx, n.TenantID); err != nil {
			return err
		}
		// A key carries what its user holds, judged by this replica's
		// catalog: only if it is the recorded one.
		if err := permissions.CheckCurrent(ctx, tx, s.catalog); err != nil {
			return err
		}
		// Serialize creations in the tenant so the limit holds.
		if err := lockTenant(ctx, tx, n.TenantID); err != nil {
			return err
		}
		if err := sessions.CheckLive(ctx, tx, n.UserID, n.SessionID); err != nil {
			return err
		}
		// The token's own secret before the count below: a token whose
		// secret was the account's last is ErrDeleted (its token ended),
		// not ErrNoClientSecret; so roles.Live below is not given it.
		if err := clientsecret.Hold(ctx, tx, n.UserID, n.SecretID); err != nil {
			return err
		}
		var (
			live                      int
			member, active, secretful bool
		)
		if err := tx.QueryRow(ctx, qCount, n.TenantID, n.UserID, n.Kind).Scan(&live, &member, &active, &secretful); err != nil {
			return fmt.Errorf("count api keys: %w", err)
		}
		if !member {
			return ErrNotMember
		}
		// Read after the tenant's lock, which a secret's deletion takes
		// before it deletes (serviceaccounts.Store.DeleteSecret,
		// SilenceCreatedBy): one that committed meanwhile is seen.
		if !secretful {
			return ErrNoClientSecret
		}
		need := ""
		if n.Kind == KindTenant {
			need = roles.APIKeysWrite
		}
		a, err := roles.Live(ctx, tx, s.all, s.member, n.TenantID, roles.Actor{UserID: n.UserID, Permissions: n.Held}, need)
		switch {
		case errors.Is(err, roles.ErrEscalation):
			return ErrNotPermitted
		case err != nil:
			return err
		case !a.Covers(perms):
			return ErrEscalation
		case !active:
			// An inactive creator holds nothing (roles.Live), so only a
			// key without permissions gets here: it would still work,
			// for every route that asks none, once the account is
			// active again.
			return ErrInactive
		}
		switch {
		case n.Kind == KindTenant && live >= MaxLivePerTenant:
			return ErrLimit
		case n.Kind == KindPersonal && live >= MaxLivePersonalPerMember:
			return ErrPersonalLimit
		}
		if n.Kind == KindPersonal {
			l := s.limits.PersonalCreations
			err = ratelimit.CheckIn(ctx, tx, ratelimit.Key("api_key_personal_create", n.TenantID, n.UserID), l,
				fmt.Sprintf("at most %d personal API keys may be created in a tenant in %s", l.N, l.Period()))
		} else {
			l := s.limits.TenantCreations
			err = ratelimit.CheckIn(ctx, tx, ratelimit.Key("api_key_tenant_create", n.TenantID), l,
				fmt.Sprintf("this tenant has created as many API keys as it may in %s: at most %d (API_KEY_CREATIONS_PER_HOUR)", l.Period(), l.N))
		}
		if err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, qInsert, publicID, n.TenantID, n.UserID, n.Kind, n.Name, perms, s.hash(secret), n.ExpiresAt).
			Scan(&k.ID, &k.CreatedAt); err != nil {
			return fmt.Errorf("insert api key: %w", err)
		}
		return audit.Write(ctx, tx, audit.Event{TenantID: n.TenantID, ActorUserID: n.UserID, Action: audit.ActionAPIKeyCreated,
			TargetType: "api_key", TargetID: k.ID, RequestID: n.RequestID,
			Data: map[string]any{"public_id": publicID, "kind": n.Kind, "name": n.Name, "permissions": perms, "expires_at": n.ExpiresAt}})
	})
	if err != nil {
		return Key{}, "", err
	}
	return k, secret, nil
}

// Cursor is a keyset position in a List: the last row of a page.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// List returns a page of the live keys of a tenant (userID "": every
// kind and user) or of a user's personal keys in it, newest first (ties
// by id), at most limit of them, after the cursor when after is not nil.
// The order is that of api_keys_tenant_created_idx.
func (s *Store) List(ctx context.Context, tenantID, userID string, limit int, after *Cursor) ([]Key, error) {
	const q = `
SELECT id::text, public_id, kind, name, permissions, user_id::text, expires_at, created_at, last_used_at
FROM api_keys
WHERE tenant_id = $1 AND revoked_at IS NULL AND ($2 = '' OR (kind = 'personal' AND user_id = NULLIF($2, '')::uuid))
  AND ($3::timestamptz IS NULL OR created_at < $3 OR (created_at = $3 AND id > $4::uuid))
ORDER BY created_at DESC, id
LIMIT $5`
	var (
		at *time.Time
		id *string
	)
	if after != nil {
		at, id = &after.CreatedAt, &after.ID
	}
	rows, err := s.pool.Query(ctx, q, tenantID, userID, at, id, limit)
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Key])
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	return keys, nil
}

// Revoke revokes the live key id of tenantID (ownerID "": any key of the
// tenant; else only ownerID's personal key) on behalf of a, with its
// audit row and invalidation in the same transaction. Revoking any key of
// the tenant needs api-keys:write; either way a must hold every
// permission the key may use now (its own that its creator's roles still
// grant, whatever the membership's status, as a member's disabling reads
// them), else ErrStrongerKey: a revocation cuts off whoever relies on the
// key, as removing or demoting its creator would, which needs as much.
// Both are decided on what a holds when the revocation runs, not only
// when its request was signed: after the tenant's lock, a's permissions
// are read again (roles.Live), and a caller who lost api-keys:write is
// ErrNotPermitted.
func (s *Store) Revoke(ctx context.Context, tenantID, id, ownerID string, a roles.Actor) error {
	q := `
SELECT k.public_id, k.kind, k.user_id::text, ARRAY(
    SELECT DISTINCT p FROM membership_roles mr
    JOIN roles r ON r.tenant_id = mr.tenant_id AND r.id = mr.role_id
    CROSS JOIN LATERAL unnest(` + roles.PermissionsSQL("r", "$4::text[]", "$5::text[]") + `) AS p
    WHERE mr.tenant_id = k.tenant_id AND mr.user_id = k.user_id AND p = ANY($4::text[]) AND p = ANY(k.permissions)
    ORDER BY p)
FROM api_keys k
WHERE k.id = $1 AND k.tenant_id = $2 AND k.revoked_at IS NULL
  AND ($3 = '' OR (k.kind = 'personal' AND k.user_id = NULLIF($3, '')::uuid))
FOR UPDATE OF k`
	const qRevoke = `UPDATE api_keys SET revoked_at = now() WHERE id = $1`
	need := ""
	if ownerID == "" {
		need = roles.APIKeysWrite
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		a, err := roles.LockedLive(ctx, tx, s.all, s.member, tenantID, a, need)
		switch {
		case errors.Is(err, roles.ErrEscalation):
			return ErrNotPermitted
		case err != nil:
			return err
		}
		var (
			publicID, kind, keyUser string
			may                     []string
		)
		err = tx.QueryRow(ctx, q, id, tenantID, ownerID, s.all, s.member).Scan(&publicID, &kind, &keyUser, &may)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("read api key: %w", err)
		}
		if !a.Covers(may) {
			return ErrStrongerKey
		}
		if _, err := tx.Exec(ctx, qRevoke, id); err != nil {
			return fmt.Errorf("revoke api key: %w", err)
		}
		return revoked(ctx, tx, tenantID, id, publicID, kind, keyUser, a.UserID, a.RequestID, "api")
	})
}

// lockTenant serializes, until the transaction ends, the key creations of
// a tenant and the revocations of every key of a user in it (RevokeUserKeys).
func lockTenant(ctx context.Context, tx pgx.Tx, tenantID string) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('api_keys:' || $1, 0))`, tenantID); err != nil {
		return fmt.Errorf("lock tenant keys: %w", err)
	}
	return nil
}

// RevokeUserKeys revokes, inside the caller's transaction, every live key
// of tenantID that acts as userID (the keys that user created), on behalf
// of actorID, each with the audit row and invalidation of any revocation;
// via (audit data) names what caused it. It returns how many it revoked.
// It takes the tenant's key lock first, so a creation already in its
// transaction commits before and is revoked too. No pepper is needed.
//
// Removing a member from a tenant (users.Store.Remove) calls it for the
// member, so their keys end, audited, with the membership, and do not come
// back should the member be added again. Deleting a service account, or
// one of its client secrets, calls it for the account: a secret is deleted
// when it may have leaked, and a key minted with a token obtained with it
// must not outlive it.
func RevokeUserKeys(ctx context.Context, tx pgx.Tx, tenantID, userID, actorID, requestID, via string) (int, error) {
	// The rows are locked in the order of their ids, as MarkUsed locks
	// them: in any other, the two could each hold a row the other waits for.
	const q = `
UPDATE api_keys k SET revoked_at = now()
FROM (SELECT id FROM api_keys
      WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL
      ORDER BY id
      FOR UPDATE) live
WHERE k.id = live.id
RETURNING k.id::text, k.public_id, k.kind, k.user_id::text`
	if err := lockTenant(ctx, tx, tenantID); err != nil {
		return 0, err
	}
	rows, err := tx.Query(ctx, q, tenantID, userID)
	if err != nil {
		return 0, fmt.Errorf("revoke user's api keys: %w", err)
	}
	type key struct{ id, publicID, kind, userID string }
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (key, error) {
		var k key
		return k, r.Scan(&k.id, &k.publicID, &k.kind, &k.userID)
	})
	if err != nil {
		return 0, fmt.Errorf("revoke user's api keys: %w", err)
	}
	if len(keys) == 0 {
		return 0, nil
	}
	b := &pgx.Batch{}
	inv := make([]outbox.Row, 0, len(keys))
	for _, k := range keys {
		if err := audit.Queue(ctx, b, revokedEvent(tenantID, k.id, k.publicID, k.kind, actorID, requestID, via)); err != nil {
			return 0, err
		}
		inv = append(inv, revokedRow(k.publicID, k.userID))
	}
	outbox.Queue(ctx, b, inv...)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return 0, fmt.Errorf("write api key revocations: %w", err)
	}
	return len(keys), nil
}

// RevokeEveryKeyOf is RevokeUserKeys in every tenant where userID has a
// live key, in the order of the tenants' ids: a password reset that
// proves an address the account never had proven ends every key its
// earlier holder made. It returns how many keys it revoked in each tenant
// (by tenant id). The caller takes the tenants' locks
// (roles.LockTenant) first when it holds the account's row, as a key's
// creation takes the tenant's and then the key lock before its insert
// waits for the account's row.
func RevokeEveryKeyOf(ctx context.Context, tx pgx.Tx, userID, actorID, requestID, via string) (map[string]int, error) {
	const q = `SELECT DISTINCT tenant_id::text FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL ORDER BY 1`
	rows, _ := tx.Query(ctx, q, userID)
	tenants, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("tenants of the user's api keys: %w", err)
	}
	revoked := make(map[string]int, len(tenants))
	for _, tid := range tenants {
		n, err := RevokeUserKeys(ctx, tx, tid, userID, actorID, requestID, via)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			revoked[tid] = n
		}
	}
	return revoked, nil
}

// revoked writes the audit row and the invalidation of a revocation of
// the key acting as keyUser.
func revoked(ctx context.Context, tx pgx.Tx, tenantID, id, publicID, kind, keyUser, actorID, requestID, via string) error {
	return audit.WriteWith(ctx, tx, revokedEvent(tenantID, id, publicID, kind, actorID, requestID, via), revokedRow(publicID, keyUser))
}

// revokedEvent is the audit row of a revocation.
func revokedEvent(tenantID, id, publicID, kind, actorID, requestID, via string) audit.Event {
	return audit.Event{TenantID: tenantID, ActorUserID: actorID, Action: audit.ActionAPIKeyRevoked,
		TargetType: "api_key", TargetID: id, RequestID: requestID,
		Data: map[string]any{"public_id": publicID, "kind": kind, "via": via}}
}

// revokedRow is the invalidation of a revocation: every proxy drops the
// key. keyUser is the key's user_id, the user it acts as: a proxy's entry
// of the key is stamped with that user's generation, so the user's
// invalidation drops it too (outbox.Row.CoveredBy), and a write that
// names the user (a member removed, a service account or its secret
// deleted, a password reset) need not name each of their keys to the
// proxy that forwarded it. The event is the key's all the same: the
// other proxies hear it from NATS.
func revokedRow(publicID, keyUser string) outbox.Row {
	return outbox.Row{Subject: invalidation.APIKeySubject(publicID), Reason: invalidation.ReasonAPIKeyRevoked,
		CoveredBy: invalidation.UserSubject(keyUser)}
}

// stored is a key row as Resolve and RevokeSecret read it.
type stored struct {
	id, tenantID, userID, kind string
	perms                      []string
	hash                       []byte
	expiresAt, revokedAt       *time.Time
	// machine: the key's user is a service account (it minted the key).
	machine bool
}

func (s *Store) byPublicID(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, publicID string, forUpdate bool) (stored, error) {
	sql := `
SELECT k.id::text, k.tenant_id::text, k.user_id::text, k.kind, k.permissions, k.secret_hash, k.expires_at, k.revoked_at,
       u.kind = 'service'
FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.public_id = $1`
	if forUpdate {
		sql += ` FOR UPDATE OF k`
	}
	var k stored
	err := q.QueryRow(ctx, sql, publicID).Scan(&k.id, &k.tenantID, &k.userID, &k.kind, &k.perms, &k.hash, &k.expiresAt, &k.revokedAt, &k.machine)
	if errors.Is(err, pgx.ErrNoRows) {
		return stored{}, ErrNotFound
	}
	if err != nil {
		return stored{}, fmt.Errorf("load api key: %w", err)
	}
	return k, nil
}

// Resolve checks a presented key and returns what it may do now. The
// secret is compared in constant time with the stored HMAC. A right
// secret of a revoked key is audited (use after revocation).
func (s *Store) Resolve(ctx context.Context, key, requestID, clientIP string) (apikey.Projection, error) {
	if s.pepper == nil {
		return apikey.Projection{}, ErrUnavailable
	}
	pid, ok := apikey.Parse([]byte(key))
	if !ok {
		return apikey.Projection{}, ErrNotFound
	}
	k, err := s.byPublicID(ctx, s.pool, string(pid), false)
	if err != nil {
		return apikey.Projection{}, err
	}
	if !hmac.Equal(s.hash(key), k.hash) {
		return apikey.Projection{}, ErrWrongSecret
	}
	switch {
	case k.revokedAt != nil:
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			// At most Limits.RevokedUseAudit rows a key in a window: a leaked
			// key in a loop, through a fleet of proxies (each remembers the
			// refusal for NEGATIVE_CACHE_TTL only), would otherwise fill
			// the tenant's audit log.
			ok, _, err := ratelimit.AllowIn(ctx, tx, ratelimit.Key("api_key_revoked_use_audit", k.id), s.limits.RevokedUseAudit)
			if err != nil || !ok {
				return err
			}
			return audit.Write(ctx, tx, audit.Event{TenantID: k.tenantID, Action: audit.ActionAPIKeyUsedAfterRevocation,
				TargetType: "api_key", TargetID: k.id, RequestID: requestID,
				Data: map[string]any{"public_id": string(pid), "client_ip": clientIP, "revoked_at": k.revokedAt}})
		})
		if err != nil {
			return apikey.Projection{}, err
		}
		return apikey.Projection{}, ErrRevoked
	case k.expiresAt != nil && !s.now().Before(*k.expiresAt):
		return apikey.Projection{}, ErrExpired
	}
	out := apikey.Projection{KeyID: k.id, PublicID: string(pid), Kind: k.kind, ExpiresAt: k.expiresAt}
	p, err := s.proj.Get(ctx, k.userID, k.tenantID)
	switch {
	case errors.Is(err, projection.ErrNotFound):
		// The creator is no longer a member, yet the key is live: a
		// membership deleted other than by users.Store.Remove (which
		// revokes the member's keys), e.g. in plain SQL or before removals
		// revoked keys. The key does nothing (it would work again were
		// they re-added, with their permissions then).
		p = identity.Projection{UserID: k.userID, TenantID: k.tenantID, UserStatus: StatusGone,
			MembershipStatus: StatusGone, TenantStatus: StatusGone}
	case err != nil:
		return apikey.Projection{}, err
	}
	p.Permissions = intersect(k.perms, p.Permissions)
	if k.machine {
		// A service account has no second factor to enrol and the
		// tenant's require_mfa policy does not apply to it (the proxy
		// exempts its tokens): nor to a key it minted, which acts as it.
		p.TenantRequireMFA = false
	}
	p.Roles = []string{}
	p.RevokedSessions = []string{}
	p.TokenVersion = 0
	out.Projection = p
	return out, nil
}

// StatusGone is the status reported for a key whose creator is no longer a
// member of its tenant.
const StatusGone = "none"

// intersect is what both lists hold, in a's order.
func intersect(a, b []string) []string {
	out := []string{}
	for _, p := range a {
		if slices.Contains(b, p) {
			out = append(out, p)
		}
	}
	return out
}

// RevokeSecret revokes the key whose whole secret is key, if it is a live
// key of tenantID, on behalf of actorID (the client that asked). It
// reports whether it revoked one.
func (s *Store) RevokeSecret(ctx context.Context, tenantID, key, actorID, requestID string) (bool, error) {
	if s.pepper == nil {
		return false, nil
	}
	pid, ok := apikey.Parse([]byte(key))
	if !ok {
		return false, nil
	}
	done := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		k, err := s.byPublicID(ctx, tx, string(pid), true)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if !hmac.Equal(s.hash(key), k.hash) || k.tenantID != tenantID || k.revokedAt != nil {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE api_keys SET revoked_at = now() WHERE id = $1`, k.id); err != nil {
			return fmt.Errorf("revoke api key: %w", err)
		}
		done = true
		return revoked(ctx, tx, k.tenantID, k.id, string(pid), k.kind, k.userID, actorID, requestID, "oauth_revoke")
	})
	if err != nil {
		return false, err
	}
	return done, nil
}

// MarkUsed records that the keys were used now: at most one write per key
// and minute, however many proxies report it. It locks the rows in the
// order of their ids, as RevokeUserKeys does: reached by their public ids
// (the report) and by their user (a revocation), they were locked in
// other orders, each statement held a row the other waited for, and
// PostgreSQL failed one of them (a member's removal among them). It
// skips the keys another transaction holds: a change made with a key
// holds the key's row FOR SHARE until it commits (apikeylive.Hold) and
// may then lock another key (its revocation), which a report waiting for
// the first while holding the second would deadlock with. A key skipped
// is marked by the next report.
func (s *Store) MarkUsed(ctx context.Context, publicIDs []string) (int64, error) {
	const q = `
UPDATE api_keys k SET last_used_at = now()
FROM (SELECT id FROM api_keys
      WHERE public_id = ANY($1::text[]) AND revoked_at IS NULL
        AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
      ORDER BY id
      FOR NO KEY UPDATE SKIP LOCKED) used
WHERE k.id = used.id`
	tag, err := s.pool.Exec(ctx, q, publicIDs)
	if err != nil {
		return 0, fmt.Errorf("mark api keys used: %w", err)
	}
	return tag.RowsAffected(), nil
}

// qSweep is Sweep's statement (a test explains it: the indexes it uses).
const qSweep = `
DELETE FROM api_keys
WHERE id IN (
    SELECT id FROM api_keys
    WHERE revoked_at < now() - make_interval(secs => $1) OR expires_at < now() - make_interval(secs => $1)
    LIMIT $2
    FOR UPDATE SKIP LOCKED)`

// Sweep deletes the keys revoked or expired more than keep ago. Such a key
// is refused either way (an unknown key is refused as a revoked one is),
// and every use, revocation and expiry is in the audit log; without the
// sweep the table would grow by every short-lived key ever made, since
// neither the live-key limit nor the listing counts them. It skips the
// keys another transaction holds: a revocation of a user's keys locks
// them in the order of their ids, and a sweep deleting in table order
// could hold a key the revocation waited for while waiting for one the
// revocation held (a deadlock PostgreSQL ended by failing one of them, a
// member's removal among them). A key skipped is swept next time. It
// deletes in batches (sweep.InBatches), finding the keys through the
// partial indexes of revoked_at and expires_at (migration 00047), not by
// reading the table.
func (s *Store) Sweep(ctx context.Context, keep time.Duration) (int64, error) {
	n, err := sweep.InBatches(ctx, s.pool, qSweep, keep.Seconds())
	if err != nil {
		return n, fmt.Errorf("sweep api keys: %w", err)
	}
	return n, nil
}
