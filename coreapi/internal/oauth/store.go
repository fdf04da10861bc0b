package oauth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/text/unicode/norm"

	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sqldb"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
)

// The store's errors; the handlers answer them with problems.
var (
	// errUnknownTenant: a sign-in started for a tenant that does not exist.
	errUnknownTenant = errors.New("unknown tenant")
	// errStatesFull: MaxPendingStates flows are pending already.
	errStatesFull = errors.New("too many pending sign-ins")
	// errNoState: no such state (unknown, used, or another browser's).
	errNoState = errors.New("unknown or used state")
	// errStateExpired: the state was found (and deleted) too late.
	errStateExpired = errors.New("expired state")
	// errNoRow: a lookup found nothing.
	errNoRow = errors.New("not found")
	// errOtherAddress: the account found by lower(email) has another
	// address (one that lower() folds onto the same string, in NFC).
	errOtherAddress = errors.New("an account has an address that lower() confuses with this one")
	// errOtherIssuer: the provider's subject is linked, but was linked
	// through another issuer than the provider's current one.
	errOtherIssuer = errors.New("identity linked through another issuer")
)

// pendingState is a started sign-in, stored until its callback.
type pendingState struct {
	StateHash, BrowserHash                           []byte
	Provider, Verifier, Nonce, RedirectURI, ReturnTo string
	// AppChallenge is the app's S256 code_challenge for the hand-over
	// code ("" when none).
	AppChallenge string
	TenantID     *string
	// MaxAge is the max_age asked of the provider (nil: none).
	MaxAge *int
	// AppState is the app's own state (checkAppState; "" for none),
	// stored in return_to's column after it (storedReturnTo).
	AppState string
	// LinkUserID and LinkSessionID: the flow links the provider to this
	// account, which this session of it asked for (POST
	// /users/me/identities/{provider}); nil for a sign-in. Such a flow is
	// stored with its ticket's hash as StateHash and no BrowserHash (nil)
	// until its ticket is opened (claimTicket), then with a state's hash
	// and linkBrowserHash's; its callback replaces it with the verified
	// result under the link code's hash (saveLinkCode).
	LinkUserID, LinkSessionID *string
}

// saveState stores a started sign-in while fewer than max flows are
// pending, so the table stays bounded whatever the number of clients.
func saveState(ctx context.Context, db sqldb.DB, st pendingState, ttl time.Duration, max int) error {
	const q = `
INSERT INTO oauth_states (state_hash, provider, code_verifier, nonce, redirect_uri, tenant_id, expires_at,
                          return_to, browser_hash, app_challenge, max_age, link_user_id, link_session_id)
SELECT $1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7), $8, $9, $11, $12, $13, $14
WHERE (SELECT count(*) FROM (SELECT 1 FROM oauth_states WHERE expires_at > now() LIMIT $10) live) < $10`
	tag, err := db.Exec(ctx, q, st.StateHash, st.Provider, st.Verifier, st.Nonce,
		st.RedirectURI, st.TenantID, ttl.Seconds(), storedReturnTo(st.ReturnTo, st.AppState), st.BrowserHash, max, st.AppChallenge, st.MaxAge,
		st.LinkUserID, st.LinkSessionID)
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23503" { // tenant does not exist
			return errUnknownTenant
		}
		return fmt.Errorf("store oauth state: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return errStatesFull
	}
	return nil
}

