// Package sessions stores sign-in sessions and their refresh tokens.
//
// A refresh token is 32 random bytes, base64url-encoded; only its SHA-256
// is stored. Each use rotates it: one conditional UPDATE (… WHERE
// replaced_by IS NULL) decides which request wins, and the successor's
// value is derived from the presented token and the successor's row id
// (HMAC-SHA256 keyed by the presented token), so requests that lose the race
// inside the grace window get the very same successor without any plaintext
// being stored, as long as the chain that follows it still ends in a live
// token (a reissue ends the chain, however long it has grown since).
// Presenting an already-rotated token after the grace window is treated
// as theft: the whole session is revoked. A request that read the token
// live and lost the race presented no rotated token: outside the grace it
// is refused as expired, never taken for reuse. A token ended by a reissue (a
// tenant switch, a step-up, a password change keeping the session) counts
// as rotated at the reissue: within the grace window it is only expired,
// after it reuse.
package sessions

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sqldb"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
	"github.com/tollgate-auth/tollgate/shared/clip"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// Errors returned by Rotate. All mean "this refresh token is no good"; they
// are distinct for logs and tests, not for clients.
var (
	ErrInvalidToken = errors.New("refresh token is malformed or unknown")
	ErrExpired      = errors.New("refresh token expired")
	ErrRevoked      = errors.New("session revoked")
	ErrReused       = errors.New("refresh token reused after rotation; session revoked")
	ErrInactive     = errors.New("user, membership or tenant is not active")
	// ErrOtherTenant: RotateIn was asked for another tenant than the one
	// the token's session is signed in to; the token is left as it was.
	ErrOtherTenant = errors.New("the refresh token's session is signed in to another tenant")
	ErrNotFound    = errors.New("session not found")
	// ErrNoMembership: Create or CreateAt found no active membership of
	// the user in the tenant, or the tenant is not active (the user was
	// removed or disabled there, or the tenant suspended, since the caller
	// checked it).
	ErrNoMembership = errors.New("no active membership of the user in an active tenant")
	// ErrAccountDisabled: Create or CreateAt found the user's account not
	// active (disabled since the caller checked it).
	ErrAccountDisabled = errors.New("the account is not active")
)

// Revocation reasons stored in sessions.revoked_reason.
const (
	ReasonLogout         = "logout"
	ReasonLogoutGlobal   = "logout_global"
	ReasonRevoked        = "revoked_by_user"
	ReasonPasswordChange = "password_changed"
	ReasonReuse          = "refresh_token_reuse"
	ReasonMFAReset       = "mfa_reset"
	ReasonMFAPending     = "replaced_after_second_factor"
	ReasonMemberRemoved  = "member_removed"
	ReasonMFAEnabled     = "mfa_enabled"
	// ReasonHandoverReuse: an OAuth hand-over code that opened the
	// session was presented again after its exchange.
	ReasonHandoverReuse = "handover_code_reuse"
)

const tokenBytes = 32

// DB is what the store needs for single statements: a pool or a transaction.
type DB = sqldb.DB

// Store is the sessions and refresh-token store.
type Store struct {
	pool  *pgxpool.Pool
	ttl   time.Duration // refresh token (and idle session) lifetime
	grace time.Duration // concurrent-refresh window
	// maxAge is the session's absolute lifetime, from its creation: no
	// refresh or reissue takes it further (0: none).
	maxAge time.Duration
}

// SetMaxAge bounds every session's lifetime from its creation
// (SESSION_MAX_AGE; 0: no bound). Without it, each refresh moved a
// session's end REFRESH_TOKEN_TTL on, so a refresh token taken from an
// owner who stopped using it kept the session for ever: reuse detection
// fires only when the owner refreshes again. Set before use.
func (s *Store) SetMaxAge(d time.Duration) { s.maxAge = d }

// maxAgeSecs is maxAge for the queries: with no bound, one no session
// reaches.
func (s *Store) maxAgeSecs() float64 {
	if s.maxAge <= 0 {
		return 1e10
	}
	return s.maxAge.Seconds()
}

// New returns a Store. ttl is the refresh-token lifetime, grace the window in
// which an already-rotated token still yields its successor.
func New(pool *pgxpool.Pool, ttl, grace time.Duration) *Store {
	return &Store{pool: pool, ttl: ttl, grace: grace}
}

// Session is one stored session.
type Session struct {
	ID            string     `db:"id"`
	UserID        string     `db:"user_id"`
	TenantID      string     `db:"tenant_id"`
	UserAgent     string     `db:"user_agent"`
	IP            string     `db:"ip"`
	CreatedAt     time.Time  `db:"created_at"`
	LastUsedAt    time.Time  `db:"last_used_at"`
	ExpiresAt     time.Time  `db:"expires_at"`
	RevokedAt     *time.Time `db:"revoked_at"`
	RevokedReason *string    `db:"revoked_reason"`
}

// Issued names a session and a refresh token for it.
type Issued struct {
	SessionID    string
	RefreshToken string
	// AuthTime is the session's auth_time (unix seconds), as a refresh of
	// it reads it: the access token issued with the session names the
	// same time, not the clock of the process that signs it, which may be
	// a second past the database's at a second's turn.
	AuthTime int64
}

