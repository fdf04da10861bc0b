// Package serviceaccounts is coreapi's machine access and its standard
// OAuth surface: service accounts (non-human members of one tenant holding
// roles) and their client secrets, the client_credentials grant of the
// token endpoint, the authorization-server metadata (RFC 8414, also served
// as openid-configuration), token introspection (RFC 7662) and revocation
// (RFC 7009).
//
// A service account is a users row of kind 'service' with a membership and
// roles, so the proxy's projections and every role and permission check
// treat it as a member; it has no password and a reserved address no mail
// or identity provider reaches, so it can never sign in as a person. Its
// access tokens carry the claim "principal": "service" and no session; the
// proxy forwards them with X-Auth-Principal: service.
//
// Introspection is the one place coreapi verifies a JWT itself, with its
// own keys and the proxy's checks; it describes only tokens of the calling
// client's tenant. Client authentication (HTTP Basic or body credentials,
// RFC 6749 section 2.3.1) is counted per (client id, client IP) before the
// secret is checked, like password sign-in, and failures are audited.
package serviceaccounts

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/keys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/projection"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/shared/logging"
)

// Audit actions of this package.
const (
	ActionCreated       = "service_account.created"
	ActionDeleted       = "service_account.deleted"
	ActionSecretCreated = "service_account.secret_created"
	ActionSecretDeleted = "service_account.secret_deleted"
	// ActionAuthFailed: a wrong secret for an existing service account (or
	// a client locked out for too many of them).
	ActionAuthFailed = "service_account.auth_failed"
	// ActionTokenRevoked: a client, or the token's holder (the session's
	// user as actor), revoked a refresh token (its session).
	ActionTokenRevoked = "token.revoked"
)

// Reasons of the invalidations this package publishes.
const (
	ReasonDeleted       = "service_account.deleted"
	ReasonSecretDeleted = "service_account.secret_deleted"
)

// APIKeyRevoker revokes a tenant's API key by its secret (RFC 7009 for
// "tg_" tokens). revoked is false, with a nil error, for a secret that is
// unknown, malformed or of another tenant. It writes its own audit event
// (actorID, the revoking service account, as its actor; requestID the
// request's) and invalidation.
type APIKeyRevoker interface {
	RevokeAPIKey(ctx context.Context, tenantID, secret, actorID, requestID string) (revoked bool, err error)
}

// Limits bound what a tenant creates and what a client's failed
// authentications cost (Options.Limits; a zero field takes its
// DefaultLimits value). They are each Service's own, so that the services
// of one process each keep what they were configured with.
type Limits struct {
	// AccountCreations bounds how many service accounts a tenant creates
	// in a window, deleted ones included. MaxAccounts counts live
	// accounts only, so without it a create-and-delete loop ran without
	// end, each account a user row, audit rows and, at its deletion, an
	// invalidation every proxy of the fleet receives and its keys
	// revoked. A creation refused by another check is not counted
	// (*ratelimit.Refused: 429, Retry-After).
	AccountCreations ratelimit.Limit
	// SecretCreations bounds how many client secrets are created for one
	// service account in a window, deleted ones included, and
	// TenantSecretCreations how many for all of a tenant's accounts (its
	// accounts come and go, each with a budget of its own). MaxSecrets
	// counts live secrets only, so without them a create-and-delete loop
	// ran without end, each deletion moving the account's token version
	// on, revoking its keys and sending every proxy of the fleet an
	// invalidation. A rotation needs one creation; both leave room for
	// many. A creation refused by another check is not counted
	// (*ratelimit.Refused: 429, Retry-After).
	SecretCreations       ratelimit.Limit
	TenantSecretCreations ratelimit.Limit
	// Client is how many failed client authentications one client IP
	// may make for one client id in a window before it must wait.
	Client ratelimit.Limit
	// ClientIP is how many failed client authentications one client IP
	// (an IPv6 client: its /64) may make in a window, whatever client ids
	// it names, before it must wait. Client's counter is a row per
	// (client id, client IP) kept two days after its window started:
	// without this one, a client naming a new client id in each request
	// added a row to rate_limits with each, as fast as it could send
	// them.
	ClientIP ratelimit.Limit
	// AuditFailures is how many failed client authentications of one
	// service account are audited in a window
	// (service_account.auth_failed), whichever client IPs send them;
	// those beyond are logged only. Client bounds each IP, and a client
	// with many addresses (an IPv6 host has a /64 per customer, a botnet
	// thousands) could otherwise write audit events into the account's
	// tenant without end, burying its admins' own.
	AuditFailures ratelimit.Limit
}