// consumeState deletes the state row and returns it: a state works once,
// and only in the browser that holds its binding cookie (another browser's
// cookie leaves the row alone). browser is the cookie's value: a sign-in's
// row holds hashState of it, a link's linkBrowserHash of it, so neither
// kind is consumed as the other, and a release that knows no links
// (comparing hashState only) finds none.
func consumeState(ctx context.Context, db sqldb.DB, stateHash []byte, provider, browser string) (flow, error) {
	const q = `
DELETE FROM oauth_states WHERE state_hash = $1 AND provider = $2
    AND ((link_user_id IS NULL AND browser_hash = $3) OR (link_user_id IS NOT NULL AND browser_hash = $4))
RETURNING code_verifier, nonce, redirect_uri, return_to, app_challenge, tenant_id::text, max_age, expires_at > now(),
          link_user_id::text, link_session_id::text`
	var f flow
	err := db.QueryRow(ctx, q, stateHash, provider, hashState(browser), linkBrowserHash(browser)).Scan(
		&f.Verifier, &f.Nonce, &f.RedirectURI, &f.ReturnTo, &f.AppChallenge, &f.TenantID, &f.MaxAge, &f.Live,
		&f.LinkUserID, &f.LinkSessionID)
	if errors.Is(err, pgx.ErrNoRows) {
		return flow{}, errNoState
	}
	if err != nil {
		return flow{}, fmt.Errorf("consume oauth state: %w", err)
	}
	if !f.Live {
		return flow{}, errStateExpired
	}
	f.ReturnTo, f.AppState = splitReturnTo(f.ReturnTo)
	return f, nil
}

// storedReturnTo is what oauth_states.return_to holds of a flow's
// return_to and the app's state: the return_to, and after a line feed the
// state when there is one. Neither holds a line feed (a return_to is a
// URL, which holds no control character; a state is printable ASCII), so
// the two split again at the first one (splitReturnTo). A release that
// reads the column as one URL finds no listed return_to in it and refuses
// the callback (return_to_not_allowed) rather than drop the state.
func storedReturnTo(returnTo, appState string) string {
	if appState == "" {
		return returnTo
	}
	return returnTo + "\n" + appState
}

// splitReturnTo is storedReturnTo the other way.
func splitReturnTo(stored string) (returnTo, appState string) {
	returnTo, appState, _ = strings.Cut(stored, "\n")
	return returnTo, appState
}

// claimTicket gives the link flow whose ticket hashes to ticketHash (a
// ticket of provider, opened within its life) the state stateHash and the
// binding browserHash (linkBrowserHash's), to live ttl from now, and
// returns its verifier and nonce. The ticket is spent: its hash is no
// longer the row's, so of two openings the second, which waits for the
// first's row lock, finds no row (errNoState), as does an unknown or
// expired ticket.
func claimTicket(ctx context.Context, db sqldb.DB, ticketHash []byte, provider string, stateHash, browserHash []byte, ttl time.Duration) (flow, error) {
	const q = `
UPDATE oauth_states SET state_hash = $3, browser_hash = $4, expires_at = now() + make_interval(secs => $5)
WHERE state_hash = $1 AND provider = $2 AND link_user_id IS NOT NULL AND browser_hash IS NULL AND expires_at > now()
RETURNING code_verifier, nonce`
	var f flow
	err := db.QueryRow(ctx, q, ticketHash, provider, stateHash, browserHash, ttl.Seconds()).Scan(&f.Verifier, &f.Nonce)
	if errors.Is(err, pgx.ErrNoRows) {
		return flow{}, errNoState
	}
	if err != nil {
		return flow{}, fmt.Errorf("open link ticket: %w", err)
	}
	return f, nil
}

// verifiedLink is what a link's callback verified: the provider's
// identity (its configured issuer and the ID token's subject) and the
// address it gave (linkEmail's, "" for none), kept on the flow until the
// session that started it confirms the link (takeLinkCode).
type verifiedLink struct {
	Issuer, Subject, Email string
}

// saveLinkCode stores the verified result of a link's callback under
// codeHash (linkCodeHash of the link code), for the account, session and
// tenant of the flow, to live ttl. It replaces the flow's state, which
// the callback consumed, one for one, so the bound of pending flows is
// not counted again. The row has no binding (browser_hash NULL) and a
// hash under another prefix than a state's or a ticket's, so neither a
// callback nor an opening consumes it; its state's columns hold the
// result: code_verifier the subject, nonce the issuer, redirect_uri the
// address.
func saveLinkCode(ctx context.Context, db sqldb.DB, codeHash []byte, provider string, v verifiedLink,
	userID, sessionID string, tenantID *string, ttl time.Duration) error {
	const q = `
INSERT INTO oauth_states (state_hash, provider, code_verifier, nonce, redirect_uri, tenant_id, expires_at,
                          link_user_id, link_session_id)
VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7), $8, $9)`
	if _, err := db.Exec(ctx, q, codeHash, provider, v.Subject, v.Issuer, v.Email, tenantID, ttl.Seconds(), userID, sessionID); err != nil {
		return fmt.Errorf("store link code: %w", err)
	}
	return nil
}