// newToken returns a fresh random token and its stored hash.
func newToken() (string, []byte, error) {
	var raw [tokenBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", nil, fmt.Errorf("read random: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(raw[:])
	return tok, Hash(tok), nil
}

// Hash is the stored form of a token.
func Hash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// decode checks a presented token's shape before any database work.
func decode(token string) ([]byte, bool) {
	if len(token) != base64.RawURLEncoding.EncodedLen(tokenBytes) {
		return nil, false
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(raw) != tokenBytes {
		return nil, false
	}
	return raw, true
}

// successor derives the token that replaces parent in the row successorID.
// Only someone holding parent AND knowing the (never exposed) row id can
// compute it.
func successor(parentRaw []byte, successorID uuid.UUID) string {
	m := hmac.New(sha256.New, parentRaw)
	m.Write([]byte("tollgate refresh successor v1"))
	m.Write(successorID[:])
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func secs(d time.Duration) float64 { return d.Seconds() }

// Create inserts a session of userID bound to tenantID with its first
// refresh token, through q (usually the caller's transaction), in one
// round trip. The session is stamped with the user's current token
// version. The user's membership in the tenant is share-locked until q's
// transaction ends, so that a removal from the tenant (which locks it to
// delete it) either finds the new session and ends it, or ends first and
// leaves nothing to create: ErrNoMembership. A session bound to a tenant
// the user has left would refresh again once the user is added back.
//
// Only what a sign-in admits gets a session: an active account
// (else ErrAccountDisabled) with an active membership in an active
// tenant (else ErrNoMembership). The membership's status is read under
// its lock, so a member disabled since the caller's check is seen; the
// account's and the tenant's as the statement starts: disabling either
// ends no session, so a change committed after that is one the new
// session precedes, as any earlier sign-in's does. Without it, a sign-in
// racing such a change answered tokens the proxy and the refresh refuse,
// where one just after the change is refused.
func (s *Store) Create(ctx context.Context, q DB, userID, tenantID, userAgent, ip string) (Issued, error) {
	return s.create(ctx, q, userID, tenantID, userAgent, ip, nil, nil, nil)
}

// CreateWithAMR is Create for a sign-in by other methods than a password
// (amr, RFC 8176 values: ["fed"] for an OIDC provider's); Create records
// ["pwd"].
func (s *Store) CreateWithAMR(ctx context.Context, q DB, userID, tenantID, userAgent, ip string, amr []string) (Issued, error) {
	return s.create(ctx, q, userID, tenantID, userAgent, ip, nil, amr, nil)
}

// CreateAuthenticatedAt is CreateWithAMR for an authentication that took
// place at (the session's auth_time) rather than now: an OIDC provider's
// sign-in vouches for the user with a session of its own, opened when the
// provider last authenticated them (the ID token's auth_time).
func (s *Store) CreateAuthenticatedAt(ctx context.Context, q DB, userID, tenantID, userAgent, ip string, amr []string, at time.Time) (Issued, error) {
	return s.create(ctx, q, userID, tenantID, userAgent, ip, nil, amr, &at)
}

// CreateAt is Create for a sign-in that checked credentials against token
// version tv: if the version moved on meanwhile (a password reset raced
// the sign-in), the session cannot be refreshed.
func (s *Store) CreateAt(ctx context.Context, q DB, userID, tenantID, userAgent, ip string, tv int64) (Issued, error) {
	return s.create(ctx, q, userID, tenantID, userAgent, ip, &tv, nil, nil)
}

// create inserts the session; a nil authTime is now (the sign-in's own).
func (s *Store) create(ctx context.Context, q DB, userID, tenantID, userAgent, ip string, tv *int64, amr []string, authTime *time.Time) (Issued, error) {
	const qCreate = `
WITH a AS (
    SELECT coalesce((SELECT status = 'active' FROM users WHERE id = $1), false) AS active
), m AS (
    SELECT m.user_id, m.tenant_id FROM memberships m JOIN tenants t ON t.id = m.tenant_id
    WHERE m.user_id = $1 AND m.tenant_id = $2 AND m.status = 'active' AND t.status = 'active'
      AND (SELECT active FROM a)
    FOR SHARE OF m
), s AS (
    INSERT INTO sessions (user_id, tenant_id, user_agent, ip, expires_at, token_version, amr, auth_time)
    SELECT user_id, tenant_id, $3, $4, now() + make_interval(secs => least($6::float8, $10::float8)),
           coalesce($7::bigint, (SELECT token_version FROM users WHERE id = $1)),
           coalesce($8::text[], '{pwd}'), least(coalesce($9::timestamptz, now()), now())
    FROM m
    RETURNING id, floor(extract(epoch FROM auth_time))::bigint AS auth_time
), r AS (
    INSERT INTO refresh_tokens (session_id, token_hash, expires_at)
    SELECT id, $5, now() + make_interval(secs => least($6::float8, $10::float8)) FROM s
    RETURNING session_id
)
SELECT (SELECT active FROM a), (SELECT session_id::text FROM r), (SELECT auth_time FROM s)`
	tok, hash, err := newToken()
	if err != nil {
		return Issued{}, err
	}
	var (
		active bool
		sid    *string
		at     *int64
	)
	err = q.QueryRow(ctx, qCreate, userID, tenantID, clip.Text(userAgent, 512), clip.String(ip, 64), hash, secs(s.ttl), tv, amr, authTime, s.maxAgeSecs()).Scan(&active, &sid, &at)
	if err != nil {
		return Issued{}, fmt.Errorf("create session: %w", err)
	}
	switch {
	case !active:
		return Issued{}, ErrAccountDisabled
	case sid == nil || at == nil:
		return Issued{}, ErrNoMembership
	}
	return Issued{SessionID: *sid, RefreshToken: tok, AuthTime: *at}, nil
}

// Rotation is the outcome of a successful refresh.
type Rotation struct {
	SessionID    string
	UserID       string
	TenantID     string
	TokenVersion int64
	RefreshToken string // the successor
	// AMR and AuthTime are the session's authentication (methods, unix
	// seconds): a refresh keeps them.
	AMR      []string
	AuthTime int64
	// Ends is when the session ends unless refreshed again (unix
	// seconds, rounded down): no access token of it may outlive it.
	Ends int64
}

// qSuccessorLive reads, for the refresh token rt, whether the chain that
// follows it still ends in a live token (lookup.SuccessorLive): the last
// token of the chain, the one not replaced yet, has not expired. A reissue
// ends exactly that token, so this is false for every older token of the
// chain, however many rotations came after rt; the successor's own expiry
// is not enough, since a successor rotated in turn keeps it. False when rt
// has no successor, and for a token rotated before the grace window ($2
// seconds), which is reuse whatever follows it: the walk covers only the
// rotations since one inside the window, not the whole history of a
// month-old session whose stolen token is replayed.
const qSuccessorLive = `CASE WHEN rt.rotated_at > now() - make_interval(secs => $2) THEN coalesce((
    WITH RECURSIVE chain AS (
        SELECT c.replaced_by, c.expires_at FROM refresh_tokens c WHERE c.id = rt.replaced_by
        UNION ALL
        SELECT n.replaced_by, n.expires_at FROM refresh_tokens n JOIN chain ON n.id = chain.replaced_by
    )
    SELECT expires_at > now() FROM chain WHERE replaced_by IS NULL), false) ELSE false END`

type lookup struct {
	ID         uuid.UUID
	SessionID  string
	ReplacedBy *uuid.UUID
	InGrace    bool
	// SuccessorLive: the chain after the token, rotated within the grace,
	// still ends in a live token (a reissue ends it; qSuccessorLive); only
	// then is the successor handed out again.
	SuccessorLive bool
	TokenExpired  bool
	// Reissued: a reissue ended the token (Reissue stamps rotated_at
	// and leaves replaced_by unset); presented after the grace window,
	// it is reuse as a rotated token is.
	Reissued     bool
	UserID       string
	TenantID     string
	SessionDead  bool // revoked
	SessionExpd  bool
	Active       bool
	TokenVersion int64
	AMR          []string
	AuthTime     int64
	Ends         int64 // the session's end (Rotation.Ends)
}

// Presenter is the request that presented a refresh token: a reuse is
// audited with it, so the theft can be traced to a request and an address.
type Presenter struct {
	RequestID string
	IP        string // the client IP (httpapi.ClientIP)
}

// Rotate exchanges a refresh token for its successor, presented by by.
// See the package comment for the concurrency and reuse rules.
func (s *Store) Rotate(ctx context.Context, token string, by Presenter) (Rotation, error) {
	return s.RotateIn(ctx, token, "", by)
}

// RotateIn is Rotate for a request that names the tenant it wants the
// tokens for (tenantID, canonical; "": none): a session other than one
// signed in to it is ErrOtherTenant, and its token is neither rotated nor
// spent. A refresh keeps the session's tenant (a tenant switch moves it).
// A token rotated before the grace window is reuse whatever tenant the
// request names.
func (s *Store) RotateIn(ctx context.Context, token, tenantID string, by Presenter) (Rotation, error) {
	const qLookup = `
SELECT rt.id, rt.session_id, rt.replaced_by,
       coalesce(rt.rotated_at > now() - make_interval(secs => $2), false),
       ` + qSuccessorLive + `,
       rt.expires_at <= now(), rt.replaced_by IS NULL AND rt.rotated_at IS NOT NULL,
       s.user_id, s.tenant_id,
       s.revoked_at IS NOT NULL OR coalesce(s.token_version < u.token_version, false),
       s.expires_at <= now() OR s.created_at + make_interval(secs => $3) <= now(),
       (u.status = 'active' AND coalesce(m.status, '') = 'active' AND t.status = 'active'),
       u.token_version, s.amr, floor(extract(epoch FROM s.auth_time))::bigint,
       floor(extract(epoch FROM least(s.expires_at, s.created_at + make_interval(secs => $3))))::bigint
FROM refresh_tokens rt
JOIN sessions s ON s.id = rt.session_id
JOIN users u ON u.id = s.user_id
JOIN tenants t ON t.id = s.tenant_id
LEFT JOIN memberships m ON m.tenant_id = s.tenant_id AND m.user_id = s.user_id
WHERE rt.token_hash = $1`
	raw, ok := decode(token)
	if !ok {
		return Rotation{}, ErrInvalidToken
	}
	var l lookup
	err := s.pool.QueryRow(ctx, qLookup, Hash(token), secs(s.grace), s.maxAgeSecs()).Scan(
		&l.ID, &l.SessionID, &l.ReplacedBy, &l.InGrace, &l.SuccessorLive, &l.TokenExpired, &l.Reissued,
		&l.UserID, &l.TenantID, &l.SessionDead, &l.SessionExpd, &l.Active, &l.TokenVersion, &l.AMR, &l.AuthTime, &l.Ends)
	if errors.Is(err, pgx.ErrNoRows) {
		return Rotation{}, ErrInvalidToken
	}
	if err != nil {
		return Rotation{}, fmt.Errorf("look up refresh token: %w", err)
	}
	switch {
	case l.SessionDead:
		return Rotation{}, ErrRevoked
	case l.SessionExpd:
		return Rotation{}, ErrExpired
	case (l.ReplacedBy != nil || l.Reissued) && !l.InGrace:
		// Reuse, whatever else holds: the token's own lifetime over, or
		// the account, membership or tenant inactive for now, must not
		// spare the session whose live successor someone else holds.
		// A token a reissue ended is such a token too: the reissue
		// handed its successor to whoever asked for it (a tenant switch
		// needs only the access token and this token), so the holder
		// left behind is told apart from the holder of the session the
		// same way.
		return Rotation{}, s.reused(ctx, l, by)
	case l.TokenExpired:
		return Rotation{}, ErrExpired
	case !l.Active:
		return Rotation{}, ErrInactive
	case tenantID != "" && tenantID != l.TenantID:
		return Rotation{}, ErrOtherTenant
	}
	r := Rotation{SessionID: l.SessionID, UserID: l.UserID, TenantID: l.TenantID, TokenVersion: l.TokenVersion,
		AMR: l.AMR, AuthTime: l.AuthTime, Ends: l.Ends}

	if l.ReplacedBy == nil {
		next, ends, won, err := s.rotate(ctx, l.ID, l.SessionID, raw)
		if err != nil {
			return Rotation{}, err
		}
		if won {
			r.RefreshToken, r.Ends = next, ends
			return r, nil
		}
		// Lost the race to a concurrent refresh: read who won.
		const qReread = `
SELECT rt.replaced_by, coalesce(rt.rotated_at > now() - make_interval(secs => $2), false),
       ` + qSuccessorLive + `
FROM refresh_tokens rt WHERE rt.id = $1`
		err = s.pool.QueryRow(ctx, qReread, l.ID, secs(s.grace)).Scan(&l.ReplacedBy, &l.InGrace, &l.SuccessorLive)
		if errors.Is(err, pgx.ErrNoRows) {
			// The token went with its session meanwhile (the account
			// deleted, or the sweep of an expired session).
			return Rotation{}, ErrRevoked
		}
		if err != nil {
			return Rotation{}, fmt.Errorf("reread refresh token: %w", err)
		}
		if l.ReplacedBy == nil { // the session was reissued or ended meanwhile
			return Rotation{}, ErrExpired
		}
		if !l.InGrace {
			// The token was live when this request presented it: a
			// refresh racing this one rotated it (with no grace window,
			// REFRESH_REUSE_GRACE=0, or after a wait longer than it).
			// That is no reuse, and must not sign out the holder of the
			// winner's successor.
			return Rotation{}, ErrExpired
		}
	}
	if l.InGrace {
		if !l.SuccessorLive { // the session was reissued since: the chain ended
			return Rotation{}, ErrExpired
		}
		r.RefreshToken = successor(raw, *l.ReplacedBy)
		return r, nil
	}
	return Rotation{}, s.reused(ctx, l, by)
}

// reused revokes the session of the token l, presented by by after its
// rotation's grace window, and returns ErrReused (or the revocation's
// error).
func (s *Store) reused(ctx context.Context, l lookup, by Presenter) error {
	if err := s.revokeForReuse(ctx, l.SessionID, l.UserID, l.TenantID, by); err != nil {
		return err
	}
	return ErrReused
}

// rotate marks parent replaced and inserts its successor in one statement,
// and returns the successor and the session's new end (unix seconds,
// rounded down); won is false when another request rotated parent first,
// or when the session ended or was reissued since the look-up.
func (s *Store) rotate(ctx context.Context, parent uuid.UUID, sessionID string, parentRaw []byte) (next string, ends int64, won bool, err error) {
	// The session's row is locked first (s): a reissue or a revocation
	// takes it too, so they run one after the other, never interleaved.
	// A rotation that waited for a reissue then finds its parent ended
	// (expires_at, compared with the clock, not with this statement's
	// start), one that went first leaves a successor that the reissue's
	// next statement sees and ends. The UPDATE's WHERE replaced_by IS NULL
	// is the arbiter between concurrent refreshes: exactly one statement
	// changes the row; the others wait for its lock, re-check the
	// condition and match nothing, so their INSERT and session UPDATE see
	// an empty CTE and do nothing.
	const qRotate = `
WITH s AS (
    SELECT id, least(now() + make_interval(secs => $4), created_at + make_interval(secs => $6)) AS ends
    FROM sessions
    WHERE id = $5 AND revoked_at IS NULL AND expires_at > clock_timestamp()
      AND created_at + make_interval(secs => $6) > clock_timestamp()
    FOR UPDATE
), parent AS (
    UPDATE refresh_tokens SET replaced_by = $2, rotated_at = now()
    WHERE id = $1 AND replaced_by IS NULL AND expires_at > clock_timestamp()
      AND session_id = (SELECT id FROM s)
    RETURNING id, session_id
), child AS (
    INSERT INTO refresh_tokens (id, session_id, token_hash, parent_id, expires_at)
    SELECT $2, session_id, $3, id, (SELECT ends FROM s) FROM parent
    RETURNING session_id
)
UPDATE sessions SET last_used_at = now(), expires_at = (SELECT ends FROM s)
WHERE id = (SELECT session_id FROM child)
RETURNING floor(extract(epoch FROM expires_at))::bigint`
	childID, err := uuid.NewRandom()
	if err != nil {
		return "", 0, false, fmt.Errorf("new token id: %w", err)
	}
	next = successor(parentRaw, childID)
	err = s.pool.QueryRow(ctx, qRotate, parent, childID, Hash(next), secs(s.ttl), sessionID, s.maxAgeSecs()).Scan(&ends)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", 0, false, nil
	}
	if err != nil {
		return "", 0, false, fmt.Errorf("rotate refresh token: %w", err)
	}
	return next, ends, true, nil
}

// revokeForReuse revokes the session of a refresh token presented after
// its rotation's grace window, and audits it in the session's tenant: a
// token theft shows there, as a revoked API key's use does, with the
// request that presented the token and its client IP (whoever presented
// it, the thief or the victim, holds the stolen token's family).
func (s *Store) revokeForReuse(ctx context.Context, sessionID, userID, tenantID string, by Presenter) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return RevokeForReuse(ctx, tx, sessionID, userID, tenantID, by)
	})
}

