// Package auth is coreapi's sign-in HTTP surface: signup, the token
// endpoint (password, refresh_token, oauth_handover and mfa_otp grants,
// JSON or form-encoded; client_credentials is delegated, see
// clientcreds.go), TOTP second factors (enrolment, sign-in
// challenges, step-up; see mfa.go),
// logout, switch-tenant, the caller's sessions, password change, and the
// JWKS document. It issues access tokens (JWT, signed by keys.Ring) and
// refresh tokens (sessions.Store); it never verifies a JWT itself.
//
// Password attempts are reserved in PostgreSQL (shared by every replica)
// before the password is checked, per (address, client IP) with
// exponential backoff, per address with a softer slowdown, and per client
// IP over every address (a fixed budget of failures an hour): 429 plus
// Retry-After once locked. An unknown account gets the same answer as a
// wrong password, after hashing against a dummy so it costs the same.
package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/keys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lockout"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
)

// Lockout is the failed-guess backoff policy (see package lockout).
type Lockout = lockout.Policy

// DefaultLockout returns lockout.Default(): the policy of a Service whose
// Options name none.
func DefaultLockout() Lockout { return lockout.Default() }

// Options configure a Service. All fields but Lockout are required.
type Options struct {
	Logger    *slog.Logger
	Pool      *pgxpool.Pool
	Keys      *keys.Ring
	Passwords *password.Hasher
	Sessions  *sessions.Store
	Issuer    string
	Audience  string
	AccessTTL time.Duration
	Lockout   Lockout
	// MFA seals TOTP secrets at rest; nil: MFA enrolment is unavailable
	// (users who already have MFA cannot sign in until it is set again).
	MFA *mfa.Sealer
	// MFAIssuer names the service in authenticator apps (default Tollgate).
	MFAIssuer string
	// Now is the clock of token timestamps; nil means time.Now.
	Now func() time.Time
	// ClientCredentials answers grant_type=client_credentials; nil: the
	// grant is unsupported.
	ClientCredentials ClientCredentials
	// Catalog is the permission catalog (nil: the built-in permissions),
	// for what a member holds when a tenant admin resets its factor.
	Catalog *permissions.Catalog
	// SignupPerHour bounds the sign-ups of one client IP (an IPv6 client:
	// its /64) per hour, over every replica; 0 means DefaultSignupPerHour.
	SignupPerHour int
	// SignInFailuresPerHour bounds the wrong passwords one client IP (an
	// IPv6 client: its /64) may send per hour over every address (sign-in,
	// invitation acceptance, email verification, password change), over
	// every replica; 0 means DefaultSignInFailuresPerHour.
	SignInFailuresPerHour int
	// PasswordChecksPerHour bounds the passwords, right or wrong, one
	// client IP (an IPv6 client: its /64) may have checked per hour over
	// every address and route, over every replica; 0 means
	// DefaultPasswordChecksPerHour. Each check is an argon2 hash: whoever
	// knows one password (anyone, after a sign-up) could otherwise keep
	// every hashing slot busy with correct sign-ins, which
	// SignInFailuresPerHour does not count.
	PasswordChecksPerHour int
	// BeforeIssue, when set (tests), runs in Issue between the caller's
	// step on the session (created, rotated, reissued) and the signing of
	// its access token.
	BeforeIssue func(sessionID string)
}

// DefaultSignupPerHour is Options.SignupPerHour's default.
const DefaultSignupPerHour = 20

// DefaultSignInFailuresPerHour is Options.SignInFailuresPerHour's default.
const DefaultSignInFailuresPerHour = 100

// DefaultPasswordChecksPerHour is Options.PasswordChecksPerHour's default.
const DefaultPasswordChecksPerHour = ratelimit.DefaultPasswordChecks