// takeLinkCode deletes and returns the verified link stored under
// codeHash for provider, only for the session that started its flow
// (userID, sessionID, in tenantID): another session's bearer, or an
// unknown or used code, finds nothing (errNoState); one found too late
// is errStateExpired. Run in the link's transaction: a link refused
// after it rolls back and leaves the code to its session.
func takeLinkCode(ctx context.Context, db sqldb.DB, codeHash []byte, provider, userID, sessionID, tenantID string) (verifiedLink, error) {
	const q = `
DELETE FROM oauth_states
WHERE state_hash = $1 AND provider = $2 AND browser_hash IS NULL
  AND link_user_id = $3 AND link_session_id = $4 AND tenant_id = $5
RETURNING nonce, code_verifier, redirect_uri, expires_at > now()`
	var (
		v    verifiedLink
		live bool
	)
	err := db.QueryRow(ctx, q, codeHash, provider, userID, sessionID, tenantID).Scan(&v.Issuer, &v.Subject, &v.Email, &live)
	if errors.Is(err, pgx.ErrNoRows) {
		return verifiedLink{}, errNoState
	}
	if err != nil {
		return verifiedLink{}, fmt.Errorf("take link code: %w", err)
	}
	if !live {
		return verifiedLink{}, errStateExpired
	}
	return v, nil
}

// sweepStates deletes expired states, in batches (sweep.InBatches),
// skipping those a sign-in's callback holds as it consumes them.
func sweepStates(ctx context.Context, db sqldb.DB) (int64, error) {
	const q = `
DELETE FROM oauth_states WHERE state_hash IN (
    SELECT state_hash FROM oauth_states WHERE expires_at < now()
    LIMIT $1
    FOR UPDATE SKIP LOCKED)`
	n, err := sweep.InBatches(ctx, db, q)
	if err != nil {
		return n, fmt.Errorf("sweep oauth states: %w", err)
	}
	return n, nil
}

// identityUser returns the user a provider identity (the provider's
// issuer and subject) is linked to; errNoRow when it is linked to none,
// errOtherIssuer when the provider's subject was linked through another
// issuer: a subject is unique only within its issuer (OpenID Connect Core
// 5.7), so the same string from the provider's new issuer is not that
// account's owner (one recorded in another spelling of the same issuer,
// issuerSpellings, is not another). An identity linked before issuers
// were recorded (NULL) takes the issuer of its first sign-in.
func identityUser(ctx context.Context, db sqldb.DB, provider, issuer, subject string) (string, error) {
	const q = `SELECT user_id::text, issuer FROM identities WHERE provider = $1 AND subject = $2`
	// Under the row's lock: of two first sign-ins through two issuers,
	// the second sees the first's.
	const qRecord = `
UPDATE identities SET issuer = coalesce(issuer, $3) WHERE provider = $1 AND subject = $2
RETURNING issuer = ANY($4)`
	var (
		uid    string
		linked *string
	)
	err := db.QueryRow(ctx, q, provider, subject).Scan(&uid, &linked)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", errNoRow
	}
	if err != nil {
		return "", fmt.Errorf("find identity: %w", err)
	}
	switch {
	case linked == nil:
		var same bool
		if err := db.QueryRow(ctx, qRecord, provider, subject, issuer, issuerSpellings(issuer)).Scan(&same); err != nil {
			return "", fmt.Errorf("record identity issuer: %w", err)
		}
		if !same {
			return "", errOtherIssuer
		}
	case !slices.Contains(issuerSpellings(issuer), *linked):
		return "", errOtherIssuer
	}
	return uid, nil
}

