package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/oauth2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sqldb"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// UnlinkMaxAge is how recent the caller's sign-in (with the second
// factor, for an account that has one) must be to unlink a provider, or
// to start linking one: a session taken from its owner must neither
// remove the owner's own way in nor add one of its taker's.
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
	if err := httpapi.NoQuery(c); err != nil {
		return err
	}
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
	// errLastSignInMethod: the account has no password and no identity
	// but this provider's could still sign in (signInProviders).
	errLastSignInMethod = problem.New(fiber.StatusConflict, problem.CodeLastSignInMethod,
		"this provider is the account's only way to sign in (it has no password and no other linked provider that can still sign in); set a password first (forgot password)")
	// errNotRecent: the sign-in is older than UnlinkMaxAge (or lacks the
	// second factor the account has).
	errNotRecent = errors.New("the sign-in is not recent enough")
)

// checkOwner locks the caller's account row and checks, with it locked,
// what an unlink and the start of a link need, in this order: a session
// still live and bound to the token's tenant (sessions.ErrNotFound), a
// sign-in within UnlinkMaxAge, with the second factor for an account that
// has one (errNotRecent), by an account that could sign in now. It
// returns whether the account has a password and an active factor.
// Statements after the lock see a revocation, a tenant switch, a
// disabling or a factor committed by whoever held the row before.
func checkOwner(ctx context.Context, tx pgx.Tx, id identity.Identity) (hasPassword, mfa bool, err error) {
	const qLock = `SELECT password_hash IS NOT NULL FROM users WHERE id = $1 FOR NO KEY UPDATE`
	if err := tx.QueryRow(ctx, qLock, id.UserID).Scan(&hasPassword); errors.Is(err, pgx.ErrNoRows) {
		return false, false, sessions.ErrNotFound
	} else if err != nil {
		return false, false, fmt.Errorf("lock user: %w", err)
	}
	if mfa, err = auth.HasActiveFactor(ctx, tx, id.UserID); err != nil {
		return false, false, err
	}
	// The session first: an ended one (signed out, or moved to another
	// tenant) is answered as ended, not as one to step up, which it never
	// could (Fresh finds no live session and so no recent sign-in).
	if err := sessions.LockLiveIn(ctx, tx, id.UserID, id.SessionID, id.TenantID); err != nil {
		return false, mfa, err
	}
	if fresh, err := sessions.Fresh(ctx, tx, id, UnlinkMaxAge, mfa); err != nil {
		return false, mfa, err
	} else if !fresh {
		return false, mfa, errNotRecent
	}
	if _, err := users.ActiveAccount(ctx, tx, id.UserID, id.TenantID); err != nil {
		return false, mfa, err
	}
	return hasPassword, mfa, nil
}

// ownerRefusal answers checkOwner's refusals of what (the action, for the
// problem's detail); other errors are returned as they are.
func ownerRefusal(c *fiber.Ctx, err error, mfa bool, what string) error {
	switch {
	case errors.Is(err, errNotRecent):
		return httpapi.NeedRecentAuth(c, UnlinkMaxAge, mfa, what)
	case errors.Is(err, sessions.ErrNotFound):
		return httpapi.SessionEnded(c)
	}
	return err
}