// Service issues tokens and manages sessions.
type Service struct {
	// limiter and signupLimit bound sign-ups per client IP; guessLimit
	// the wrong passwords of a client IP over every address, checkLimit
	// all its passwords checked.
	limiter     *ratelimit.Limiter
	signupLimit ratelimit.Limit
	guessLimit  ratelimit.Limit
	checkLimit  ratelimit.Limit
	log         *slog.Logger
	pool        *pgxpool.Pool
	keys        *keys.Ring
	passwords   *password.Hasher
	sessions    *sessions.Store
	issuer      string
	audience    string
	accessTTL   time.Duration
	attempts    *lockout.Store
	// codeAttempts counts second-factor codes: attempts' policy with
	// the window CodeWindow.
	codeAttempts *lockout.Store
	cursors      *httpapi.Cursors // set by Register
	mfa          *mfa.Sealer
	mfaIssuer    string
	now          func() time.Time
	cc           ClientCredentials
	catalog      *permissions.Catalog
	beforeIssue  func(sessionID string)
}

// New returns a Service.
func New(o Options) (*Service, error) {
	if o.Logger == nil || o.Pool == nil || o.Keys == nil || o.Passwords == nil || o.Sessions == nil ||
		o.Issuer == "" || o.Audience == "" || o.AccessTTL <= 0 {
		return nil, errors.New("auth: Logger, Pool, Keys, Passwords, Sessions, Issuer, Audience and AccessTTL are required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Catalog == nil {
		o.Catalog = permissions.Builtin()
	}
	if o.MFAIssuer == "" {
		o.MFAIssuer = "Tollgate"
	}
	if o.SignupPerHour <= 0 {
		o.SignupPerHour = DefaultSignupPerHour
	}
	if o.SignInFailuresPerHour <= 0 {
		o.SignInFailuresPerHour = DefaultSignInFailuresPerHour
	}
	if o.PasswordChecksPerHour <= 0 {
		o.PasswordChecksPerHour = DefaultPasswordChecksPerHour
	}
	attempts := lockout.New(o.Pool, o.Lockout)
	codes := attempts.Policy()
	codes.Window = max(codes.Window, CodeWindow)
	return &Service{
		limiter: ratelimit.New(o.Pool), signupLimit: ratelimit.Limit{N: o.SignupPerHour, Window: time.Hour},
		log: o.Logger, pool: o.Pool, keys: o.Keys, passwords: o.Passwords, sessions: o.Sessions,
		issuer: o.Issuer, audience: o.Audience, accessTTL: o.AccessTTL, now: o.Now,
		mfa: o.MFA, mfaIssuer: o.MFAIssuer, cc: o.ClientCredentials, catalog: o.Catalog,
		guessLimit: ratelimit.Limit{N: o.SignInFailuresPerHour, Window: time.Hour}, attempts: attempts,
		checkLimit:   ratelimit.Limit{N: o.PasswordChecksPerHour, Window: time.Hour},
		codeAttempts: lockout.New(o.Pool, codes), beforeIssue: o.BeforeIssue,
	}, nil
}

// Claims are exactly the access-token claims of the contract.
type Claims struct {
	Issuer       string `json:"iss"`
	Audience     string `json:"aud"`
	Subject      string `json:"sub"`
	TenantID     string `json:"tid"`
	SessionID    string `json:"sid"`
	TokenVersion int64  `json:"tv"`
	IssuedAt     int64  `json:"iat"`
	NotBefore    int64  `json:"nbf"`
	Expires      int64  `json:"exp"`
	ID           string `json:"jti"`
	// AMR are the methods of the session's authentication ("pwd", "otp"),
	// ACR its level ("pwd" or "mfa") and AuthTime when it happened (unix
	// seconds): the session's, kept by a refresh.
	AMR      []string `json:"amr"`
	ACR      string   `json:"acr"`
	AuthTime int64    `json:"auth_time"`
}

// Grant is what a token response is made from.
type Grant struct {
	UserID       string
	TenantID     string
	SessionID    string
	TokenVersion int64
	RefreshToken string
	// AMR and AuthTime describe the session's authentication (see
	// sessionAuth); nil AMR is a password sign-in happening now.
	AMR      []string
	AuthTime int64
	// SessionEnds is when the session ends (unix seconds) unless
	// refreshed again, as the step that renewed it (a rotation, a
	// reissue) set it: the access token expires then at the latest, so
	// that none outlives the session's SESSION_MAX_AGE. 0: no bound (a
	// session just opened, whose end is further off than an access
	// token's lifetime).
	SessionEnds int64
}

// TokenResponse is the OAuth 2.0 token response (plus tenant_id; signup
// adds the user and the tenant).
type TokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	TenantID     string `json:"tenant_id"`
	User         any    `json:"user,omitempty"`
	Tenant       any    `json:"tenant,omitempty"`
}