// RevokeForReuse is revokeForReuse in tx, the caller's transaction:
// the session ends with ReasonReuse, audited as
// audit.ActionRefreshTokenReused in its tenant and announced on the
// user's subject, unless it had ended already.
func RevokeForReuse(ctx context.Context, tx pgx.Tx, sessionID, userID, tenantID string, by Presenter) error {
	return revokeReused(ctx, tx, sessionID, userID, tenantID, by, ReasonReuse, audit.ActionRefreshTokenReused)
}

// RevokeForHandoverReuse is RevokeForReuse for an OAuth hand-over code
// presented again after its exchange (RFC 6749 section 4.1.2): the
// session the code opened ends with ReasonHandoverReuse, audited as
// audit.ActionHandoverCodeReused, so the tokens the first exchange got
// stop working whoever holds them.
func RevokeForHandoverReuse(ctx context.Context, tx pgx.Tx, sessionID, userID, tenantID string, by Presenter) error {
	return revokeReused(ctx, tx, sessionID, userID, tenantID, by, ReasonHandoverReuse, audit.ActionHandoverCodeReused)
}

func revokeReused(ctx context.Context, tx pgx.Tx, sessionID, userID, tenantID string, by Presenter, reason, action string) error {
	const qRevoke = `
UPDATE sessions SET revoked_at = clock_timestamp(), revoked_reason = $3
WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL`
	// The account's row first, then its session and its mailed tokens,
	// as a sign-out everywhere takes them.
	if _, err := tx.Exec(ctx, `SELECT 1 FROM users WHERE id = $1 FOR UPDATE`, userID); err != nil {
		return fmt.Errorf("lock user: %w", err)
	}
	tag, err := tx.Exec(ctx, qRevoke, sessionID, userID, reason)
	if err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return nil
	}
	// The session is taken for stolen: an email change it asked for must
	// not move the account to its holder's mailbox afterwards, confirmed
	// with the password alone, as after a sign-out everywhere. Which
	// session asked is not recorded: every pending change ends.
	if err := onetime.RevokeEmailChanges(ctx, tx, userID); err != nil {
		return err
	}
	return audit.WriteWith(ctx, tx, audit.Event{TenantID: tenantID, Action: action,
		TargetType: audit.TargetSession, TargetID: sessionID, RequestID: by.RequestID,
		Data: map[string]string{"user_id": userID, "client_ip": by.IP}},
		outbox.Row{Subject: invalidation.UserSubject(userID), Reason: invalidation.ReasonSessionRevoked})
}

