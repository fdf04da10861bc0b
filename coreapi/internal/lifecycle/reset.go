package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apikeys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/invitations"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/serviceaccounts"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sqldb"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

type forgotBody struct {
	Email string `json:"email"`
}

// forgotAnswer is the one answer of the forgot route, whatever happened.
func forgotAnswer() Accepted {
	return Accepted{Message: "if an account has this address, a link to reset its password is on its way"}
}

// forgotPassword always answers 202 with the same body: an unknown
// address, a disabled account and an address over its mail limits look
// exactly like a mail sent. Only the per-IP limit answers 429 (it says
// nothing about any address). The mails to an address are counted per
// client network (ForgotPerAddress) under a ceiling over every network
// (ForgotPerInbox), and a hit either refuses counts on neither: one
// network asking again and again spends its own share, not the owner's,
// and what many networks spend leaves the links they had mailed valid
// (startReset revokes none). The reset itself (startReset) runs after
// the answer (resetAfterAnswer): issuing a token and queueing its mail
// takes several statements and a commit that an unknown address does not
// need, so done before the answer its time told which addresses have
// accounts.
func (s *Service) forgotPassword(c *fiber.Ctx) error {
	var b forgotBody
	if err := decode(c, &b); err != nil {
		return formError(c, PageResetPassword, "", err)
	}
	email := mail.Canonical(b.Email)
	if email == "" || len(email) > mail.MaxStoredAddress {
		return formError(c, PageResetPassword, "", httpapi.Invalid("email", "an email address is required"))
	}
	ctx := c.UserContext()
	ok, wait, err := s.limiter.Allow(ctx, ratelimit.Key("forgot", "ip", ratelimit.ClientKey(clientIP(c))), s.limits.ForgotPerIP)
	if err != nil {
		return err
	}
	if !ok {
		// The page's form is sent back to the page with the error, as
		// every other refusal of it is (not a JSON body in the browser).
		return formError(c, PageResetPassword, "", tooMany(c, wait, "too many password reset requests from this address"))
	}
	inbox := mail.Inbox(email)
	_, ok, _, err = s.limiter.AllowBoth(ctx, ratelimit.Key("forgot", "addr", inbox), s.limits.ForgotPerInbox,
		ratelimit.Key("forgot", "addr-client", inbox, ratelimit.ClientKey(clientIP(c))), s.limits.ForgotPerAddress)
	if err != nil {
		return err
	}
	if ok {
		if err := s.resetAfterAnswer(ctx, strings.Clone(email), strings.Clone(httpapi.RequestIDOf(c))); err != nil {
			return err
		}
	}
	if isForm(c) {
		return seeOther(c, PageResetPassword+"?sent=1")
	}
	return c.Status(fiber.StatusAccepted).JSON(forgotAnswer())
}

// Bounds of the resets that run after their answer.
const (
	// maxPendingResets is how many may run at once; a forgot request that
	// finds them all busy waits for a slot before it answers, whatever
	// its address.
	maxPendingResets = 16
	// resetTimeout bounds one of them.
	resetTimeout = 30 * time.Second
)

// afterAnswer tracks the resets started after their answer, so that a
// shutdown waits for them before the pool closes.
type afterAnswer struct {
	slots  chan struct{}
	mu     sync.Mutex
	closed bool // shutting down: resets run before the answer again
	wg     sync.WaitGroup
}