// unlinkIdentity removes the caller's identities of a provider (by its
// name, which need not be configured any more): it no longer signs in to
// the account, and a sign-in through it is not linked to the account by
// its address again (providerUnlinked). The account's last way in is never
// removed: an account without a password keeps one identity that can
// still sign in (usableIdentities); one of a retired provider, or linked
// through another issuer than its provider's, does not count. It needs a
// sign-in within UnlinkMaxAge, with the second factor for an account that
// has one, of a session still bound to the token's tenant, by an account
// that could sign in now; all checked with the account's row locked, which a link
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
		// The provider is remembered as unlinked (providerUnlinked): a
		// sign-in through it no longer links to the account by address.
		const qDelete = `
WITH d AS (DELETE FROM identities WHERE user_id = $1 AND provider = $2 RETURNING subject),
u AS (
    INSERT INTO identity_unlinks (user_id, provider) SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM d)
    ON CONFLICT (user_id, provider) DO UPDATE SET created_at = now()
)
SELECT subject FROM d`
		var (
			hasPassword bool
			err         error
		)
		if hasPassword, mfa, err = checkOwner(ctx, tx, id); err != nil {
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
		if !hasPassword {
			left, err := s.usableIdentities(ctx, tx, id.UserID)
			if err != nil {
				return err
			}
			if left == 0 {
				return errLastSignInMethod
			}
		}
		if err := auth.NoticeOwner(ctx, tx, id.UserID, mail.KindIdentityUnlinked, mail.Data{At: time.Now(), Provider: provider}); err != nil {
			return err
		}
		return audit.WriteForUser(ctx, tx, id.UserID, audit.Event{ActorUserID: id.UserID,
			Action: audit.ActionUserIdentityUnlinked, TargetType: audit.TargetUser, TargetID: id.UserID, RequestID: rid,
			Data: map[string]any{"provider": provider, "subjects": subjects}})
	})
	if err != nil {
		return ownerRefusal(c, err, mfa, "unlinking a sign-in provider")
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// usableIdentities counts userID's identities that can still sign in: of
// a configured provider (an unlisted one was retired: its callback is
// 404), linked through that provider's issuer or before issuers were
// recorded (identityUser refuses one of another issuer). Run in the
// unlink's transaction, with the account's row locked.
func (s *Service) usableIdentities(ctx context.Context, tx pgx.Tx, userID string) (int, error) {
	const q = `
SELECT count(*) FROM identities i
WHERE i.user_id = $1 AND EXISTS (
    SELECT 1 FROM unnest($2::text[], $3::text[]) AS p(name, issuer)
    WHERE p.name = i.provider AND (i.issuer IS NULL OR i.issuer = p.issuer))`
	var n int
	if err := tx.QueryRow(ctx, q, userID, s.signIns.names, s.signIns.issuers).Scan(&n); err != nil {
		return 0, fmt.Errorf("count usable identities: %w", err)
	}
	return n, nil
}

// signInProviders are the configured providers as pairs of parallel
// lists, a provider's name once for each spelling of its issuer
// (issuerSpellings): what an identity must match to sign in.
type signInProviders struct {
	names, issuers []string
}

func newSignInProviders(ps []config.OIDCProvider) signInProviders {
	var out signInProviders
	for _, p := range ps {
		for _, iss := range issuerSpellings(p.Issuer) {
			out.names = append(out.names, p.Name)
			out.issuers = append(out.issuers, iss)
		}
	}
	return out
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

// linkStart is the answer of POST /users/me/identities/{provider}.
type linkStart struct {
	// AuthorizeURL is where the owner's browser goes next, as a top-level
	// navigation: this flow's one-time link URL (openLink), which sets the
	// binding cookie and redirects to the provider.
	AuthorizeURL string `json:"authorize_url"`
}

// startLink starts linking a provider to the caller's account, as the
// owner asks: it stores a flow whose state names the account and the
// session (the callback hands a link code that only this session can
// confirm, confirmLink, which links to that account whatever address the
// provider gives) and answers a one-time URL for the owner's browser to
// open (openLink). It sets no cookie: an app on another site calls it
// with fetch, and the browser drops the cookies of that answer (a
// third-party one), so the binding cookie is set when the browser opens
// the URL, first-party. Until then the flow has no state, only the
// ticket's hash (ticketHash) in its place, and lives LinkTicketTTL.
// It needs what an unlink needs (checkOwner): a stolen token must not
// add a way in of its taker's. The body may name a return_to, checked as
// authorize's; no hand-over code is given and the link code is bound to
// this session, so no code_challenge is asked for.
func (s *Service) startLink(c *fiber.Ctx) error {
	p, err := s.lookup(c)
	if err != nil {
		return err
	}
	var req struct {
		ReturnTo string `json:"return_to"`
	}
	if len(c.Request().Body()) > 0 {
		if err := httpapi.DecodeJSON(c, &req); err != nil {
			return err
		}
	}
	if err := s.checkReturnTo(req.ReturnTo); err != nil {
		return err
	}
	id := httpapi.IdentityOf(c)
	ctx := c.UserContext()
	var mfa bool
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if _, mfa, err = checkOwner(ctx, tx, id); err != nil {
			return err
		}
		return ownersPassword(ctx, tx, id.UserID)
	})
	if err != nil {
		return ownerRefusal(c, err, mfa, "linking a sign-in provider")
	}
	if err := s.allowStart(c); err != nil {
		return err
	}
	oc, _, err := s.discoverFor(c, p)
	if err != nil {
		return err
	}
	ticket, err := random()
	if err != nil {
		return err
	}
	nonce, err := random()
	if err != nil {
		return err
	}
	to, err := linkURL(oc.RedirectURL, ticket)
	if err != nil {
		return err
	}
	// No browser is bound yet (browser_hash NULL): nothing consumes the
	// flow as a state before openLink gives it one.
	st := pendingState{StateHash: ticketHash(ticket), Provider: p.cfg.Name, Verifier: oauth2.GenerateVerifier(), Nonce: nonce,
		RedirectURI: oc.RedirectURL, TenantID: &id.TenantID, ReturnTo: req.ReturnTo, LinkUserID: &id.UserID, LinkSessionID: &id.SessionID}
	if err := s.save(c, st, LinkTicketTTL); err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(linkStart{AuthorizeURL: to})
}