// Holder is the session a refresh token names (any token of its rotation
// chain), as the revocation endpoint finds it (FindHolder).
type Holder struct {
	SessionID, UserID, TenantID string
	// Reused: the token was rotated, or ended by a reissue, before the
	// grace window, in a session that has not expired: presented anywhere,
	// it is a reuse (see Rotate), never the session's holder signing out.
	Reused bool
}

// FindHolder finds, through q, the session that token names, if it is
// not revoked (ok false otherwise, or for an unknown token).
func (s *Store) FindHolder(ctx context.Context, q DB, token string) (h Holder, ok bool, err error) {
	const qFind = `
SELECT s.id::text, s.user_id::text, s.tenant_id::text,
       rt.rotated_at IS NOT NULL AND rt.rotated_at <= now() - make_interval(secs => $2)
           AND s.expires_at > now() AND s.created_at + make_interval(secs => $3) > now()
FROM refresh_tokens rt
JOIN sessions s ON s.id = rt.session_id
WHERE rt.token_hash = $1 AND s.revoked_at IS NULL`
	err = q.QueryRow(ctx, qFind, Hash(token), secs(s.grace), s.maxAgeSecs()).Scan(&h.SessionID, &h.UserID, &h.TenantID, &h.Reused)
	if errors.Is(err, pgx.ErrNoRows) {
		return Holder{}, false, nil
	}
	if err != nil {
		return Holder{}, false, fmt.Errorf("find refresh token: %w", err)
	}
	return h, true, nil
}