// resetAfterAnswer starts startReset for email in the background, once one
// of maxPendingResets slots is free (ctx.Err() if ctx ends first); after
// a shutdown began it does the work itself, before the answer.
func (s *Service) resetAfterAnswer(ctx context.Context, email, requestID string) error {
	select {
	case s.resets.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.resets.mu.Lock()
	if s.resets.closed {
		s.resets.mu.Unlock()
		<-s.resets.slots
		return s.startReset(ctx, email, requestID)
	}
	s.resets.wg.Add(1)
	s.resets.mu.Unlock()
	go func() {
		defer s.resets.wg.Done()
		defer func() { <-s.resets.slots }()
		// Not the request's context: the request is over by now.
		ctx, cancel := context.WithTimeout(context.Background(), resetTimeout)
		defer cancel()
		if err := s.startReset(ctx, email, requestID); err != nil {
			s.log.ErrorContext(ctx, "password reset request", "request_id", requestID, "err", err)
		}
	}()
	return nil
}

// WaitResets waits for the password resets started after their answer so
// far (see forgotPassword).
func (s *Service) WaitResets() { s.resets.wg.Wait() }

// closeResets makes later resets run before their answer, then waits for
// the ones in the background.
func (s *Service) closeResets() {
	s.resets.mu.Lock()
	s.resets.closed = true
	s.resets.mu.Unlock()
	s.resets.wg.Wait()
}

// startReset issues a reset token and queues its mail when the address
// has an active account of a person (a service account has no password
// to reset). The account's row is locked, so concurrent requests take
// turns. The links mailed before stay valid until they expire or one of
// them is used (resetPassword revokes the others): a request, which
// anyone who knows the address can make, must not kill the link its owner
// is about to open, and the owner may be left with only those links when
// others spent the address's mails (forgotPassword). Every one of them
// went to the same inbox.
func (s *Service) startReset(ctx context.Context, email, requestID string) error {
	// The mail greets the account's owner by name only once the address
	// is proven: the name of an account whose address is not is anyone's
	// who signed up with it (or a tenant admin's who created it), and
	// anyone can have this mail sent to that address.
	const q = `
SELECT id::text, email, CASE WHEN email_verified_at IS NOT NULL THEN display_name ELSE '' END
FROM users WHERE lower(email) = lower($1) AND status = 'active' AND kind = 'human' FOR UPDATE`
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var uid, addr, name string
		err := tx.QueryRow(ctx, q, email).Scan(&uid, &addr, &name)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("find account: %w", err)
		}
		if !mail.ValidAddress(addr) {
			// An address stored before ValidAddress refused it: no link
			// is made, and the mail is parked with the reason for the
			// operator (the answer was the same 202 as ever).
			return mail.EnqueueOrPark(ctx, tx, mail.Message{Kind: mail.KindPasswordReset, To: addr,
				Data: mail.Data{DisplayName: name}, UserID: uid})
		}
		raw, exp, err := onetime.Issue(ctx, tx, onetime.PasswordReset, uid, addr, onetime.ResetTTL)
		if err != nil {
			return err
		}
		if err := mail.Enqueue(ctx, tx, mail.Message{Kind: mail.KindPasswordReset, To: addr, Token: raw,
			Data: mail.Data{DisplayName: name, ExpiresAt: exp}, UserID: uid}); err != nil {
			return err
		}
		return auditUser(ctx, tx, uid, "", audit.ActionUserPasswordResetRequested, requestID, nil)
	})
}

// errResetDisabled: a disabled account's password is not reset (the
// sign-in's answer); the link stays usable should the account be enabled
// again.
var errResetDisabled = problem.New(fiber.StatusForbidden, problem.CodeUserDisabled,
	"this account is disabled: its password cannot be reset")

type resetBody struct {
	Token       string `json:"token"`
	NewPassword string `json:"new_password"`
}

