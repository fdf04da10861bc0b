package serviceaccounts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apikeys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// Errors of the store, mapped to problems at the HTTP edge (errorProblem).
var (
	// ErrNotFound: no such service account (or secret) in the tenant.
	ErrNotFound = errors.New("no such service account")
	// ErrSecretNotFound: no such secret of the service account.
	ErrSecretNotFound = errors.New("no such client secret")
	// ErrOwnerRole: a service account cannot own a tenant.
	ErrOwnerRole = errors.New("a service account cannot hold the owner role")
	// ErrUnknownRole: a named role does not exist in the tenant.
	ErrUnknownRole = errors.New("unknown role")
	// ErrTooManySecrets: the account already has MaxSecrets live secrets.
	ErrTooManySecrets = errors.New("the service account has the most client secrets it may hold; delete one first")
	// ErrTooManyAccounts: the tenant already has MaxAccounts service accounts.
	ErrTooManyAccounts = fmt.Errorf("the tenant has the most service accounts it may (%d); delete unused ones first", MaxAccounts)
	// ErrBadClient: the client id or secret is unknown or wrong.
	ErrBadClient = errors.New("client authentication failed")
	// ErrMachineActor: the caller acts as a service account (an API key
	// the account minted: the account's own tokens are refused at the
	// route), which manages no service account or secret.
	ErrMachineActor = errors.New("service accounts, and the API keys they minted, cannot manage service accounts or their secrets")
)

// MaxSecrets is how many client secrets a service account may hold at
// once: enough for a rotation to overlap, few enough to keep track of.
const MaxSecrets = 5

// MaxAccounts bounds a tenant's service accounts (ErrTooManyAccounts).
const MaxAccounts = 1000

// EmailDomain is the reserved domain (RFC 2606 .invalid) of service
// accounts' user rows: no mail can reach it, no identity provider vouches
// for it, and no person can sign up with it.
const EmailDomain = "service-accounts.invalid"

// secretPrefix starts every client secret, so that it is recognisable in
// logs and secret scanners (and never taken for an API key, "tg_").
const secretPrefix = "tgcs_"

// Account is one service account as the API shows it. Its id is also its
// OAuth client_id.
type Account struct {
	ID        string       `json:"id"`
	ClientID  string       `json:"client_id"`
	Name      string       `json:"name"`
	Roles     []string     `json:"roles"`
	CreatedBy *string      `json:"created_by"`
	CreatedAt time.Time    `json:"created_at"`
	Secrets   []SecretInfo `json:"secrets"`
}

