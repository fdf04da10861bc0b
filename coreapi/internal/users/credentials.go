package users

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/sqldb"
)

// Credentials are what a password check needs of an account.
type Credentials struct {
	UserID string
	Hash   string // "" for an account without a password
	// NFKC: the hash is known to hold the password's NFKC form
	// (password.FormNFKC): coreapi made it, or vouched for it.
	NFKC         bool
	Status       string
	TokenVersion int64
	// TenantID is the membership a sign-in lands in: the oldest active
	// one in an active tenant (the one asked for, if any); nil for none.
	TenantID *string
}

// CredentialsByEmail reads the account of an address (any letter case)
// and, when tenantID is not "", whether it may sign in to that tenant;
// ErrNotFound when the address has no account.
func CredentialsByEmail(ctx context.Context, db sqldb.DB, email, tenantID string) (Credentials, error) {
	const q = `
SELECT u.id::text, coalesce(u.password_hash, ''), coalesce(u.password_nfkc_hash = u.password_hash, false), u.status, u.token_version,
       (SELECT m.tenant_id::text FROM memberships m JOIN tenants t ON t.id = m.tenant_id
        WHERE m.user_id = u.id AND m.status = 'active' AND t.status = 'active'
          AND ($2::uuid IS NULL OR m.tenant_id = $2::uuid)
        ORDER BY m.created_at, m.tenant_id LIMIT 1)
FROM users u
WHERE lower(u.email) = lower($1)`
	var tid *string
	if tenantID != "" {
		tid = &tenantID
	}
	var c Credentials
	err := db.QueryRow(ctx, q, email, tid).Scan(&c.UserID, &c.Hash, &c.NFKC, &c.Status, &c.TokenVersion, &c.TenantID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Credentials{}, ErrNotFound
	}
	if err != nil {
		return Credentials{}, fmt.Errorf("load account: %w", err)
	}
	return c, nil
}

// ErrInactive: the account, its membership in the caller's tenant or the
// tenant is not active (see ActiveAccount).
var ErrInactive = errors.New("the account or its membership is no longer active")

// ActiveAccount returns the token version of userID if the account, its
// membership in tenantID and the tenant are all active, as a sign-in to
// that tenant needs them; else ErrInactive. A change asked for with the
// bearer of such an account, which a proxy that has not yet heard of the
// disabling still forwards, checks it first and again in its transaction
// after the account's row is locked (as a disabling of the account takes
// it), so nothing it leaves behind waits for the account to be active
// again.
func ActiveAccount(ctx context.Context, db sqldb.DB, userID, tenantID string) (int64, error) {
	const q = `
SELECT u.token_version FROM users u
JOIN memberships m ON m.user_id = u.id AND m.tenant_id = $2
JOIN tenants t ON t.id = m.tenant_id
WHERE u.id = $1 AND u.status = 'active' AND m.status = 'active' AND t.status = 'active'`
	var tv int64
	err := db.QueryRow(ctx, q, userID, tenantID).Scan(&tv)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrInactive
	}
	if err != nil {
		return 0, fmt.Errorf("load account: %w", err)
	}
	return tv, nil
}

// HasActiveFactor reports, through db (a pool, or a transaction that
// locked what the caller needs first), whether the user has an active
// second factor.
func HasActiveFactor(ctx context.Context, db sqldb.DB, userID string) (bool, error) {
	const q = `SELECT EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = $1 AND status = 'active')`
	var ok bool
	if err := db.QueryRow(ctx, q, userID).Scan(&ok); err != nil {
		return false, fmt.Errorf("check mfa: %w", err)
	}
	return ok, nil
}

// SignInTenant returns the tenant a sign-in of userID naming none lands
// in, as CredentialsByEmail picks it: the oldest active membership in an
// active tenant; ErrNotFound for none.
func SignInTenant(ctx context.Context, db sqldb.DB, userID string) (string, error) {
	const q = `
SELECT m.tenant_id::text FROM memberships m JOIN tenants t ON t.id = m.tenant_id
WHERE m.user_id = $1 AND m.status = 'active' AND t.status = 'active'
ORDER BY m.created_at, m.tenant_id LIMIT 1`
	var tid string
	err := db.QueryRow(ctx, q, userID).Scan(&tid)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("pick tenant: %w", err)
	}
	return tid, nil
}

// Password is what a check of a user's password needs.
type Password struct {
	Hash         string // "" for an account without a password
	NFKC         bool   // the hash is known to hold the NFKC form (Credentials.NFKC)
	Email        string // the address the check is counted under (lockout)
	TokenVersion int64  // moves on with every password change or reset
}