// linkURL is a link's one-time URL: the provider's redirect URL (the
// public callback) with its last segment "link" and the ticket as its
// query. Beside the callback, on its host: the binding cookie it sets is
// that host's (__Host-), and must come back with the callback.
func linkURL(redirectURL, ticket string) (string, error) {
	base, err := url.Parse(redirectURL)
	if err != nil {
		return "", fmt.Errorf("redirect URL: %w", err)
	}
	return base.ResolveReference(&url.URL{Path: "link", RawQuery: "ticket=" + url.QueryEscape(ticket)}).String(), nil
}

// maxLinkParam bounds a link ticket and a link code as a request gives
// them: those this service hands out are 43 characters.
const maxLinkParam = 512

var errBadTicket = problem.New(fiber.StatusBadRequest, problem.CodeInvalidState,
	"unknown, already used or expired link ticket (it works once, within a minute); start the link again")

// openLink is GET /auth/oauth/{provider}/link?ticket=…, which the owner's
// browser opens as a top-level navigation (no bearer): the first opening
// of a ticket gives its flow a state and this browser's binding cookie,
// set first-party, and redirects to the provider; the ticket is then
// spent, so whoever else opens the URL gets nothing, and the flow
// finishes only in the browser that holds the cookie. A ticket lives
// LinkTicketTTL; the flow then lives StateTTL, as a sign-in's.
func (s *Service) openLink(c *fiber.Ctx) error {
	httpapi.PrivateHeaders(c) // the URL holds the ticket
	p, err := s.lookup(c)
	if err != nil {
		return err
	}
	var ticket string
	if err := httpapi.ReadForm(c.Context().QueryArgs(), []httpapi.FormField{{Name: "ticket", Dst: &ticket}}); err != nil {
		return err
	}
	switch {
	case ticket == "":
		return problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest, "ticket is required")
	case len(ticket) > maxLinkParam:
		return problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest, "ticket is too long (at most 512 characters): it is not one this service handed out")
	}
	// Before the ticket is spent: a provider that cannot be reached
	// leaves it for a retry.
	oc, _, err := s.discoverFor(c, p)
	if err != nil {
		return err
	}
	state, err := random()
	if err != nil {
		return err
	}
	browser, err := random()
	if err != nil {
		return err
	}
	f, err := claimTicket(c.UserContext(), s.pool, ticketHash(ticket), p.cfg.Name, hashState(state), linkBrowserHash(browser), StateTTL)
	if errors.Is(err, errNoState) {
		return errBadTicket
	} else if err != nil {
		return err
	}
	return c.Redirect(bindAndSend(c, oc, state, browser, f.Verifier, f.Nonce, nil, ""), fiber.StatusFound)
}

// LinkCode is a link's callback's JSON answer when no return_to is
// configured.
type LinkCode struct {
	LinkCode string `json:"link_code"`
}

// handLinkCode ends a link's callback: it stores the provider's verified
// identity v on the flow f under a new one-time link code's hash, for the
// session that started it and LinkCodeTTL, and hands the code to the
// browser (a 302 to return_to?link_code=…, or JSON without an allow-list).
// The browser may be anyone's who opened the start's URL first; the code
// links only when the starting session confirms it (confirmLink), and the
// starter, whose browser this was not, never sees it.
func (s *Service) handLinkCode(c *fiber.Ctx, p *provider, f flow, v verifiedLink) error {
	code, err := random()
	if err != nil {
		return err
	}
	if err := saveLinkCode(c.UserContext(), s.pool, linkCodeHash(code), p.cfg.Name, v,
		*f.LinkUserID, deref(f.LinkSessionID), f.TenantID, LinkCodeTTL); err != nil {
		return err
	}
	if f.ReturnTo == "" { // no allow-list (development)
		return c.JSON(LinkCode{LinkCode: code})
	}
	to, err := withParams(f.ReturnTo, []queryParam{{"link_code", code}, {"iss", s.issuer}})
	if err != nil {
		return err
	}
	return c.Redirect(to, fiber.StatusFound)
}

