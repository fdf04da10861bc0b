package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"
	"golang.org/x/oauth2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// HandoverTTL is how long the OAuth callback's hand-over code may wait for
// its exchange (grant_type=oauth_handover).
const HandoverTTL = 60 * time.Second

// handoverLen is the length of a code: 32 random bytes, base64url.
const handoverLen = 43

// HandoverUseTTL is how long an exchanged code is remembered (its hash,
// in oauth_handover_uses): presented again meanwhile, it ends the session
// it opened (RFC 6749 section 4.1.2). Past that it is an unknown code.
const HandoverUseTTL = 10 * time.Minute

var errBadHandover = problem.New(400, problem.CodeInvalidGrant, "unknown, used or expired hand-over code")

// errHandoverRedirect: the redirect_uri is not the return_to of the
// code's flow (or one is named for a flow that had none, or none for one
// that had).
var errHandoverRedirect = problem.New(400, problem.CodeInvalidGrant,
	"the redirect_uri is not the return_to of the sign-in that made this hand-over code")

// errHandoverVerifier: the code_verifier is not the one of the code's
// flow (or one is sent for a flow that had none, or none for one that had).
var errHandoverVerifier = problem.New(400, problem.CodeInvalidGrant,
	"the code_verifier does not match the code_challenge of the sign-in that made this hand-over code")

// errHandoverOtherTenant answers an exchange naming another tenant than
// the one the code's sign-in is in; the code is not spent.
var errHandoverOtherTenant = invalidRequest(
	"the hand-over code's sign-in is in another tenant (the one chosen when it started): leave tenant_id out, or start the sign-in with that tenant_id",
	problem.FieldError{Field: "tenant_id", Message: "not the tenant of the hand-over code's sign-in"})

// CreateHandover stores a one-time hand-over code for a session opened by
// an external sign-in and returns it. Tokens are never put in a page or a
// URL: the browser carries only this code back to the app, which exchanges
// it with grant_type=oauth_handover (one use, HandoverTTL). Only the
// code's SHA-256 is stored. challenge is the app's S256 code_challenge
// given at the start of the sign-in ("" for none): the exchange then
// needs its code_verifier (RFC 7636), so that only the app that started
// the flow can use the code. returnTo is the flow's return_to, where the
// browser takes the code ("" for none): the exchange must name it as
// redirect_uri (RFC 6749 section 4.1.3), so that a code of one listed
// app's sign-in is refused to another app. tenantRequested: the sign-in was started for
// the session's tenant (a second factor asked for at the exchange then
// binds the sign-in to it, as the password grant's does).
func (s *Service) CreateHandover(ctx context.Context, userID, sessionID, challenge, returnTo string, tenantRequested bool) (string, error) {
	const q = `
INSERT INTO oauth_handovers (code_hash, user_id, session_id, expires_at, code_challenge, tenant_requested, return_to)
VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5, $6, $7)`
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("read random: %w", err)
	}
	code := base64.RawURLEncoding.EncodeToString(b[:])
	if _, err := s.pool.Exec(ctx, q, handoverHash(code), userID, sessionID, HandoverTTL.Seconds(), challenge, tenantRequested, returnTo); err != nil {
		return "", fmt.Errorf("store hand-over code: %w", err)
	}
	return code, nil
}

func handoverHash(code string) []byte {
	h := sha256.Sum256([]byte(code))
	return h[:]
}

