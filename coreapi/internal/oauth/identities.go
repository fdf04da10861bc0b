package oauth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sqldb"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// UnlinkMaxAge is how recent the caller's sign-in (with the second
// factor, for an account that has one) must be to unlink a provider: a
// session taken from its owner must not remove the owner's own way in.
const UnlinkMaxAge = 5 * time.Minute

// linkedIdentity is one provider identity linked to the caller's account,
// as GET /users/me/identities shows it: the provider's configured name,
// the address the provider gave when it was linked, and when.
type linkedIdentity struct {
	Provider string    `json:"provider"`
	Email    *string   `json:"email"`
	LinkedAt time.Time `json:"linked_at"`
}

// listIdentities answers the caller's linked provider identities, oldest
// first.
func (s *Service) listIdentities(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	out, err := identitiesOf(c.UserContext(), s.pool, id.UserID)
	if err != nil {
		return err
	}
	return c.JSON(struct {
		Data []linkedIdentity `json:"data"`
	}{out})
}

// identitiesOf lists userID's linked identities, oldest first.
func identitiesOf(ctx context.Context, db sqldb.DB, userID string) ([]linkedIdentity, error) {
	const q = `
SELECT provider, email, created_at AS linked_at FROM identities
WHERE user_id = $1 ORDER BY created_at, id`
	rows, err := db.Query(ctx, q, userID)
	if err != nil {
		return nil, fmt.Errorf("list identities: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[linkedIdentity])
	if err != nil {
		return nil, fmt.Errorf("list identities: %w", err)
	}
	if out == nil {
		out = []linkedIdentity{}
	}
	return out, nil
}

// Refusals of an unlink.
var (
	errNoSuchLink = problem.New(fiber.StatusNotFound, problem.CodeNotFound, "no identity of this provider is linked to the account")
	// errLastSignInMethod: the account has no password and this
	// provider's identity is its only other way in.
	errLastSignInMethod = problem.New(fiber.StatusConflict, problem.CodeLastSignInMethod,
		"this provider is the account's only way to sign in (it has no password and no other provider linked); set a password first (forgot password)")
	// errUnlinkNotFresh: the sign-in is older than UnlinkMaxAge (or
	// lacks the second factor the account has).
	errUnlinkNotFresh = errors.New("the sign-in is not recent enough to unlink")
)

// unlinkIdentity removes the caller's identities of a provider (by its
// name, which need not be configured any more): it no longer signs in to
// the account, and a sign-in through it is not linked to the account by
// its address again (providerUnlinked). The account's last way in is never removed (an account
// without a password keeps one provider). It needs a sign-in within
// UnlinkMaxAge, with the second factor for an account that has one, of a
// session still bound to the token's tenant, by an account that could
// sign in now; all checked with the account's row locked, which a link
// (userByEmail), a password reset and a concurrent unlink take too, so
// two unlinks of an account's last two providers cannot both pass. The
// owner's verified address is told; nothing the proxy caches holds the
// links, so nothing is invalidated (sessions opened through the provider
// stay until they end, are revoked, or a password reset ends them all).
func (s *Service) unlinkIdentity(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	ctx := c.UserContext()
	provider := strings.Clone(c.Params("provider"))
	rid := strings.Clone(httpapi.RequestIDOf(c))
	var mfa bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		const qLock = `SELECT password_hash IS NOT NULL FROM users WHERE id = $1 FOR NO KEY UPDATE`
		// The provider is remembered as unlinked (providerUnlinked): a
		// sign-in through it no longer links to the account by address.
		const qDelete = `
WITH d AS (DELETE FROM identities WHERE user_id = $1 AND provider = $2 RETURNING subject),
u AS (
    INSERT INTO identity_unlinks (user_id, provider) SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM d)
    ON CONFLICT (user_id, provider) DO UPDATE SET created_at = now()
)
SELECT subject FROM d`
		const qLeft = `SELECT count(*) FROM identities WHERE user_id = $1`
		var hasPassword bool
		if err := tx.QueryRow(ctx, qLock, id.UserID).Scan(&hasPassword); errors.Is(err, pgx.ErrNoRows) {
			return sessions.ErrNotFound
		} else if err != nil {
			return fmt.Errorf("lock user: %w", err)
		}
		// Statements after the lock: they see a revocation, a tenant
		// switch, a disabling or a factor committed by whoever held the
		// row before.
		var err error
		if mfa, err = auth.HasActiveFactor(ctx, tx, id.UserID); err != nil {
			return err
		}
		if fresh, err := sessions.Fresh(ctx, tx, id, UnlinkMaxAge, mfa); err != nil {
			return err
		} else if !fresh {
			return errUnlinkNotFresh
		}
		if err := sessions.LockLiveIn(ctx, tx, id.UserID, id.SessionID, id.TenantID); err != nil {
			return err
		}
		if _, err := users.ActiveAccount(ctx, tx, id.UserID, id.TenantID); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, qDelete, id.UserID, provider)
		if err != nil {
			return fmt.Errorf("unlink identity: %w", err)
		}
		subjects, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("unlink identity: %w", err)
		}
		if len(subjects) == 0 {
			return errNoSuchLink
		}
		var left int
		if err := tx.QueryRow(ctx, qLeft, id.UserID).Scan(&left); err != nil {
			return fmt.Errorf("count identities: %w", err)
		}
		if !hasPassword && left == 0 {
			return errLastSignInMethod
		}
		if err := auth.NoticeOwner(ctx, tx, id.UserID, mail.KindIdentityUnlinked, mail.Data{At: time.Now(), Provider: provider}); err != nil {
			return err
		}
		return audit.WriteForUser(ctx, tx, id.UserID, audit.Event{ActorUserID: id.UserID,
			Action: audit.ActionUserIdentityUnlinked, TargetType: audit.TargetUser, TargetID: id.UserID, RequestID: rid,
			Data: map[string]any{"provider": provider, "subjects": subjects}})
	})
	switch {
	case errors.Is(err, errUnlinkNotFresh) && mfa:
		return httpapi.NeedRecentSecondFactor(c, UnlinkMaxAge, "unlinking a sign-in provider needs a second factor given in the last 5 minutes; step up with grant_type=mfa_otp")
	case errors.Is(err, errUnlinkNotFresh):
		return httpapi.NeedRecentSignIn(c, UnlinkMaxAge, "unlinking a sign-in provider needs a sign-in within the last 5 minutes: sign in again")
	case errors.Is(err, sessions.ErrNotFound):
		return httpapi.SessionEnded(c)
	case err != nil:
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// providerUnlinked reports whether the owner of userID unlinked provider
// (DELETE /users/me/identities/{provider}): a sign-in through it is then
// not linked to the account by address again, whichever subject it
// names. Run in the link's transaction, after userByEmail locked the
// account's row, which an unlink locks before recording the provider.
func providerUnlinked(ctx context.Context, db sqldb.DB, userID, provider string) (bool, error) {
	const q = `SELECT EXISTS (SELECT 1 FROM identity_unlinks WHERE user_id = $1 AND provider = $2)`
	var ok bool
	if err := db.QueryRow(ctx, q, userID, provider).Scan(&ok); err != nil {
		return false, fmt.Errorf("find unlinked provider: %w", err)
	}
	return ok, nil
}