// PasswordOf returns a user's password hash, address and token version;
// ErrNotFound for no such user.
func PasswordOf(ctx context.Context, db sqldb.DB, userID string) (Password, error) {
	const q = `
SELECT coalesce(password_hash, ''), coalesce(password_nfkc_hash = password_hash, false), email, token_version
FROM users WHERE id = $1`
	var p Password
	err := db.QueryRow(ctx, q, userID).Scan(&p.Hash, &p.NFKC, &p.Email, &p.TokenVersion)
	if errors.Is(err, pgx.ErrNoRows) {
		return Password{}, ErrNotFound
	}
	if err != nil {
		return Password{}, fmt.Errorf("load password: %w", err)
	}
	return p, nil
}

// SetPassword stores a new password hash (made by password.Hasher.Hash,
// so of the NFKC form, which it records) in place of the hash current, the
// one the caller's current password was checked against, and moves the
// token version on (every access token of the user becomes stale); it
// returns the new version. ErrPasswordChanged: the stored hash is no longer
// current (a reset, or another change, committed since it was read), and
// nothing changed. A password a tenant admin chose stays marked so
// (users.password_set_by_admin): the change proves knowledge of the
// current password, which that admin has too, and an admin who changed it
// to another of their own would keep password access to the account its
// owner then links a provider to, or joins tenants with. Only a reset,
// which proves the mailbox, clears the mark.
func SetPassword(ctx context.Context, db sqldb.DB, userID, current, hash string) (int64, error) {
	const q = `
UPDATE users SET password_hash = $3, password_nfkc_hash = $3, token_version = token_version + 1, updated_at = now()
WHERE id = $1 AND password_hash = $2
RETURNING token_version`
	var tv int64
	err := db.QueryRow(ctx, q, userID, current, hash).Scan(&tv)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrPasswordChanged
	}
	if err != nil {
		return 0, fmt.Errorf("update password: %w", err)
	}
	return tv, nil
}

// ErrPasswordChanged: the account's password hash is not the one a change
// checked the current password against.
var ErrPasswordChanged = errors.New("the password changed meanwhile")

// Rehash replaces a password hash made with older parameters, or of the
// password as typed, by newHash (made by password.Hasher.Hash: of the NFKC
// form, which it records), unless it changed meanwhile.
func Rehash(ctx context.Context, db sqldb.DB, userID, oldHash, newHash string) error {
	const q = `UPDATE users SET password_hash = $3, password_nfkc_hash = $3 WHERE id = $1 AND password_hash = $2`
	if _, err := db.Exec(ctx, q, userID, oldHash, newHash); err != nil {
		return fmt.Errorf("store rehashed password: %w", err)
	}
	return nil
}

// VouchNFKC records that the stored hash, unless it changed meanwhile,
// holds the password's NFKC form (a check matched that form): its next
// checks accept a match of that form only.
func VouchNFKC(ctx context.Context, db sqldb.DB, userID, hash string) error {
	const q = `UPDATE users SET password_nfkc_hash = password_hash WHERE id = $1 AND password_hash = $2`
	if _, err := db.Exec(ctx, q, userID, hash); err != nil {
		return fmt.Errorf("record the password hash's form: %w", err)
	}
	return nil
}

// BumpTokenVersion makes every access token of the user stale.
func BumpTokenVersion(ctx context.Context, db sqldb.DB, userID string) error {
	const q = `UPDATE users SET token_version = token_version + 1, updated_at = now() WHERE id = $1`
	if _, err := db.Exec(ctx, q, userID); err != nil {
		return fmt.Errorf("bump token version: %w", err)
	}
	return nil
}

// ActiveMembership returns the token version of a user who is active, with
// an active membership in an active tenant; ErrNotFound otherwise. The
// membership's row is share-locked until db's transaction ends: a removal
// (which locks it to delete it) waits, and then finds and ends a session
// the caller moved into the tenant meanwhile (a tenant switch), instead of
// leaving it bound there to come back with the next membership.
func ActiveMembership(ctx context.Context, db sqldb.DB, userID, tenantID string) (int64, error) {
	const q = `
SELECT u.token_version FROM memberships m
JOIN users u ON u.id = m.user_id
JOIN tenants t ON t.id = m.tenant_id
WHERE m.user_id = $1 AND m.tenant_id = $2
  AND m.status = 'active' AND t.status = 'active' AND u.status = 'active'
FOR SHARE OF m`
	var tv int64
	err := db.QueryRow(ctx, q, userID, tenantID).Scan(&tv)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("check membership: %w", err)
	}
	return tv, nil
}