// handoverGrant exchanges a hand-over code for the tokens of its session:
// the code is consumed (DELETE … RETURNING) whatever happens next, the
// session must still be live (not revoked or expired, and stamped with the
// account's current token version: a password reset, a global sign-out or
// the member's removal from the tenant since the callback ended it), the
// account, the membership and the tenant must still be active (else the
// password grant's refusals: read again after the session's step, with
// the membership share-locked, so a change committed before the tokens'
// session was renewed is never answered with tokens), and the session
// gets a fresh refresh token (the one made at the callback was never
// shown to anyone). The liveness is checked before
// the second-factor hook, which must not turn an ended sign-in into an
// mfa_token. A code made for a flow with a code_challenge is exchanged
// only with its code_verifier, and one made without only without: a
// verifier tells that the app started a flow, so another flow's code
// (planted in its browser: login CSRF) is refused rather than signing the
// app into someone else's account. The exchange names the flow's
// return_to as redirect_uri (RFC 6749 section 4.1.3), byte for byte, and
// names none for a flow that had none: a code of one app's sign-in is
// refused to another app, whose verifier may match when whoever built the
// sign-in's link chose the challenge. The code is spent either way, and
// remembered (oauth_handover_uses, HandoverUseTTL): presented again, it is
// refused as any unknown code is and the session it opened ends
// (endReusedHandover), so whoever exchanged it first, a thief or the app,
// keeps nothing. A tenant_id the exchange names must be the tenant of the
// code's session: another is refused before the code is spent.
func (s *Service) handoverGrant(c *fiber.Ctx, req tokenRequest) (TokenResponse, error) {
	ctx := c.UserContext()
	const q = `
WITH h AS (
    DELETE FROM oauth_handovers WHERE code_hash = $1
        AND ($3 = '' OR EXISTS (SELECT 1 FROM sessions s WHERE s.id = oauth_handovers.session_id AND s.tenant_id::text = $3))
    RETURNING user_id, session_id, code_challenge, tenant_requested, return_to, expires_at > now() AS live
), used AS (
    INSERT INTO oauth_handover_uses (code_hash, session_id, expires_at)
    SELECT $1, session_id, now() + make_interval(secs => $2) FROM h
    ON CONFLICT (code_hash) DO NOTHING
)
SELECT h.user_id::text, h.session_id::text, h.code_challenge, h.tenant_requested, h.return_to, s.tenant_id::text, u.token_version,
       h.live AND s.revoked_at IS NULL AND s.expires_at > now()
           AND NOT coalesce(s.token_version < u.token_version, false),
       u.status = 'active', coalesce(m.status, '') = 'active' AND t.status = 'active',
       s.amr, floor(extract(epoch FROM s.auth_time))::bigint
FROM h JOIN sessions s ON s.id = h.session_id JOIN users u ON u.id = h.user_id
JOIN tenants t ON t.id = s.tenant_id
LEFT JOIN memberships m ON m.tenant_id = s.tenant_id AND m.user_id = h.user_id`
	// qKept: a code the exchange left because its sign-in is in another
	// tenant than the one named.
	const qKept = `SELECT EXISTS (SELECT 1 FROM oauth_handovers WHERE code_hash = $1 AND expires_at > now())`
	if req.Code == "" {
		return TokenResponse{}, invalidRequest("code is required", problem.FieldError{Field: "code", Message: "required"})
	}
	if len(req.Code) != handoverLen {
		return TokenResponse{}, errBadHandover
	}
	if _, err := base64.RawURLEncoding.DecodeString(req.Code); err != nil {
		return TokenResponse{}, errBadHandover
	}
	// The sign-in's tenant was chosen when it started (authorize's
	// tenant_id, else the oldest active membership); the exchange chooses
	// none. One named here must be it, and the code is spent only then:
	// answered with tokens of the sign-in's tenant, a client that asked
	// for another would act there unawares.
	named, err := req.namedTenant()
	if err != nil {
		return TokenResponse{}, err
	}
	var (
		g                             Grant
		challenge                     string
		returnTo                      *string
		requested, ok, active, member bool
	)
	hash := handoverHash(req.Code)
	err = s.pool.QueryRow(ctx, q, hash, HandoverUseTTL.Seconds(), named).Scan(&g.UserID, &g.SessionID, &challenge, &requested, &returnTo, &g.TenantID, &g.TokenVersion, &ok, &active, &member, &g.AMR, &g.AuthTime)
	if errors.Is(err, pgx.ErrNoRows) && named != "" {
		var kept bool
		if err := s.pool.QueryRow(ctx, qKept, hash).Scan(&kept); err != nil {
			return TokenResponse{}, fmt.Errorf("look up hand-over code: %w", err)
		}
		if kept {
			return TokenResponse{}, errHandoverOtherTenant
		}
	}
	if errors.Is(err, pgx.ErrNoRows) {
		if err := s.endReusedHandover(c, hash); err != nil {
			return TokenResponse{}, err
		}
		return TokenResponse{}, errBadHandover
	}
	if err == nil && !ok {
		return TokenResponse{}, errBadHandover
	}
	if err != nil {
		return TokenResponse{}, fmt.Errorf("consume hand-over code: %w", err)
	}
	// NULL: a code of a release that kept no return_to (during the
	// rollout; it lives HandoverTTL), not checked.
	if returnTo != nil && req.RedirectURI != *returnTo {
		return TokenResponse{}, errHandoverRedirect
	}
	// A malformed verifier is refused only now, with the code spent, as a
	// wrong one is (RFC 7636 section 4.6): refused before, it left the
	// code for another try.
	if (req.CodeVerifier != "" && !validVerifier(req.CodeVerifier)) || !verifierMatches(req.CodeVerifier, challenge) {
		return TokenResponse{}, errHandoverVerifier
	}
	if err := refuseInactive(g.TenantID, active, member); err != nil {
		return TokenResponse{}, err
	}
	// Named at the exchange, if not when the sign-in started, the tenant
	// binds a second factor's sign-in to it, as the password grant's
	// tenant_id does: a tenant left meanwhile is refused, not traded for
	// the next one.
	if named != "" {
		requested = true
	}
	// A user with a second factor gives it here too: the external
	// sign-in stands for the password, and the session it opened is
	// replaced by the one the mfa_otp grant creates.
	if err := s.externalSecondFactor(ctx, g, requested); err != nil {
		return TokenResponse{}, err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The membership first, share-locked until the tokens' session is
		// renewed, as sessions.Store.Create holds it (a removal locks it,
		// then the sessions); then the statuses again, in a statement
		// after the reissue: a member disabled, an account disabled or a
		// tenant suspended since the code was consumed is seen, or comes
		// after the renewed session.
		if _, err := tx.Exec(ctx, qHoldMembership, g.UserID, g.TenantID); err != nil {
			return fmt.Errorf("hold membership: %w", err)
		}
		var err error
		if g.RefreshToken, g.SessionEnds, err = s.sessions.Reissue(ctx, tx, g.UserID, g.SessionID); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, qStanding, g.UserID, g.TenantID).Scan(&active, &member); err != nil {
			return fmt.Errorf("read standing: %w", err)
		}
		return refuseInactive(g.TenantID, active, member)
	})
	if errors.Is(err, sessions.ErrNotFound) { // signed out in between
		return TokenResponse{}, errBadHandover
	}
	if err != nil {
		return TokenResponse{}, err
	}
	return s.Issue(ctx, g, func() error { return errBadHandover }) // signed out since the reissue
}