// Refusals of a link's confirmation.
var (
	errBadLinkCode = problem.New(fiber.StatusBadRequest, problem.CodeInvalidState,
		"unknown or already used link code, or one of a link another session started; start the link again")
	errExpiredLinkCode = problem.New(fiber.StatusBadRequest, problem.CodeExpiredState,
		"the link code is more than a minute old; start the link again")
	errIdentityInUse = problem.New(fiber.StatusConflict, problem.CodeIdentityInUse,
		"this account of the provider is linked to another account; sign in to that one and unlink it first")
	errLinkOtherSubject = problem.New(fiber.StatusConflict, problem.CodeOtherSubjectLinked,
		"another account of this provider is linked to the account; unlink it first")
	errLinkOtherIssuer = problem.New(fiber.StatusConflict, problem.CodeConflict,
		"this provider's account was linked through another issuer than the provider's current one; it cannot be linked until an operator removes the old link")
)

// confirmLink is POST /users/me/identities/{provider}/confirm
// {link_code}: the signed-in app confirms the link code its return_to got
// from a link's callback, with its bearer. The link is made only for the
// session that started the flow (the code of another session's flow, an
// unknown, used or expired one links nothing), and only if what the start
// needed still holds (linkOwned). It answers the linked identity.
func (s *Service) confirmLink(c *fiber.Ctx) error {
	p, err := s.lookup(c)
	if err != nil {
		return err
	}
	var req struct {
		LinkCode string `json:"link_code"`
	}
	if len(c.Request().Body()) > 0 {
		if err := httpapi.DecodeJSON(c, &req); err != nil {
			return err
		}
	}
	switch {
	case req.LinkCode == "":
		return problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest, "link_code is required: the code the link's callback handed to return_to")
	case len(req.LinkCode) > maxLinkParam:
		return problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest, "link_code is too long (at most 512 characters): it is not one the link's callback handed out")
	}
	id := httpapi.IdentityOf(c)
	li, mfa, err := s.linkOwned(c.UserContext(), id, p.cfg.Name, linkCodeHash(req.LinkCode), strings.Clone(httpapi.RequestIDOf(c)))
	if err != nil {
		return ownerRefusal(c, err, mfa, "linking a sign-in provider")
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(li)
}

// linkOwned links the provider identity that a link's callback stored
// under codeHash to the caller's account, in one transaction: the code
// must be one of a flow the caller's session started (takeLinkCode:
// errBadLinkCode, errExpiredLinkCode otherwise), and, under the account's
// row lock (as an unlink and a link by address take it), all the start
// needed must hold again (checkOwner: a sign-in within UnlinkMaxAge with
// the second factor for an account that has one, a session live in its
// tenant, an active account; ownersPassword). An identity linked to
// another account is not moved (errIdentityInUse), nor is a second
// subject of the provider added (errLinkOtherSubject). The link clears the
// provider's unlink (identity_unlinks, which stops only links by
// address), is audited and told to the owner; linking the identity
// already linked to the account changes nothing. A refusal leaves the
// code to its session (until it expires), for a retry after a step-up. It
// returns whether the account has an active factor, for ownerRefusal.
func (s *Service) linkOwned(ctx context.Context, id identity.Identity, provider string, codeHash []byte, rid string) (linkedIdentity, bool, error) {
	var (
		out linkedIdentity
		mfa bool
	)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		const qClear = `DELETE FROM identity_unlinks WHERE user_id = $1 AND provider = $2`
		// The code first: another session's is refused as unknown, whatever
		// that session's own standing.
		v, err := takeLinkCode(ctx, tx, codeHash, provider, id.UserID, id.SessionID, id.TenantID)
		switch {
		case errors.Is(err, errNoState):
			return errBadLinkCode
		case errors.Is(err, errStateExpired):
			return errExpiredLinkCode
		case err != nil:
			return err
		}
		if _, mfa, err = checkOwner(ctx, tx, id); err != nil {
			return err
		}
		if err := ownersPassword(ctx, tx, id.UserID); err != nil {
			return err
		}
		uid, err := identityUser(ctx, tx, provider, v.Issuer, v.Subject)
		switch {
		case errors.Is(err, errOtherIssuer):
			return errLinkOtherIssuer
		case err == nil && uid != id.UserID:
			return errIdentityInUse
		case err == nil:
			out, err = linkedRow(ctx, tx, id.UserID, provider, v.Subject)
			return err
		case !errors.Is(err, errNoRow):
			return err
		}
		other, self, err := linkedToIssuer(ctx, tx, id.UserID, provider, v.Issuer, v.Subject)
		switch {
		case err != nil:
			return err
		case other:
			return errLinkOtherSubject
		case self: // linked meanwhile by a sign-in of the same subject
			out, err = linkedRow(ctx, tx, id.UserID, provider, v.Subject)
			return err
		}
		if err := linkIdentity(ctx, tx, id.UserID, provider, v.Issuer, v.Subject, v.Email); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, qClear, id.UserID, provider); err != nil {
			return fmt.Errorf("clear unlinked provider: %w", err)
		}
		if err := audit.WriteForUser(ctx, tx, id.UserID, audit.Event{ActorUserID: id.UserID,
			Action: audit.ActionUserIdentityLinked, TargetType: audit.TargetUser, TargetID: id.UserID, RequestID: rid,
			Data: identityLinkedData(provider, v.Subject, "owner")}); err != nil {
			return err
		}
		if err := auth.NoticeOwner(ctx, tx, id.UserID, mail.KindIdentityLinked, mail.Data{At: time.Now(), Provider: provider}); err != nil {
			return err
		}
		out, err = linkedRow(ctx, tx, id.UserID, provider, v.Subject)
		return err
	})
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		// Linked to another account by a sign-in that committed first.
		return linkedIdentity{}, mfa, errIdentityInUse
	}
	return out, mfa, err
}