// SecretInfo describes a client secret, never its value.
type SecretInfo struct {
	ID         string     `json:"id"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
}

// NewSecret is a client secret as created: the only time its value exists
// outside the caller.
type NewSecret struct {
	ID           string    `json:"id"`
	ClientID     string    `json:"client_id"`
	ClientSecret string    `json:"client_secret"`
	CreatedAt    time.Time `json:"created_at"`
}

// Client is an authenticated service account.
type Client struct {
	ID       string
	TenantID string
	SecretID string
	// TokenVersion is the account's token version read with the secret
	// (in the same statement): a token signed with it dies with any secret
	// deleted after the check.
	TokenVersion int64
}

// Store keeps service accounts and their secrets.
type Store struct {
	pool        *pgxpool.Pool
	all, member string // roles.CatalogArgs
	catalog     *permissions.Catalog
	limits      Limits
}

// NewStore returns a Store; c is the permission catalog (nil: built-in);
// l bounds creations (a zero field: its DefaultLimits value).
func NewStore(pool *pgxpool.Pool, c *permissions.Catalog, l Limits) *Store {
	if c == nil {
		c = permissions.Builtin()
	}
	all, member := roles.CatalogArgs(c)
	return &Store{pool: pool, all: all, member: member, catalog: c, limits: l.orDefault()}
}

// hashSecret is what is stored of a client secret. It carries 256 random
// bits, so a fast hash is as good as a slow one: nobody can search that
// space, and a stolen hash authenticates nothing.
func hashSecret(secret string) []byte {
	h := sha256.Sum256([]byte("tollgate client secret\x00" + secret))
	return h[:]
}

func newSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("read random: %w", err)
	}
	return secretPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// validSecret checks a presented secret's shape before any database work.
func validSecret(s string) bool {
	rest, ok := strings.CutPrefix(s, secretPrefix)
	if !ok || len(rest) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.Strict().DecodeString(rest)
	return err == nil
}

// rolePerms is roles.PermissionsSQL("r", "$3::text[]", "$4::text[]"),
// bound to s.all and s.member (roles.CatalogArgs), spelled out so that it
// is a constant no caller can change (TestRolePermsIsTheRolesExpression
// holds them equal).
const rolePerms = `CASE WHEN NOT r.builtin THEN r.permissions WHEN r.name = 'owner' THEN $3::text[]` +
	` WHEN r.name = 'admin' THEN array_remove($3::text[], 'tenant:write') WHEN r.name = 'member' THEN $4::text[]` +
	` ELSE '{}'::text[] END`

// live takes the tenant's lock, first, and returns a with its permissions
// narrowed to those it holds now (roles.LockedLive): every
// change of an account decides on them, not on what its request was
// signed with, which a caller demoted, disabled or removed meanwhile
// (or before the proxy heard of it) no longer holds. The lock orders the
// change after every demotion committed before it, as for a member's.
//
// An actor that is a service account is ErrMachineActor: its own tokens
// are refused before (humansOnly), and an API key it minted acts as it
// (X-Auth-Principal api_key, X-Auth-User-Id the account), so it may not
// do what the account may not.
func (s *Store) live(ctx context.Context, tx pgx.Tx, tenantID string, a roles.Actor) (roles.Actor, error) {
	const q = `SELECT kind = 'service' FROM users WHERE id = $1`
	a, err := roles.LockedLive(ctx, tx, s.all, s.member, tenantID, a, roles.UsersWrite)
	if err != nil {
		return roles.Actor{}, err
	}
	var machine bool
	if err := tx.QueryRow(ctx, q, a.UserID).Scan(&machine); err != nil {
		return roles.Actor{}, fmt.Errorf("actor's kind: %w", err)
	}
	if machine {
		return roles.Actor{}, ErrMachineActor
	}
	return a, nil
}

// What lockAccount reads of an account's roles: the permissions they
// grant under the catalog (held), or what handing them out needs
// (handing, roles.Handing: also what a custom role stores beyond the
// catalog).
type accountPerms uint8

const (
	held accountPerms = iota
	handing
)

// lockAccount locks a service account of the tenant and returns the
// permissions its roles grant under the catalog, or, with handing, what
// handing them out needs (roles.HandingSQL): a new client secret hands
// the account's power out, and a custom role's permission this
// replica's catalog does not declare (one the replicas of another
// version declare during a rollout) is part of that power wherever it is
// declared, so judged by the catalog alone the secret was made on the
// say of a caller who does not hold it.
func (s *Store) lockAccount(ctx context.Context, tx pgx.Tx, tenantID, id string, what accountPerms) ([]string, error) {
	counted := `p = ANY($3::text[])`
	if what == handing {
		counted = roles.HandingSQL("r", "p", "$3::text[]")
	}
	q := `
SELECT COALESCE((SELECT array_agg(DISTINCT p ORDER BY p) FROM membership_roles mr
                 JOIN roles r ON r.tenant_id = mr.tenant_id AND r.id = mr.role_id
                 CROSS JOIN LATERAL unnest(` + rolePerms + `) AS p
                 WHERE mr.tenant_id = sa.tenant_id AND mr.user_id = sa.user_id AND ` + counted + `), '{}')
FROM service_accounts sa
WHERE sa.tenant_id = $1 AND sa.user_id = $2
FOR UPDATE OF sa`
	var perms []string
	err := tx.QueryRow(ctx, q, tenantID, id, s.all, s.member).Scan(&perms)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("lock service account: %w", err)
	}
	return perms, nil
}

// Create adds a service account holding the named roles (default:
// member). The actor must hold every permission the roles grant, and
// users:write, when the creation runs (live, below).
func (s *Store) Create(ctx context.Context, tenantID string, a roles.Actor, name string, roleNames []string) (Account, error) {
	const qUser = `
INSERT INTO users (id, email, display_name, kind)
SELECT g.id, g.id::text || '@` + EmailDomain + `', $1, 'service' FROM (SELECT gen_random_uuid() AS id) g
RETURNING id::text`
	const qAccount = `
INSERT INTO service_accounts (user_id, tenant_id, name, created_by) VALUES ($1, $2, $3, NULLIF($4, '')::uuid)
RETURNING created_at`
	const qCount = `SELECT count(*) FROM service_accounts WHERE tenant_id = $1`
	if len(roleNames) == 0 {
		roleNames = []string{roles.Member}
	}
	roleNames = slices.Compact(slices.Sorted(slices.Values(roleNames)))
	if slices.Contains(roleNames, roles.Owner) {
		return Account{}, ErrOwnerRole
	}
	acc := Account{Name: name, Roles: roleNames, Secrets: []SecretInfo{}}
	if a.UserID != "" {
		acc.CreatedBy = &a.UserID
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Serialized in the tenant, so the limit holds; the tenant's lock
		// first, then the roles', as a role's deletion takes them.
		a, err := s.live(ctx, tx, tenantID, a)
		if err != nil {
			return err
		}
		// Its roles are judged by this replica's catalog: only if it is
		// the recorded one.
		if err := permissions.CheckCurrent(ctx, tx, s.catalog); err != nil {
			return err
		}
		// The roles stay locked until the account holds them: a change of
		// their permissions waits (roles.Handed).
		found, perms, err := roles.Handed(ctx, tx, s.all, s.member, tenantID, roleNames)
		if err != nil {
			return err
		}
		if !a.Covers(perms) {
			return roles.ErrEscalation
		}
		if found != len(roleNames) {
			return ErrUnknownRole
		}
		var n int
		if err := tx.QueryRow(ctx, qCount, tenantID).Scan(&n); err != nil {
			return fmt.Errorf("count service accounts: %w", err)
		}
		if n >= MaxAccounts {
			return ErrTooManyAccounts
		}
		if err := ratelimit.CheckIn(ctx, tx, ratelimit.Key("service_account_create", tenantID), s.limits.AccountCreations,
			fmt.Sprintf("at most %d service accounts may be created in a tenant in %s, deleted ones included", s.limits.AccountCreations.N, s.limits.AccountCreations.Period())); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, qUser, name).Scan(&acc.ID); err != nil {
			return fmt.Errorf("create service account user: %w", err)
		}
		switch err := tenants.AddMember(ctx, tx, tenantID, acc.ID, roleNames...); {
		case errors.Is(err, tenants.ErrUnknownRole):
			return ErrUnknownRole
		case err != nil:
			return err
		}
		if err := tx.QueryRow(ctx, qAccount, acc.ID, tenantID, name, a.UserID).Scan(&acc.CreatedAt); err != nil {
			return fmt.Errorf("create service account: %w", err)
		}
		return audit.Write(ctx, tx, audit.Event{TenantID: tenantID, ActorUserID: a.UserID, Action: ActionCreated,
			TargetType: "service_account", TargetID: acc.ID, Data: map[string]any{"name": name, "roles": roleNames}, RequestID: a.RequestID})
	})
	if err != nil {
		return Account{}, err
	}
	acc.ClientID = acc.ID
	return acc, nil
}

// Cursor is a keyset position in a List: the last row of a page.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// List returns a page of the tenant's service accounts, oldest first (ties
// by id), at most limit of them, after the cursor when after is not nil.
func (s *Store) List(ctx context.Context, tenantID string, limit int, after *Cursor) ([]Account, error) {
	const q = `
SELECT sa.user_id::text, sa.user_id::text, sa.name,
       ARRAY(SELECT r.name FROM membership_roles mr
             JOIN roles r ON r.tenant_id = mr.tenant_id AND r.id = mr.role_id
             WHERE mr.tenant_id = sa.tenant_id AND mr.user_id = sa.user_id ORDER BY r.name),
       sa.created_by::text, sa.created_at,
       COALESCE((SELECT json_agg(json_build_object('id', x.id, 'created_at', x.created_at, 'last_used_at', x.last_used_at)
                                 ORDER BY x.created_at, x.id)
                 FROM service_account_secrets x WHERE x.user_id = sa.user_id), '[]')
FROM service_accounts sa
WHERE sa.tenant_id = $1 AND (sa.created_at, sa.user_id) > ($2, $3::uuid)
ORDER BY sa.created_at, sa.user_id
LIMIT $4`
	at, id := time.Time{}, "00000000-0000-0000-0000-000000000000"
	if after != nil {
		at, id = after.CreatedAt, after.ID
	}
	rows, err := s.pool.Query(ctx, q, tenantID, at, id, limit)
	if err != nil {
		return nil, fmt.Errorf("list service accounts: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Account])
	if err != nil {
		return nil, fmt.Errorf("list service accounts: %w", err)
	}
	return out, nil
}

// Delete removes a service account: its user row, membership, roles,
// secrets and the API keys it minted (each revoked first, audited and
// announced as any revocation, so the audit log tells what ended with it).
// Proxies evict it at once (outbox), so its access tokens and keys stop
// working. The actor must hold every permission the account holds, and
// users:write, when the deletion runs (live).
//
// It takes the tenant's lock first (roles.LockTenant), as removing a
// member and deleting a role do: the row's deletion cascades to the membership and its grants,
// which those changes lock in the opposite order (the membership, then
// the keys; the grants, then the membership), so unordered they waited
// for each other.
func (s *Store) Delete(ctx context.Context, tenantID, id string, a roles.Actor) error {
	const q = `DELETE FROM users WHERE id = $1 AND kind = 'service'`
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		a, err := s.live(ctx, tx, tenantID, a)
		if err != nil {
			return err
		}
		perms, err := s.lockAccount(ctx, tx, tenantID, id, held)
		if err != nil {
			return err
		}
		// What the account holds follows the catalog (the built-in
		// roles): judged by this replica's only if it is the recorded one.
		if err := permissions.CheckCurrent(ctx, tx, s.catalog); err != nil {
			return err
		}
		if !a.Covers(perms) {
			return roles.ErrEscalation
		}
		if _, err := apikeys.RevokeUserKeys(ctx, tx, tenantID, id, a.UserID, a.RequestID, ActionDeleted); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, q, id); err != nil {
			return fmt.Errorf("delete service account: %w", err)
		}
		if err := audit.Write(ctx, tx, audit.Event{TenantID: tenantID, ActorUserID: a.UserID, Action: ActionDeleted,
			TargetType: "service_account", TargetID: id, RequestID: a.RequestID}); err != nil {
			return err
		}
		return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(id), Reason: ReasonDeleted})
	})
}

// CreateSecret adds a client secret to a service account; the value is
// returned once and only its hash is kept. The actor must hold every
// permission the account holds (a secret is the account's power: what
// handing its roles out needs, a custom role's permissions the catalog
// does not declare included, lockAccount), and users:write, when the
// creation runs (live). An actor whose session
// (a.SessionID) has ended is sessions.ErrEnded, checked after the
// tenant's lock, which a password reset of an account with an unproven
// address takes before it deletes the secrets of the service accounts
// the account created (SilenceCreatedBy): a secret made on the say of a
// session the reset ended, by way of a proxy that has not yet heard,
// would outlive it.
func (s *Store) CreateSecret(ctx context.Context, tenantID, id string, a roles.Actor) (NewSecret, error) {
	const qCount = `SELECT count(*) FROM service_account_secrets WHERE user_id = $1`
	const qInsert = `
INSERT INTO service_account_secrets (user_id, secret_hash) VALUES ($1, $2)
RETURNING id::text, created_at`
	secret, err := newSecret()
	if err != nil {
		return NewSecret{}, err
	}
	ns := NewSecret{ClientID: id, ClientSecret: secret}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		a, err := s.live(ctx, tx, tenantID, a)
		if err != nil {
			return err
		}
		// A secret hands out the account's power, judged by this
		// replica's catalog: only if it is the recorded one.
		if err := permissions.CheckCurrent(ctx, tx, s.catalog); err != nil {
			return err
		}
		if err := sessions.CheckLive(ctx, tx, a.UserID, a.SessionID); err != nil {
			return err
		}
		perms, err := s.lockAccount(ctx, tx, tenantID, id, handing)
		if err != nil {
			return err
		}
		if !a.Covers(perms) {
			return roles.ErrEscalation
		}
		var n int
		if err := tx.QueryRow(ctx, qCount, id).Scan(&n); err != nil {
			return fmt.Errorf("count secrets: %w", err)
		}
		if n >= MaxSecrets {
			return ErrTooManySecrets
		}
		for _, l := range []struct {
			key   []byte
			limit ratelimit.Limit
			what  string
		}{
			{ratelimit.Key("service_account_secret_create", tenantID, id), s.limits.SecretCreations, "this service account"},
			{ratelimit.Key("service_account_secret_create_tenant", tenantID), s.limits.TenantSecretCreations, "this tenant's service accounts"},
		} {
			if err := ratelimit.CheckIn(ctx, tx, l.key, l.limit,
				fmt.Sprintf("at most %d client secrets may be created for %s in %s, deleted ones included", l.limit.N, l.what, l.limit.Period())); err != nil {
				return err
			}
		}
		if err := tx.QueryRow(ctx, qInsert, id, hashSecret(secret)).Scan(&ns.ID, &ns.CreatedAt); err != nil {
			return fmt.Errorf("create secret: %w", err)
		}
		return audit.Write(ctx, tx, audit.Event{TenantID: tenantID, ActorUserID: a.UserID, Action: ActionSecretCreated,
			TargetType: "service_account", TargetID: id, Data: map[string]string{"secret_id": ns.ID}, RequestID: a.RequestID})
	})
	if err != nil {
		return NewSecret{}, err
	}
	return ns, nil
}

// DeleteSecret removes one client secret. The account's access tokens
// end with it (its token version moves on, and proxies are told at once),
// and so do the API keys the account minted (revoked, audited and
// announced as any revocation, in the same transaction): a secret is
// deleted when it may have leaked, and neither a token obtained with it
// nor a key minted with such a token may outlive it. Which secret obtained
// the token that minted a key is not recorded, so every key of the account
// goes, as every token does. Clients holding another live secret obtain a
// new token (and mint new keys). The actor must hold every permission
// the account holds, and users:write, when the deletion runs (live),
// under this replica's catalog, also during a catalog rollout.
func (s *Store) DeleteSecret(ctx context.Context, tenantID, id, secretID string, a roles.Actor) error {
	const qDelete = `DELETE FROM service_account_secrets WHERE id = $1 AND user_id = $2`
	const qBump = `UPDATE users SET token_version = token_version + 1, updated_at = now() WHERE id = $1`
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		a, err := s.live(ctx, tx, tenantID, a)
		if err != nil {
			return err
		}
		// Judged by this replica's catalog, whether it is the recorded
		// one or not (no permissions.CheckCurrent): a deletion only ends
		// access, as an API key's revocation does, and a secret that may
		// have leaked must be deletable while a catalog rollout runs.
		perms, err := s.lockAccount(ctx, tx, tenantID, id, held)
		if err != nil {
			return err
		}
		if !a.Covers(perms) {
			return roles.ErrEscalation
		}
		tag, err := tx.Exec(ctx, qDelete, secretID, id)
		if err != nil {
			return fmt.Errorf("delete secret: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return ErrSecretNotFound
		}
		if _, err := tx.Exec(ctx, qBump, id); err != nil {
			return fmt.Errorf("bump token version: %w", err)
		}
		if _, err := apikeys.RevokeUserKeys(ctx, tx, tenantID, id, a.UserID, a.RequestID, ActionSecretDeleted); err != nil {
			return err
		}
		if err := audit.Write(ctx, tx, audit.Event{TenantID: tenantID, ActorUserID: a.UserID, Action: ActionSecretDeleted,
			TargetType: "service_account", TargetID: id, Data: map[string]string{"secret_id": secretID}, RequestID: a.RequestID}); err != nil {
			return err
		}
		return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(id), Reason: ReasonSecretDeleted})
	})
}

// Silenced is a service account SilenceCreatedBy left without access.
type Silenced struct {
	ID       string `json:"id"`
	TenantID string `json:"tenant_id"`
	// Secrets and Keys: how many client secrets were deleted and how
	// many API keys the account had minted were revoked.
	Secrets int `json:"client_secrets_deleted"`
	Keys    int `json:"api_keys_revoked"`
}

// SilenceCreatedBy ends, in tx, every way into the service accounts that
// creatorID created, in every tenant, while leaving the accounts (their
// names, roles and audit trail) for the tenant to keep or delete: each
// one's client secrets are deleted and its token version moves on (so
// its access tokens end; the proxies are told, as for DeleteSecret), and
// the API keys it minted are revoked (apikeys.RevokeUserKeys). Each
// deleted secret is audited as service_account.secret_deleted, with data
// via naming the cause. A password reset that proves an address the
// account never had proven calls it: the earlier holder of the password
// may have created them. It returns the accounts that had something to
// end. The accounts are locked in the order of their ids; the caller
// takes their tenants' locks (roles.LockTenant) first, as the changes of
// an account do (lockAccount after live).
func SilenceCreatedBy(ctx context.Context, tx pgx.Tx, creatorID, actorID, requestID, via string) ([]Silenced, error) {
	const qAccounts = `
SELECT user_id::text, tenant_id::text FROM service_accounts WHERE created_by = $1 ORDER BY user_id FOR UPDATE`
	const qDelete = `DELETE FROM service_account_secrets WHERE user_id = $1 RETURNING id::text`
	const qBump = `UPDATE users SET token_version = token_version + 1, updated_at = now() WHERE id = $1`
	rows, _ := tx.Query(ctx, qAccounts, creatorID)
	accounts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Silenced, error) {
		var a Silenced
		return a, r.Scan(&a.ID, &a.TenantID)
	})
	if err != nil {
		return nil, fmt.Errorf("service accounts created by the user: %w", err)
	}
	var out []Silenced
	for _, a := range accounts {
		rows, _ := tx.Query(ctx, qDelete, a.ID)
		secrets, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("delete client secrets: %w", err)
		}
		a.Secrets = len(secrets)
		if a.Secrets > 0 {
			b := &pgx.Batch{}
			b.Queue(qBump, a.ID)
			for _, id := range secrets {
				if err := audit.Queue(ctx, b, audit.Event{TenantID: a.TenantID, ActorUserID: actorID, Action: ActionSecretDeleted,
					TargetType: "service_account", TargetID: a.ID, RequestID: requestID,
					Data: map[string]string{"secret_id": id, "via": via}}); err != nil {
					return nil, err
				}
			}
			outbox.Queue(ctx, b, outbox.Row{Subject: invalidation.UserSubject(a.ID), Reason: ReasonSecretDeleted})
			if err := tx.SendBatch(ctx, b).Close(); err != nil {
				return nil, fmt.Errorf("end the service account's tokens: %w", err)
			}
		}
		if a.Keys, err = apikeys.RevokeUserKeys(ctx, tx, a.TenantID, a.ID, actorID, requestID, via); err != nil {
			return nil, err
		}
		if a.Secrets == 0 && a.Keys > 0 {
			// Keys but no secret (a key minted through a proxy that had
			// not yet heard of the last secret's deletion): the account's
			// subject is written all the same, so that the request's
			// X-Auth-Invalidated names the account, whose eviction covers
			// its keys (outbox.Row.CoveredBy), and not each key, which
			// past outbox.MaxReported would purge the proxy's whole cache.
			if err := outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(a.ID), Reason: invalidation.ReasonAPIKeyRevoked}); err != nil {
				return nil, err
			}
		}
		if a.Secrets > 0 || a.Keys > 0 {
			out = append(out, a)
		}
	}
	return out, nil
}

// Lookup finds the service account a client id names, and whether secret
// is one of its live secrets. tenantID is "" when the client id names no
// service account (then ok is false too). A matching secret's last use is
// recorded, at most once a minute, in the same statement, which also
// reads the account's token version (Client.TokenVersion) as of the check.
func (s *Store) Lookup(ctx context.Context, clientID, secret string) (c Client, ok bool, err error) {
	const q = `
WITH sa AS (SELECT sa.tenant_id, u.token_version FROM service_accounts sa JOIN users u ON u.id = sa.user_id WHERE sa.user_id = $1),
hit AS (SELECT id, last_used_at FROM service_account_secrets WHERE user_id = $1 AND secret_hash = $2),
touch AS (
    UPDATE service_account_secrets x SET last_used_at = now() FROM hit
    WHERE x.id = hit.id AND (hit.last_used_at IS NULL OR hit.last_used_at < now() - interval '1 minute')
)
SELECT sa.tenant_id::text, COALESCE((SELECT id::text FROM hit), ''), sa.token_version FROM sa`
	var hash []byte
	if validSecret(secret) {
		hash = hashSecret(secret)
	}
	c.ID = clientID
	err = s.pool.QueryRow(ctx, q, clientID, hash).Scan(&c.TenantID, &c.SecretID, &c.TokenVersion)
	if errors.Is(err, pgx.ErrNoRows) {
		return Client{}, false, nil
	}
	if err != nil {
		return Client{}, false, fmt.Errorf("look up client: %w", err)
	}
	return c, c.SecretID != "", nil
}