// endReusedHandover ends the session a code opened when the code was
// exchanged before (an unknown code of handoverGrant found in
// oauth_handover_uses): the session's tokens stop working, whoever got
// them, audited in its tenant with the request and its client IP and
// announced to the proxies (sessions.RevokeForHandoverReuse). A code never
// exchanged, or exchanged longer ago than HandoverUseTTL, ends nothing.
func (s *Service) endReusedHandover(c *fiber.Ctx, hash []byte) error {
	const q = `
SELECT s.id::text, s.user_id::text, s.tenant_id::text
FROM oauth_handover_uses u JOIN sessions s ON s.id = u.session_id
WHERE u.code_hash = $1 AND u.expires_at > now() AND s.revoked_at IS NULL`
	ctx := c.UserContext()
	var sid, uid, tid string
	err := s.pool.QueryRow(ctx, q, hash).Scan(&sid, &uid, &tid)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find exchanged hand-over code: %w", err)
	}
	by := sessions.Presenter{RequestID: strings.Clone(httpapi.RequestIDOf(c)), IP: httpapi.ClientIP(c)}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return sessions.RevokeForHandoverReuse(ctx, tx, sid, uid, tid, by)
	})
}

// qHoldMembership and qStanding: see handoverGrant's reissue.
const (
	qHoldMembership = `SELECT 1 FROM memberships WHERE user_id = $1 AND tenant_id = $2 FOR SHARE`
	qStanding       = `
SELECT u.status = 'active', coalesce(m.status = 'active' AND t.status = 'active', false)
FROM users u JOIN tenants t ON t.id = $2
LEFT JOIN memberships m ON m.user_id = u.id AND m.tenant_id = t.id
WHERE u.id = $1`
)

// refuseInactive answers a hand-over whose account (active), membership
// or tenant (member) is no longer active as a sign-in is answered then:
// a disabled account is its sign-in's answer; a member disabled in the
// tenant, or the tenant suspended, the password grant's refusal of a
// sign-in naming the tenant (a removal ended the session:
// errBadHandover).
func refuseInactive(tenantID string, active, member bool) error {
	if !active {
		return errAccountDisabled
	}
	if !member {
		return problem.New(403, problem.CodeForbidden, "no active membership in tenant "+tenantID)
	}
	return nil
}

// validVerifier reports whether v is a code_verifier as RFC 7636 section
// 4.1 spells it: 43 to 128 characters of [A-Za-z0-9-._~].
func validVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

// verifierMatches reports whether verifier answers challenge (S256, RFC
// 7636 section 4.6); with no challenge, only no verifier does.
func verifierMatches(verifier, challenge string) bool {
	if challenge == "" || verifier == "" {
		return challenge == "" && verifier == ""
	}
	return subtle.ConstantTimeCompare([]byte(oauth2.S256ChallengeFromVerifier(verifier)), []byte(challenge)) == 1
}

// SweepHandovers deletes expired hand-over codes, and the exchanged
// codes remembered past HandoverUseTTL. It skips the codes
// another transaction holds: the sweep of ended sessions (sessions.Store.
// Sweep) deletes them by session, through its cascade, and a sweep
// deleting them by expiry could hold one while waiting for another the
// sessions sweep held (a deadlock PostgreSQL ended by failing one of
// them). A code skipped is taken next time. It deletes in batches
// (sweep.InBatches).
func (s *Service) SweepHandovers(ctx context.Context) (int64, error) {
	const q = `
DELETE FROM oauth_handovers WHERE code_hash IN (
    SELECT code_hash FROM oauth_handovers WHERE expires_at < now()
    LIMIT $1
    FOR UPDATE SKIP LOCKED)`
	const qUses = `
DELETE FROM oauth_handover_uses WHERE code_hash IN (
    SELECT code_hash FROM oauth_handover_uses WHERE expires_at < now()
    LIMIT $1
    FOR UPDATE SKIP LOCKED)`
	n, err := sweep.InBatches(ctx, s.pool, q)
	if err != nil {
		return n, fmt.Errorf("sweep hand-over codes: %w", err)
	}
	u, err := sweep.InBatches(ctx, s.pool, qUses)
	if err != nil {
		return n + u, fmt.Errorf("sweep exchanged hand-over codes: %w", err)
	}
	return n + u, nil
}