// Revoke revokes one session of userID; it reports how many sessions it
// revoked (0: unknown, not the user's, or already revoked). The caller
// writes the outbox row in the same transaction.
func (s *Store) Revoke(ctx context.Context, q DB, userID, sessionID, reason string) (int64, error) {
	const qRevoke = `
UPDATE sessions SET revoked_at = clock_timestamp(), revoked_reason = $3
WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL`
	if !ids.Valid(sessionID) {
		return 0, nil
	}
	tag, err := q.Exec(ctx, qRevoke, sessionID, userID, reason)
	if err != nil {
		return 0, fmt.Errorf("revoke session: %w", err)
	}
	return tag.RowsAffected(), nil
}

// RevokeLive revokes one live (neither revoked nor expired) session of
// userID and returns the tenant it was signed in to; ok is false when
// there was none (unknown, not the user's, revoked or expired). The caller
// writes the audit and outbox rows in the same transaction.
func (s *Store) RevokeLive(ctx context.Context, q DB, userID, sessionID, reason string) (tenantID string, ok bool, err error) {
	const qRevoke = `
UPDATE sessions SET revoked_at = clock_timestamp(), revoked_reason = $3
WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > now()
RETURNING tenant_id::text`
	if !ids.Valid(sessionID) {
		return "", false, nil
	}
	err = q.QueryRow(ctx, qRevoke, sessionID, userID, reason).Scan(&tenantID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("revoke session: %w", err)
	}
	return tenantID, true, nil
}