// resetPassword consumes a reset token: the password is set, the address
// counts as verified (the link reached it), the token version moves on
// and every session is revoked (the proxies hear it through the outbox);
// pending email changes die with them. When the address had never been
// proven before, whoever chose the password until now was anyone who
// typed the address at sign-up: what they could have left to outlive the
// password ends too (clearUnproven).
func (s *Service) resetPassword(c *fiber.Ctx) error {
	var b resetBody
	if err := decode(c, &b); err != nil {
		return formError(c, PageResetPassword, "", err)
	}
	if b.Token == "" {
		return formError(c, PageResetPassword, "", httpapi.Invalid("token", "required"))
	}
	if err := password.CheckNew(b.NewPassword); err != nil {
		return formError(c, PageResetPassword, b.Token, httpapi.Invalid("new_password", err.Error()))
	}
	ctx := c.UserContext()
	// A cheap look-up first: random or expired tokens must not cost an
	// argon2 hash each.
	t, err := onetime.Check(ctx, s.pool, onetime.PasswordReset, b.Token)
	if err != nil {
		// An expired link's page names its address (the token stays in
		// the redirect).
		return formError(c, PageResetPassword, b.Token, err)
	}
	// Nor must a link the transaction below refuses while leaving it
	// usable (a disabled account's, one whose address changed since the
	// mail): its holder could send it again and again, a hash each.
	if err := resettable(ctx, s.pool, t); err != nil {
		return formError(c, PageResetPassword, b.Token, err)
	}
	// The hash counts against the client's budget of password checks,
	// as a sign-in's does.
	ok, wait, err := s.auth.ReserveHash(ctx, clientIP(c))
	if err != nil {
		return err
	}
	if !ok {
		return formError(c, PageResetPassword, b.Token, tooMany(c, wait,
			"too many passwords checked from this address (PASSWORD_CHECKS_PER_HOUR)"))
	}
	hash, err := s.passwords.Hash(ctx, b.NewPassword)
	if err != nil {
		return err
	}
	// unproven is whether the address was unproven before this reset (the
	// row is locked: the FROM's read sees it as it was).
	const qSet = `
UPDATE users u SET password_hash = $2, password_nfkc_hash = $2, token_version = u.token_version + 1, password_set_by_admin = false,
       email_verified_at = coalesce(u.email_verified_at, now()),
       failed_logins = 0, locked_until = NULL, updated_at = now()
FROM (SELECT email_verified_at IS NULL AS unproven FROM users WHERE id = $1) prior
WHERE u.id = $1 AND lower(u.email) = lower($3)
RETURNING prior.unproven`
	rid := strings.Clone(httpapi.RequestIDOf(c))
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockUnprovenTenants(ctx, tx, b.Token); err != nil {
			return err
		}
		// The account's row before the token (see onetime.LockUser).
		if err := onetime.LockUser(ctx, tx, onetime.PasswordReset, b.Token); err != nil {
			return err
		}
		t, err := onetime.Consume(ctx, tx, onetime.PasswordReset, b.Token)
		if err != nil {
			return err
		}
		// A link mailed before the account was disabled sets no password
		// (nor proves the address, nor ends what clearUnproven ends): no
		// link is mailed to a disabled account, and one enabled again
		// must not come back with a password whoever held the link chose
		// meanwhile. Refused, the transaction rolls back and the link
		// stays usable.
		var status string
		if err := tx.QueryRow(ctx, `SELECT status FROM users WHERE id = $1`, t.UserID).Scan(&status); err != nil {
			return fmt.Errorf("load user: %w", err)
		}
		if status != identity.StatusActive {
			return errResetDisabled
		}
		var unproven bool
		err = tx.QueryRow(ctx, qSet, t.UserID, hash, t.Email).Scan(&unproven)
		if errors.Is(err, pgx.ErrNoRows) { // the address changed since the mail
			return onetime.ErrInvalid
		}
		if err != nil {
			return fmt.Errorf("reset password: %w", err)
		}
		if _, err := s.auth.Sessions().RevokeAll(ctx, tx, t.UserID, "", "password_reset"); err != nil {
			return err
		}
		if unproven {
			if err := clearUnproven(ctx, tx, t.UserID, rid); err != nil {
				return err
			}
		}
		if err := onetime.Revoke(ctx, tx, t.UserID, onetime.PasswordReset); err != nil {
			return err
		}
		if err := onetime.RevokeEmailChanges(ctx, tx, t.UserID); err != nil {
			return err
		}
		if err := auditUser(ctx, tx, t.UserID, t.UserID, audit.ActionUserPasswordReset, rid, nil); err != nil {
			return err
		}
		return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(t.UserID), Reason: invalidation.ReasonUserPasswordReset})
	})
	if err != nil {
		return formError(c, PageResetPassword, b.Token, err)
	}
	return done(c, PageResetPassword, fiber.StatusNoContent, nil)
}

// resettable refuses, before its new password is hashed, the reset of
// the token t (onetime.Check) that resetPassword's transaction would
// refuse: a disabled account (errResetDisabled) or an address changed
// since the mail (onetime.ErrInvalid). The transaction checks both again
// under the account's lock.
func resettable(ctx context.Context, db sqldb.DB, t onetime.Token) error {
	var (
		status string
		same   bool
	)
	err := db.QueryRow(ctx, `SELECT status, lower(email) = lower($2) FROM users WHERE id = $1`, t.UserID, t.Email).Scan(&status, &same)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return onetime.ErrInvalid
	case err != nil:
		return fmt.Errorf("load user: %w", err)
	case status != identity.StatusActive:
		return errResetDisabled
	case !same:
		return onetime.ErrInvalid
	}
	return nil
}

// lockUnprovenTenants locks, in tx, the tenants where the account of the
// reset token raw may have left something for clearUnproven to end (its
// memberships, the tenants of the service accounts it created and of its
// pending invitations), in the order of their ids, when its address is
// unproven; nothing otherwise. Before the account's row: a key's creation
// takes its tenant's lock (roles.LockTenant) and then the tenant's key
// lock before its insert waits for the account's row, and a change of a
// service account the tenant's lock before the account's; taken in the
// other order, the reset and either of them waited for each other. The
// tenants are read before the lock; clearUnproven reads what to end
// again, under it.
func lockUnprovenTenants(ctx context.Context, tx pgx.Tx, raw string) error {
	const q = `
WITH u AS (
    SELECT u.id FROM action_tokens t JOIN users u ON u.id = t.user_id
    WHERE t.token_hash = $1 AND t.purpose = $2 AND u.email_verified_at IS NULL)
SELECT 1 FROM tenants WHERE id IN (
    SELECT tenant_id FROM memberships WHERE user_id IN (SELECT id FROM u)
    UNION SELECT tenant_id FROM service_accounts WHERE created_by IN (SELECT id FROM u)
    UNION SELECT tenant_id FROM invitations WHERE invited_by IN (SELECT id FROM u) AND status = 'pending')
ORDER BY id FOR NO KEY UPDATE`
	if !onetime.Plausible(raw) {
		return nil
	}
	if _, err := tx.Exec(ctx, q, onetime.Hash(raw), string(onetime.PasswordReset)); err != nil {
		return fmt.Errorf("lock the tenants of an unproven account: %w", err)
	}
	return nil
}