// Google's issuer, and the spelling without its scheme that its ID tokens
// carry at times, which go-oidc takes from that issuer only.
const (
	googleIssuer         = "https://accounts.google.com"
	googleIssuerNoScheme = "accounts.google.com"
)

// issuerSpellings are the values an identity's recorded issuer may have
// for a provider whose issuer is issuer: issuer itself, and for Google's
// also the spelling without the scheme, which a sign-in recorded as the
// token's iss before the provider's issuer was recorded in its place.
func issuerSpellings(issuer string) []string {
	if issuer == googleIssuer {
		return []string{googleIssuer, googleIssuerNoScheme}
	}
	return []string{issuer}
}

// userByEmail returns the account of an address (in mail.Canonical form,
// any letter case), whether its address is verified and whether its
// password is one a tenant admin chose (POST /users) and its owner has
// not changed since; errNoRow for none.
// PostgreSQL's lower() also folds non-ASCII letters ("É" to "é"): an
// account whose stored address, in NFC, differs from email in more than
// ASCII letter case is another address's, and is errOtherAddress.
// The account's row stays share-locked until the transaction ends: a
// second factor is confirmed only under that row's lock (the auth
// package's activateTOTP), so none becomes active while a link to the
// account is being checked and made (see hasSecondFactor).
func userByEmail(ctx context.Context, db sqldb.DB, email string) (uid string, verified, adminPassword bool, err error) {
	const q = `
SELECT id::text, email, email_verified_at IS NOT NULL, password_hash IS NOT NULL AND password_set_by_admin
FROM users WHERE lower(email) = lower($1)
FOR SHARE`
	var stored string
	err = db.QueryRow(ctx, q, email).Scan(&uid, &stored, &verified, &adminPassword)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, false, errNoRow
	}
	if err != nil {
		return "", false, false, fmt.Errorf("find user by email: %w", err)
	}
	if !equalASCIIFold(mail.Canonical(stored), email) {
		return "", false, false, errOtherAddress
	}
	return uid, verified, adminPassword, nil
}

// hasSecondFactor reports whether the user has an active second factor
// (one still being enrolled is none). Run after userByEmail locked the
// user's row, in the link's transaction: a confirmation of a factor
// (which locks that row before activating it) either committed before,
// and is seen here, or waits until the link is made or refused. So no
// link lands on an account once its factor is active; one made first
// stays, as any link made before a factor, and every sign-in through it
// asks for the factor.
func hasSecondFactor(ctx context.Context, db sqldb.DB, userID string) (bool, error) {
	return auth.HasActiveFactor(ctx, db, userID)
}

// linkedToIssuer reports whether the user is linked to another subject
// of the provider than subject under issuer (or under no recorded
// issuer: one linked before issuers were recorded takes the issuer of its
// first sign-in), and whether subject itself is linked to it. It first
// takes a transaction-scoped lock of the user and provider, so that of two
// sign-ins linking to the same account at once, the second sees the
// first's link: another subject's, which it must not add to, or its own
// subject's (two tabs, a double click), which it signs in through.
func linkedToIssuer(ctx context.Context, db sqldb.DB, userID, provider, issuer, subject string) (other, self bool, err error) {
	const qLock = `SELECT pg_advisory_xact_lock(hashtextextended('identities:' || $1 || ':' || $2, 0))`
	const q = `
SELECT coalesce(bool_or(subject <> $4), false), coalesce(bool_or(subject = $4), false)
FROM identities
WHERE user_id = $1 AND provider = $2 AND (issuer IS NULL OR issuer = ANY($3))`
	if _, err := db.Exec(ctx, qLock, userID, provider); err != nil {
		return false, false, fmt.Errorf("lock identities of user: %w", err)
	}
	if err := db.QueryRow(ctx, q, userID, provider, issuerSpellings(issuer), subject).Scan(&other, &self); err != nil {
		return false, false, fmt.Errorf("find identities of user: %w", err)
	}
	return other, self, nil
}