// RevokeAll revokes every live session of userID except keep (may be ""),
// and ends the user's sign-ins still waiting for a second factor (their
// mfa_tokens): a sign-in that checked the password before a reset or a
// change must not open a session after it.
func (s *Store) RevokeAll(ctx context.Context, q DB, userID, keep, reason string) (int64, error) {
	const qRevokeAll = `
WITH pending AS (DELETE FROM mfa_challenges WHERE user_id = $1)
UPDATE sessions SET revoked_at = clock_timestamp(), revoked_reason = $3
WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
  AND id IS DISTINCT FROM NULLIF($2, '')::uuid`
	tag, err := q.Exec(ctx, qRevokeAll, userID, keep, reason)
	if err != nil {
		return 0, fmt.Errorf("revoke sessions: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Revoked is how many sessions a revocation ended in each tenant they
// were bound to (RevokeAllByTenant), by tenant id.
type Revoked map[string]int64

// Total is how many sessions the revocation ended in every tenant.
func (r Revoked) Total() int64 {
	var n int64
	for _, c := range r {
		n += c
	}
	return n
}

// RevokeAllByTenant is RevokeAll, answering how many sessions it ended in
// each tenant: an audit row written in each of the account's tenants
// counts that tenant's, and tells its admins nothing of the account's
// sessions elsewhere.
func (s *Store) RevokeAllByTenant(ctx context.Context, q DB, userID, keep, reason string) (Revoked, error) {
	const qRevokeAll = `
WITH pending AS (DELETE FROM mfa_challenges WHERE user_id = $1),
ended AS (
    UPDATE sessions SET revoked_at = clock_timestamp(), revoked_reason = $3
    WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
      AND id IS DISTINCT FROM NULLIF($2, '')::uuid
    RETURNING tenant_id)
SELECT tenant_id::text, count(*) FROM ended GROUP BY tenant_id`
	rows, err := q.Query(ctx, qRevokeAll, userID, keep, reason)
	if err != nil {
		return nil, fmt.Errorf("revoke sessions: %w", err)
	}
	defer rows.Close()
	r := Revoked{}
	for rows.Next() {
		var (
			tid string
			n   int64
		)
		if err := rows.Scan(&tid, &n); err != nil {
			return nil, fmt.Errorf("revoke sessions: %w", err)
		}
		r[tid] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("revoke sessions: %w", err)
	}
	return r, nil
}

// RevokeInTenant revokes every live session of userID bound to tenantID
// (the user was removed from it, ReasonMemberRemoved), through q (the
// removal's transaction). Such a session cannot refresh while the
// membership is gone, but would again once the user is added back.
func RevokeInTenant(ctx context.Context, q DB, userID, tenantID string) error {
	const qRevoke = `
UPDATE sessions SET revoked_at = clock_timestamp(), revoked_reason = $3
WHERE user_id = $1 AND tenant_id = $2 AND revoked_at IS NULL AND expires_at > now()`
	if _, err := q.Exec(ctx, qRevoke, userID, tenantID, ReasonMemberRemoved); err != nil {
		return fmt.Errorf("revoke sessions in tenant: %w", err)
	}
	return nil
}

// InheritAuth gives the session to the authentication (amr, auth_time) of
// the caller id: its session (id.SessionID, userID's), which must be live
// (not revoked or expired, and not stamped with an older token version
// than the user's), and the access token the request carries, when the
// signed identity holds its authentication (id.AuthTime set): the token's
// methods, and the older of the two times. The session's authentication
// moves on when a second factor is given on it (a step-up), but a token
// issued before keeps its own, and whoever holds it must not open a
// session that gave the factor since. It returns the authentication
// given (auth_time in unix seconds): a session opened on the strength of
// another one (an invitation accepted signed in) is no new sign-in. It is
// ErrNotFound when id's session is not such a session.
func InheritAuth(ctx context.Context, q DB, userID string, id identity.Identity, to string) ([]string, int64, error) {
	// coalesce and least() skip a NULL: without the token's
	// authentication the session's is taken.
	const qInherit = `
UPDATE sessions n SET amr = coalesce($4::text[], f.amr), auth_time = least(f.auth_time, to_timestamp($5))
FROM sessions f JOIN users u ON u.id = f.user_id
WHERE n.id = $3 AND n.user_id = $1 AND f.id = $2 AND f.user_id = $1
  AND f.revoked_at IS NULL AND f.expires_at > now()
  AND NOT coalesce(f.token_version < u.token_version, false)
RETURNING n.amr, floor(extract(epoch FROM n.auth_time))::bigint`
	if !ids.Valid(id.SessionID) {
		return nil, 0, ErrNotFound
	}
	// A token that names no method leaves the session's methods (and
	// time) to the session.
	tokenAt, tokenAMR := tokenAuth(id, true)
	var (
		amr []string
		at  int64
	)
	err := q.QueryRow(ctx, qInherit, userID, id.SessionID, to, tokenAMR, tokenAt).Scan(&amr, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("inherit session authentication: %w", err)
	}
	return amr, at, nil
}

// tokenAuth is the authentication the access token a request carries
// says, as query arguments: its time and its methods when the signed
// identity holds them (id.AuthTime set: the v2 identity of a token's
// bearer), else nil for both (NULL, which least() and coalesce() skip).
// The methods are a copy, never nil when the time is set: an empty list
// is a token that names none. needAMR: such a token says nothing (both
// nil).
func tokenAuth(id identity.Identity, needAMR bool) (*int64, []string) {
	if id.AuthTime <= 0 || needAMR && len(id.AMR) == 0 {
		return nil, nil
	}
	at := id.AuthTime
	return &at, append([]string{}, id.AMR...)
}

// qCurrent is the condition, on a row of sessions whose user is $2, that
// the session is not stamped with an older token version than the user's:
// one opened by a sign-in that raced a password reset (CreateAt) is ended
// for everything, not only for a refresh.
const qCurrent = `NOT coalesce(token_version < (SELECT u.token_version FROM users u WHERE u.id = $2), false)`

// QLive is the condition that a row of sessions is the live session $1 of
// user $2: not revoked or expired, and not stamped with an older token
// version than the user's (qCurrent).
const QLive = `id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > now() AND ` + qCurrent

// QLiveIn is QLive of a session still bound to tenant $3: not moved to
// another tenant since the caller's access token was issued (a tenant
// switch moves it, and the token keeps naming the tenant it left).
const QLiveIn = QLive + ` AND tenant_id = $3`

// LiveIn reports whether sessionID is userID's live session bound to
// tenantID (QLiveIn). A session id that is not valid is not live.
func LiveIn(ctx context.Context, q DB, userID, sessionID, tenantID string) (bool, error) {
	if !ids.Valid(sessionID) {
		return false, nil
	}
	var ok bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM sessions WHERE `+QLiveIn+`)`, sessionID, userID, tenantID).Scan(&ok); err != nil {
		return false, fmt.Errorf("check session: %w", err)
	}
	return ok, nil
}

// LockLiveIn locks, through q (a transaction), the row of sessionID if it
// is userID's live session bound to tenantID (QLiveIn), else ErrNotFound:
// a tenant switch or a revocation waits until q's transaction ends, or
// has committed and is seen.
func LockLiveIn(ctx context.Context, q DB, userID, sessionID, tenantID string) error {
	if !ids.Valid(sessionID) {
		return ErrNotFound
	}
	var one int
	err := q.QueryRow(ctx, `SELECT 1 FROM sessions WHERE `+QLiveIn+` FOR UPDATE`, sessionID, userID, tenantID).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("lock session: %w", err)
	}
	return nil
}

// ErrEnded: the session a request was signed with is no longer live
// (see CheckLive).
var ErrEnded = errors.New("the session has ended")

// CheckLive is ErrEnded unless sessionID is userID's live session
// (QLive), or is "" (a caller with no session: a service account, an API
// key). A change made on the say of a session, in a transaction that
// takes a lock a sign-out or a password reset takes too (or runs after
// it), checks it with a statement after the lock: a proxy hears of the
// end only later, and a request it let through meanwhile must not leave
// behind a credential (an API key, a client secret, an invitation) that
// outlives the end. A session id that is not valid is not live.
func CheckLive(ctx context.Context, q DB, userID, sessionID string) error {
	if sessionID == "" {
		return nil
	}
	if !ids.Valid(sessionID) {
		return ErrEnded
	}
	var live bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM sessions WHERE `+QLive+`)`, sessionID, userID).Scan(&live); err != nil {
		return fmt.Errorf("check session: %w", err)
	}
	if !live {
		return ErrEnded
	}
	return nil
}

// HoldLive is ErrRevoked unless sessionID is still userID's live session
// (QLive), checked after an access token of it was signed: a revocation
// that committed between the step that created, rotated or reissued the
// session and the signing would otherwise leave a token issued after
// revoked_at, which outlives the projection's revoked list (listed for
// one access-token lifetime plus TOKEN_MAX_LEEWAY from revoked_at). The
// row is read FOR SHARE, so a revocation not yet committed is waited for
// and seen; one that comes after stamps revoked_at with its own
// statement's clock (clock_timestamp(), not its transaction's start),
// later than the token.
func (s *Store) HoldLive(ctx context.Context, userID, sessionID string) error {
	var one int
	err := s.pool.QueryRow(ctx, `SELECT 1 FROM sessions WHERE `+QLive+` FOR SHARE`, sessionID, userID).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrRevoked
	}
	if err != nil {
		return fmt.Errorf("check session: %w", err)
	}
	return nil
}