// Issue signs an access token for g's session and builds the token
// response, then holds the session live (sessions.Store.HoldLive): a
// revocation (a sign-out, a sign-out everywhere, a password change or
// reset, a member's removal) that committed after the caller created,
// rotated or reissued the session and before the signing would otherwise
// leave a token issued after revoked_at, which outlives the projection's
// revoked list (listed for one access-token lifetime plus
// TOKEN_MAX_LEEWAY from revoked_at). A session ended meanwhile is
// answered with ended(), the caller's answer to an ended session, and no
// token. Every path that signs a session's access token goes through
// here; the cost is one read of the session's row by its primary key.
func (s *Service) Issue(ctx context.Context, g Grant, ended func() error) (TokenResponse, error) {
	if s.beforeIssue != nil {
		s.beforeIssue(g.SessionID)
	}
	tr, err := s.sign(g)
	if err != nil {
		return TokenResponse{}, err
	}
	err = s.sessions.HoldLive(ctx, g.UserID, g.SessionID)
	if errors.Is(err, sessions.ErrRevoked) {
		return TokenResponse{}, ended()
	}
	if err != nil {
		return TokenResponse{}, err
	}
	return tr, nil
}

// sign signs an access token for g and builds the token response.
func (s *Service) sign(g Grant) (TokenResponse, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return TokenResponse{}, fmt.Errorf("read random: %w", err)
	}
	now := s.now().Unix()
	ttl := int64(s.accessTTL / time.Second)
	if g.SessionEnds > 0 {
		// At least a second, should this process's clock run ahead of
		// the database's (whose the session's end is, and which HoldLive
		// checks after the signing).
		ttl = max(min(ttl, g.SessionEnds-now), 1)
	}
	amr, authTime := g.AMR, g.AuthTime
	if amr == nil {
		amr = amrPassword()
	}
	if authTime == 0 {
		authTime = now
	}
	payload, err := json.Marshal(Claims{
		Issuer: s.issuer, Audience: s.audience,
		Subject: g.UserID, TenantID: g.TenantID, SessionID: g.SessionID, TokenVersion: g.TokenVersion,
		IssuedAt: now, NotBefore: now, Expires: now + ttl,
		ID:  base64.RawURLEncoding.EncodeToString(jti[:]),
		AMR: amr, ACR: acrOf(amr), AuthTime: authTime,
	})
	if err != nil {
		return TokenResponse{}, fmt.Errorf("encode claims: %w", err)
	}
	tok, err := s.keys.Sign(payload)
	if err != nil {
		return TokenResponse{}, err
	}
	return TokenResponse{
		AccessToken: string(tok), TokenType: "Bearer", ExpiresIn: ttl,
		RefreshToken: g.RefreshToken, TenantID: g.TenantID,
	}, nil
}

// SweepLoginAttempts deletes attempt counts whose window and lock have
// both passed. Passwords and second-factor codes share login_attempts, so
// it sweeps with the longer window of the two (the codes', CodeWindow): a
// password's count is over after its own window whether or not its row
// is still there, but a code's count swept after the passwords' window
// would start over.
func (s *Service) SweepLoginAttempts(ctx context.Context) (int64, error) {
	return s.codeAttempts.Sweep(ctx)
}

// SweepSessions runs, every interval until ctx ends, the deletes of the
// sign-in state: sessions that ended more than keep ago, stale sign-in
// attempt counts and expired MFA challenges.
func (s *Service) SweepSessions(ctx context.Context, every, keep time.Duration) error {
	return sweep.Every(ctx, every, s.log, slog.LevelInfo,
		sweep.Task{Name: "sessions", Run: func(ctx context.Context) (int64, error) { return s.sessions.Sweep(ctx, keep) }},
		sweep.Task{Name: "login attempts", Run: s.SweepLoginAttempts},
		sweep.Task{Name: "mfa challenges", Run: s.SweepChallenges})
}
