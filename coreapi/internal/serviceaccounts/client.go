package serviceaccounts

import (
	"encoding/base64"
	"errors"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oautherr"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// basicChallenge is the WWW-Authenticate of a 401 invalid_client.
const basicChallenge = `Basic realm="tollgate", charset="UTF-8"`

// credentials are the client credentials of a request.
type credentials struct {
	id, secret string
	basic      bool // sent with HTTP Basic
}

// maxCredential bounds a client id or secret (ours are 36 and 48 bytes).
const maxCredential = 256

// readCredentials takes the client credentials from HTTP Basic (RFC 6749
// section 2.3.1: each part form-urlencoded, then base64) or from the body
// fields; both at once (a client_secret beside Basic) is invalid_request.
// A client_id in the body beside Basic only names the client (section
// 3.2.1; several libraries always send it): it must be the Basic one. An
// Authorization header of another scheme is not client authentication
// (the proxy replaces a bearer with identity headers anyway).
func readCredentials(c *fiber.Ctx, bodyID, bodySecret string) (credentials, error) {
	h := c.Get(fiber.HeaderAuthorization)
	scheme, rest, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Basic") {
		return credentials{id: bodyID, secret: bodySecret}, nil
	}
	if bodySecret != "" {
		return credentials{}, oautherr.Problem(fiber.StatusBadRequest, problem.CodeInvalidRequest,
			"send client credentials either with HTTP Basic or in the body, not both")
	}
	bad := func() (credentials, error) {
		return credentials{basic: true}, invalidClient(c, true, "malformed HTTP Basic credentials")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
	if err != nil || len(raw) > 2*maxCredential {
		return bad()
	}
	id, secret, ok := strings.Cut(string(raw), ":")
	if !ok {
		return bad()
	}
	if id, err = url.QueryUnescape(id); err != nil {
		return bad()
	}
	if secret, err = url.QueryUnescape(secret); err != nil {
		return bad()
	}
	if bodyID != "" && bodyID != id {
		return credentials{}, oautherr.Problem(fiber.StatusBadRequest, problem.CodeInvalidRequest,
			"the client_id in the body is not the client of the HTTP Basic credentials")
	}
	return credentials{id: id, secret: secret, basic: true}, nil
}

// invalidClient is the 401 invalid_client answer; with a Basic challenge
// when the client used Basic or sent nothing (RFC 6749 section 5.2).
func invalidClient(c *fiber.Ctx, challenge bool, detail string) error {
	if challenge {
		c.Set(fiber.HeaderWWWAuthenticate, basicChallenge)
	}
	return oautherr.Problem(fiber.StatusUnauthorized, problem.CodeInvalidClient, detail)
}

// authenticate checks the client credentials of a request: reserved
// against the per-(client id, client IP) limit before the secret is
// checked, released when it is right. Failures are audited in the
// tenant of the account the client id names.
func (s *Service) authenticate(c *fiber.Ctx, cr credentials) (Client, error) {
	if cr.id == "" && cr.secret == "" {
		return Client{}, invalidClient(c, true, "client authentication is required (HTTP Basic or client_id and client_secret)")
	}
	if cr.id == "" || cr.secret == "" {
		return Client{}, invalidClient(c, cr.basic, "client_id and client_secret are both required")
	}
	if len(cr.id) > maxCredential || len(cr.secret) > maxCredential {
		return Client{}, invalidClient(c, cr.basic, "client authentication failed")
	}
	ctx := c.UserContext()
	ip := httpapi.ClientIP(c)
	// The client IP's budget over every client id, and the client id's
	// from that IP, in one statement: a refusal of the first writes no
	// row of the client id's own.
	ipKey := ratelimit.Key("client_credentials_ip", ratelimit.ClientKey(ip))
	key := ratelimit.Key("client_credentials", strings.ToLower(cr.id), ratelimit.ClientKey(ip))
	hits, ok, retry, err := s.o.Limiter.AllowBoth(ctx, ipKey, s.o.Limits.ClientIP, key, s.o.Limits.Client)
	if err != nil {
		return Client{}, err
	}
	if !ok {
		s.warnRefusal("client authentication locked", "client_id", safeID(cr.id), "client_ip", ip, "request_id", httpapi.RequestIDOf(c))
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(ratelimit.Seconds(retry)))
		return Client{}, oautherr.Problem(fiber.StatusTooManyRequests, problem.CodeTooManyRequests,
			"too many failed client authentications; retry later")
	}
	var (
		cl    Client
		found bool
	)
	if id, valid := ids.Parse(cr.id); valid {
		cl, found, err = s.store.Lookup(ctx, id, cr.secret)
		if err != nil {
			return Client{}, err
		}
	}
	if !found {
		if cl.TenantID != "" { // an existing account, a wrong secret
			s.auditFailure(c, cl)
		}
		return Client{}, invalidClient(c, cr.basic, "client authentication failed")
	}
	if err := s.o.Limiter.ReleaseBoth(ctx, hits); err != nil {
		return Client{}, err
	}
	return cl, nil
}

// warnRefusal writes a warning about a refused client authentication,
// at most RefusalLogsPerSecond a second: a client sends as many as it
// likes, and at LOG_LEVEL=warn each was a line (the access lines are not).
func (s *Service) warnRefusal(msg string, args ...any) {
	if s.refusalLogs.Allow(time.Now(), slog.LevelWarn) {
		s.o.Logger.Warn(msg, args...)
	}
}

// safeID is a client id fit for a log line (it came from the client).
func safeID(id string) string {
	if ids.Valid(id) {
		return id
	}
	return "(malformed)"
}

// auditFailure records a wrong secret for an existing service account, at
// most Limits.AuditFailures of them an account in a window; a failure beyond
// is logged instead. An error here is logged, not answered: the client's
// answer stays the same.
func (s *Service) auditFailure(c *fiber.Ctx, cl Client) {
	ctx := c.UserContext()
	rid := strings.Clone(httpapi.RequestIDOf(c))
	err := pgx.BeginFunc(ctx, s.o.Pool, func(tx pgx.Tx) error {
		ok, _, err := ratelimit.AllowIn(ctx, tx, ratelimit.Key("client_credentials_audit", cl.ID), s.o.Limits.AuditFailures)
		if err != nil {
			return err
		}
		if !ok {
			s.warnRefusal("client authentication failed (not audited: the account's failures fill its audit budget)",
				"service_account_id", cl.ID, "tenant_id", cl.TenantID, "client_ip", httpapi.ClientIP(c), "request_id", rid)
			return nil
		}
		return audit.Write(ctx, tx, audit.Event{TenantID: cl.TenantID, Action: ActionAuthFailed, TargetType: "service_account",
			TargetID: cl.ID, Data: map[string]string{"client_ip": httpapi.ClientIP(c), "path": strings.Clone(c.Path())}, RequestID: rid})
	})
	if err != nil && !errors.Is(err, ctx.Err()) {
		s.o.Logger.Error("audit client authentication failure", "err", err, "request_id", rid)
	}
}