// Fresh reports whether id's session is userID's live session (not
// revoked, expired or stamped with an older token version than the
// user's) and was authenticated (signed in, or stepped up) within maxAge,
// with a second factor (otp in its amr) when otp is set; and whether the
// access token the request carries says so too, when the signed identity
// holds its authentication (id.AuthTime set: the v2 identity of a token's
// bearer). The session's authentication moves on when a second factor is
// given on it (a step-up, an enrolment's confirmation), but an access
// token issued before keeps its own: held by someone else, it must not
// pass for a recent sign-in because the owner has just proven the factor
// on the same session. A session id that is not valid is not fresh.
func Fresh(ctx context.Context, q DB, id identity.Identity, maxAge time.Duration, otp bool) (bool, error) {
	// least() skips a NULL: without the token's authentication the
	// session's decides.
	const qFresh = `
SELECT least(auth_time, to_timestamp($5)) > now() - make_interval(secs => $3)
   AND (NOT $4 OR ('otp' = ANY (amr) AND ($6::text[] IS NULL OR 'otp' = ANY ($6::text[]))))
FROM sessions WHERE ` + QLive
	if !ids.Valid(id.SessionID) {
		return false, nil
	}
	// A token that names no method has not given the second factor.
	tokenAt, tokenAMR := tokenAuth(id, false)
	var fresh bool
	err := q.QueryRow(ctx, qFresh, id.SessionID, id.UserID, maxAge.Seconds(), otp, tokenAt, tokenAMR).Scan(&fresh)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("check session authentication: %w", err)
	}
	return fresh, nil
}