// DefaultLimits returns the limits a Service has unless its Options say
// otherwise: 100 service accounts a tenant an hour; 20 client secrets an
// account in 24 hours and 200 a tenant an hour; 10 failed
// authentications a client IP and client id and 100 a client IP in 15
// minutes; 20 audited failures an account an hour.
func DefaultLimits() Limits {
	return Limits{
		AccountCreations:      ratelimit.Limit{N: 100, Window: time.Hour},
		SecretCreations:       ratelimit.Limit{N: 20, Window: 24 * time.Hour},
		TenantSecretCreations: ratelimit.Limit{N: 200, Window: time.Hour},
		Client:                ratelimit.Limit{N: 10, Window: 15 * time.Minute},
		ClientIP:              ratelimit.Limit{N: 100, Window: 15 * time.Minute},
		AuditFailures:         ratelimit.Limit{N: 20, Window: time.Hour},
	}
}

// orDefault returns l with each zero field replaced by its default.
func (l Limits) orDefault() Limits {
	d := DefaultLimits()
	return Limits{
		AccountCreations:      l.AccountCreations.Or(d.AccountCreations),
		SecretCreations:       l.SecretCreations.Or(d.SecretCreations),
		TenantSecretCreations: l.TenantSecretCreations.Or(d.TenantSecretCreations),
		Client:                l.Client.Or(d.Client),
		ClientIP:              l.ClientIP.Or(d.ClientIP),
		AuditFailures:         l.AuditFailures.Or(d.AuditFailures),
	}
}

// Options configure a Service.
type Options struct {
	Logger      *slog.Logger
	Pool        *pgxpool.Pool
	Keys        *keys.Ring
	Sessions    *sessions.Store
	Projections *projection.Store
	Limiter     *ratelimit.Limiter
	// Catalog is the permission catalog (nil: built-in): the scopes.
	Catalog *permissions.Catalog
	// Issuer and Audience are those of the access tokens; AccessTTL the
	// lifetime of client_credentials tokens.
	Issuer    string
	Audience  string
	AccessTTL time.Duration
	// PublicBaseURL is where clients reach the API (through the proxy):
	// the endpoints of the metadata document are under it.
	PublicBaseURL string
	// Leeway is the clock skew introspection allows on exp, nbf and iat
	// (0: 30 s, the proxy's default); MaxLifetime the longest token it
	// accepts (0: 1 h, the proxy's default).
	Leeway      time.Duration
	MaxLifetime time.Duration
	// APIKeys revokes "tg_" tokens at the revocation endpoint; nil: they
	// are unknown tokens there (200, nothing revoked).
	APIKeys APIKeyRevoker
	// Now is the clock of tokens; nil: time.Now.
	Now func() time.Time
	// Limits bound creations and failed client authentications; a zero
	// field takes its DefaultLimits value.
	Limits Limits
}

// Service serves the routes of this package.
type Service struct {
	o       Options
	store   *Store
	cursors *httpapi.Cursors // set by Register
	// refusalLogs bounds the warnings about refused client
	// authentications, whose number a client decides.
	refusalLogs logging.Budget
}

// RefusalLogsPerSecond bounds the "client authentication locked" and
// "client authentication failed (not audited ...)" warnings written in
// one second, together; the others are counted in one line
// ("client authentication refusals not logged") with the next one let
// through.
const RefusalLogsPerSecond = 10

// New returns a Service.
func New(o Options) (*Service, error) {
	if o.Logger == nil || o.Pool == nil || o.Keys == nil || o.Sessions == nil || o.Projections == nil || o.Limiter == nil ||
		o.Issuer == "" || o.Audience == "" || o.AccessTTL <= 0 || o.PublicBaseURL == "" {
		return nil, errors.New("serviceaccounts: Logger, Pool, Keys, Sessions, Projections, Limiter, Issuer, Audience, AccessTTL and PublicBaseURL are required")
	}
	if o.Catalog == nil {
		o.Catalog = permissions.Builtin()
	}
	if o.Leeway <= 0 {
		o.Leeway = 30 * time.Second
	}
	if o.MaxLifetime <= 0 {
		o.MaxLifetime = time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.PublicBaseURL = strings.TrimRight(o.PublicBaseURL, "/")
	o.Limits = o.Limits.orDefault()
	s := &Service{o: o, store: NewStore(o.Pool, o.Catalog, o.Limits), refusalLogs: logging.Budget{PerSecond: RefusalLogsPerSecond}}
	s.refusalLogs.Report = logging.CountLine(o.Logger, "client authentication refusals not logged", RefusalLogsPerSecond)
	if _, err := s.buildMetadata(); err != nil {
		return nil, err
	}
	return s, nil
}

// Store is the service's store (tests and commands).
func (s *Service) Store() *Store { return s.store }