// cleared is the audit data of what clearUnproven ended, in one tenant:
// that tenant's API keys, service accounts (with their secrets and keys)
// and invitations, and the account's second factor, which guards every
// tenant of the account.
type cleared struct {
	APIKeys         int      `json:"api_keys_revoked"`
	ServiceAccounts []string `json:"service_accounts"`
	Secrets         int      `json:"client_secrets_deleted"`
	ServiceKeys     int      `json:"service_account_api_keys_revoked"`
	Factor          bool     `json:"second_factor_removed"`
	RecoveryCodes   int64    `json:"recovery_codes_deleted"`
	Invitations     int      `json:"invitations_revoked"`
	Identities      int      `json:"identities_removed"`
}

func (c cleared) any() bool {
	return c.APIKeys > 0 || len(c.ServiceAccounts) > 0 || c.Factor || c.RecoveryCodes > 0 || c.Invitations > 0 || c.Identities > 0
}

// clearUnproven ends, in the reset's transaction, what anyone who held
// the password of userID while its address was unproven could have left
// to outlive the password (sessions and refresh tokens end with every
// reset): every API key acting as the account, in every tenant; the
// client secrets of the service accounts it created and the keys those
// minted (the accounts stay, see serviceaccounts.SilenceCreatedBy); its
// second factor, recovery codes and waiting second-factor sign-ins (a
// factor the owner does not hold would lock them out); and the
// invitations it sent that are still pending; and its linked provider
// identities (a sign-in through a provider that is not authoritative for
// the address's domain creates the account unverified, linked to whoever
// holds the provider's account). Each is audited and
// announced as its own revocation is, with data via user.password_reset,
// and one user.unverified_access_cleared event in each of the account's
// tenants says what went there, and the second factor (none where
// nothing did): a tenant's admins are not told of another tenant's
// service accounts, keys or invitations.
func clearUnproven(ctx context.Context, tx pgx.Tx, userID, requestID string) error {
	const via = audit.ActionUserPasswordReset
	const qTenants = `SELECT tenant_id::text FROM memberships WHERE user_id = $1 ORDER BY tenant_id`
	keys, err := apikeys.RevokeEveryKeyOf(ctx, tx, userID, userID, requestID, via)
	if err != nil {
		return err
	}
	sas, err := serviceaccounts.SilenceCreatedBy(ctx, tx, userID, userID, requestID, via)
	if err != nil {
		return err
	}
	f, err := auth.DeleteFactor(ctx, tx, userID)
	if err != nil {
		return err
	}
	invited, err := invitations.WithdrawSentBy(ctx, tx, userID, userID, requestID, via)
	if err != nil {
		return err
	}
	identities, err := removeIdentities(ctx, tx, userID)
	if err != nil {
		return err
	}
	rows, _ := tx.Query(ctx, qTenants, userID)
	tenantIDs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("tenants of the account: %w", err)
	}
	for _, tid := range tenantIDs {
		c := cleared{APIKeys: keys[tid], ServiceAccounts: []string{}, Factor: f.Factor, RecoveryCodes: f.RecoveryCodes,
			Invitations: invited[tid], Identities: identities}
		for _, sa := range sas {
			if sa.TenantID == tid {
				c.ServiceAccounts = append(c.ServiceAccounts, sa.ID)
				c.Secrets += sa.Secrets
				c.ServiceKeys += sa.Keys
			}
		}
		if !c.any() {
			continue
		}
		if err := audit.Write(ctx, tx, audit.Event{TenantID: tid, ActorUserID: userID, Action: audit.ActionUserUnverifiedAccessCleared,
			TargetType: audit.TargetUser, TargetID: userID, Data: c, RequestID: requestID}); err != nil {
			return err
		}
	}
	if !f.Factor {
		return nil
	}
	return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(userID), Reason: invalidation.ReasonUserMFAReset})
}

// removeIdentities deletes every provider identity linked to userID and
// counts them. No session is revoked here: the reset ends them all.
func removeIdentities(ctx context.Context, tx pgx.Tx, userID string) (int, error) {
	const q = `DELETE FROM identities WHERE user_id = $1`
	tag, err := tx.Exec(ctx, q, userID)
	if err != nil {
		return 0, fmt.Errorf("remove identities: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