// Reissue ends every live refresh token of a live session and issues a new
// one (after switch-tenant or a password change), in tx, and returns it
// with the session's new end (unix seconds, rounded down: see
// Rotation.Ends). ErrNotFound if the session is not userID's or is revoked. The tokens it ends are stamped
// rotated now: one presented after the grace window is reuse (see Rotate).
// A tenant switch needs only the access token and the refresh token, so
// a thief holding both could otherwise switch the session to the tenant it
// is in and keep it, its owner's refresh token refused as merely expired.
func (s *Store) Reissue(ctx context.Context, tx pgx.Tx, userID, sessionID string) (token string, ends int64, err error) {
	// Two statements, in this order: the first locks the session's row,
	// waiting for a rotation in flight (see rotate) to commit; the second,
	// with a snapshot taken after that, sees the rotation's successor and
	// ends it with the others. In one statement the successor would be
	// invisible to it, and stay live.
	const (
		qStamp = `
UPDATE sessions SET token_version = (SELECT token_version FROM users WHERE id = $2),
    expires_at = least(now() + make_interval(secs => $3), created_at + make_interval(secs => $4))
WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > now()`
		qReissue = `
WITH old AS (
    UPDATE refresh_tokens SET expires_at = now(), rotated_at = now()
    WHERE session_id = $1 AND replaced_by IS NULL AND expires_at > now()
)
INSERT INTO refresh_tokens (session_id, token_hash, expires_at)
SELECT id, $3, expires_at FROM sessions
WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > now()
RETURNING floor(extract(epoch FROM expires_at))::bigint`
	)
	if !ids.Valid(sessionID) {
		return "", 0, ErrNotFound
	}
	tok, hash, err := newToken()
	if err != nil {
		return "", 0, err
	}
	b := &pgx.Batch{}
	b.Queue(qStamp, sessionID, userID, secs(s.ttl), s.maxAgeSecs())
	b.Queue(qReissue, sessionID, userID, hash)
	br := tx.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return "", 0, fmt.Errorf("reissue refresh token: %w", err)
	}
	err = br.QueryRow().Scan(&ends)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", 0, ErrNotFound
	}
	if err != nil {
		return "", 0, fmt.Errorf("reissue refresh token: %w", err)
	}
	return tok, ends, br.Close()
}

// Restamp stamps userID's live session sessionID with the user's current
// token version, in the transaction that moved the version on and keeps
// the session (a second factor's confirmation ends the account's other
// sessions by the version): its refresh token goes on and is not
// reissued, and its access tokens issued before, stamped with the old
// version, are refused with the other sessions'. ErrNotFound if the
// session is not userID's live one.
func (s *Store) Restamp(ctx context.Context, q DB, userID, sessionID string) error {
	const qStamp = `
UPDATE sessions SET token_version = (SELECT token_version FROM users WHERE id = $2)
WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > now()`
	if !ids.Valid(sessionID) {
		return ErrNotFound
	}
	tag, err := q.Exec(ctx, qStamp, sessionID, userID)
	if err != nil {
		return fmt.Errorf("restamp session: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// HoldsLive reports whether token is the live refresh token of userID's
// session sessionID: the one a refresh would rotate now (not replaced, not
// expired). A tenant switch, which hands out a new refresh token for the
// session and ends the old one, asks for it: an access token alone, which
// reaches every API the token's lifetime long, must not become a refresh
// token that lasts the session's lifetime and locks its owner out.
func (s *Store) HoldsLive(ctx context.Context, q DB, userID, sessionID, token string) (bool, error) {
	const qHolds = `
SELECT EXISTS (
    SELECT 1 FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id
    WHERE rt.token_hash = $1 AND rt.session_id = $2 AND s.user_id = $3
      AND rt.replaced_by IS NULL AND rt.expires_at > now())`
	if _, ok := decode(token); !ok || !ids.Valid(sessionID) {
		return false, nil
	}
	var held bool
	if err := q.QueryRow(ctx, qHolds, Hash(token), sessionID, userID).Scan(&held); err != nil {
		return false, fmt.Errorf("check refresh token: %w", err)
	}
	return held, nil
}

// MoveTenant binds a live session of userID to tenantID: not revoked,
// expired or stamped with an older token version than the user's
// (ErrNotFound otherwise). The Reissue that follows a move stamps the
// session with the current version, so a session that a refresh no longer
// opens must not get that far: a tenant switch would bring it back.
func (s *Store) MoveTenant(ctx context.Context, q DB, userID, sessionID, tenantID string) error {
	const qMove = `
UPDATE sessions SET tenant_id = $3, last_used_at = now()
WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > now()
  AND ` + qCurrent
	if !ids.Valid(sessionID) {
		return ErrNotFound
	}
	tag, err := q.Exec(ctx, qMove, sessionID, userID, tenantID)
	if err != nil {
		return fmt.Errorf("move session: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// List returns userID's live sessions (not revoked, expired, or stamped
// with an older token version than the user's: those no refresh opens,
// and listing them would show an account's owner sessions that seem to
// have outlived a password reset), newest first, at most limit of them,
// starting after the (created_at, id) cursor position when after is set.
func (s *Store) List(ctx context.Context, userID string, limit int, after *Cursor) ([]Session, error) {
	const qList = `
SELECT id, user_id, tenant_id, user_agent, ip, created_at, last_used_at, expires_at, revoked_at, revoked_reason
FROM sessions
WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
  AND NOT coalesce(token_version < (SELECT u.token_version FROM users u WHERE u.id = $1), false)
  AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $4`
	var (
		at *time.Time
		id *string
	)
	if after != nil {
		at, id = &after.CreatedAt, &after.ID
	}
	rows, err := s.pool.Query(ctx, qList, userID, at, id, limit)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[Session])
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return list, nil
}

// Cursor is a keyset position in a List.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// Sweep deletes sessions (and, by cascade, their refresh tokens and
// hand-over codes) that expired or were revoked more than keep ago, in
// batches (sweep.InBatches). Revoked sessions must outlive the
// access-token lifetime so the projection still lists them. It skips the
// sessions another transaction holds (a revocation of a user's sessions,
// a refresh): it neither waits for them, holding the batch's other rows
// meanwhile, nor deadlocks with a revocation that takes them in another
// order. A session skipped is swept next time.
func (s *Store) Sweep(ctx context.Context, keep time.Duration) (int64, error) {
	const qSweep = `
DELETE FROM sessions WHERE id IN (
    SELECT id FROM sessions
    WHERE expires_at < now() - make_interval(secs => $1)
       OR revoked_at < now() - make_interval(secs => $1)
    LIMIT $2
    FOR UPDATE SKIP LOCKED)`
	n, err := sweep.InBatches(ctx, s.pool, qSweep, secs(keep))
	if err != nil {
		return n, fmt.Errorf("sweep sessions: %w", err)
	}
	return n, nil
}