// nfcReplaces reports whether NFC replaces a character of s outright
// rather than composing it with its neighbours: one that never occurs in
// NFC text, such as KELVIN SIGN U+212A (NFC "K"), OHM SIGN U+2126 or a CJK
// compatibility ideograph. "e" followed by U+0301 only composes (to
// U+00E9): the same letters spelled another way. A look-alike character
// is another mailbox than its replacement.
func nfcReplaces(s string) bool {
	var buf [utf8.UTFMax]byte
	for _, r := range s {
		if !norm.NFC.IsNormal(buf[:utf8.EncodeRune(buf[:], r)]) {
			return true
		}
	}
	return false
}

// lowerRenamesDomain reports whether the domain of s, in lower case, is
// another domain than its canonical form (mail.Canonical): IDNA's mapping
// takes U+1E9E (capital sharp s) to "ss", while its lower case, which
// lower() and a provider that lowers addresses give it, is "ß", and
// "straße.example" (xn--strae-oqa) is not "strasse.example". The provider
// vouched for a mailbox at the former.
func lowerRenamesDomain(s string) bool {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return false
	}
	local, domain := s[:at+1], s[at+1:]
	return !equalASCIIFold(mail.Canonical(local+domain), mail.Canonical(local+strings.ToLower(domain)))
}

// equalASCIIFold reports whether a and b are equal up to the case of ASCII
// letters (unlike strings.EqualFold, which folds KELVIN SIGN onto "k").
func equalASCIIFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// linkIdentity links a provider identity (issuer and subject) to a user.
func linkIdentity(ctx context.Context, db sqldb.DB, userID, provider, issuer, subject, email string) error {
	const q = `INSERT INTO identities (user_id, provider, issuer, subject, email) VALUES ($1, $2, $3, $4, NULLIF($5, ''))`
	if _, err := db.Exec(ctx, q, userID, provider, issuer, subject, email); err != nil {
		return fmt.Errorf("link identity: %w", err)
	}
	return nil
}

// identityLinkedData is the data of a user.identity_linked audit event:
// the provider and its subject, and how the link was made (by "owner"
// through POST /users/me/identities/{provider}; empty: by the account's
// address at a sign-in). Never the address the provider gave: the event
// is written in every tenant of the account, and a provider account
// linked by its owner may have an address of its own that the tenants'
// admins have no business reading (the owner sees it on
// GET /users/me/identities).
func identityLinkedData(provider, subject, by string) map[string]string {
	d := map[string]string{"provider": provider, "subject": subject}
	if by != "" {
		d["by"] = by
	}
	return d
}

// signInTenant picks the tenant a sign-in lands in: the oldest active
// membership in an active tenant (tenantID's, when not nil). It returns
// the tenant (nil for none), the user's status and token version, the
// status whatever the memberships: a disabled account is refused as such
// before its memberships are looked at, as the password grant does.
// errNoRow: the account no longer exists (deleted since the caller found
// it).
func signInTenant(ctx context.Context, db sqldb.DB, userID string, tenantID *string) (tid *string, status string, tv int64, err error) {
	const q = `
SELECT (SELECT m.tenant_id::text FROM memberships m JOIN tenants t ON t.id = m.tenant_id
        WHERE m.user_id = u.id AND m.status = 'active' AND t.status = 'active'
          AND ($2::uuid IS NULL OR m.tenant_id = $2::uuid)
        ORDER BY m.created_at, m.tenant_id LIMIT 1),
       u.status, u.token_version
FROM users u
WHERE u.id = $1`
	err = db.QueryRow(ctx, q, userID, tenantID).Scan(&tid, &status, &tv)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, "", 0, errNoRow
	}
	if err != nil {
		return nil, "", 0, fmt.Errorf("pick tenant: %w", err)
	}
	return tid, status, tv, nil
}