// Refusals of a link to an account whose password may not be its owner's
// alone.
var (
	errLinkUnproven = problem.New(fiber.StatusConflict, problem.CodeVerifyBeforeLinking,
		"the account's email address is not verified; verify it (or reset the password) before linking a sign-in provider")
	errLinkAdminPassword = problem.New(fiber.StatusConflict, problem.CodeAdminPasswordBeforeLinking,
		"the account's password was set by an administrator; reset it (forgot password) before linking a sign-in provider")
)

// ownersPassword refuses a link to an account whose signed-in holder may
// not be its owner, as a link by address does (userByEmail's callers):
// one whose address was never proven (whoever signed up with someone
// else's address holds its password; the reset by which the mailbox's
// owner takes it back ends what outlives a password, and a provider
// linked by the squatter would be one more) and one whose password a
// tenant admin chose (POST /users) and its owner has not reset since.
// Run with the account's row locked.
func ownersPassword(ctx context.Context, db sqldb.DB, userID string) error {
	const q = `
SELECT email_verified_at IS NOT NULL, password_hash IS NOT NULL AND password_set_by_admin
FROM users WHERE id = $1`
	var verified, adminPassword bool
	if err := db.QueryRow(ctx, q, userID).Scan(&verified, &adminPassword); err != nil {
		return fmt.Errorf("read account: %w", err)
	}
	switch {
	case !verified:
		return errLinkUnproven
	case adminPassword:
		return errLinkAdminPassword
	}
	return nil
}

// linkedRow is the identity of provider and subject linked to userID.
func linkedRow(ctx context.Context, db sqldb.DB, userID, provider, subject string) (linkedIdentity, error) {
	const q = `
SELECT provider, email, created_at AS linked_at FROM identities
WHERE user_id = $1 AND provider = $2 AND subject = $3`
	rows, err := db.Query(ctx, q, userID, provider, subject)
	if err != nil {
		return linkedIdentity{}, fmt.Errorf("read identity: %w", err)
	}
	li, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[linkedIdentity])
	if err != nil {
		return linkedIdentity{}, fmt.Errorf("read identity: %w", err)
	}
	return li, nil
}

// linkEmail is the provider's address as a link its owner asked for keeps
// it (GET /users/me/identities shows it): in mail.Canonical form, and
// only one this service accepts as an address and whose characters NFC
// keeps; "" otherwise. The link does not rest on it.
func linkEmail(raw string) string {
	e := mail.Canonical(raw)
	if e == "" || nfcReplaces(raw) || lowerRenamesDomain(raw) || !mail.ValidNewAddress(e) || len(e) > mail.MaxStoredAddress {
		return ""
	}
	return e
}

// deref is *p, or "" for nil.
func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
