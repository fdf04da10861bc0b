package serviceaccounts

import (
	"errors"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oautherr"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/projection"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// tokenQuery is the body of an introspection or revocation request
// (form-encoded as the RFCs say, or JSON); in either, a parameter sent
// more than once is invalid_request (RFC 6749 section 3.1).
type tokenQuery struct {
	Token         string `json:"token"`
	TokenTypeHint string `json:"token_type_hint"`
	ClientID      string `json:"client_id"`
	ClientSecret  string `json:"client_secret"`
}

func decodeQuery(c *fiber.Ctx) (tokenQuery, error) {
	if err := httpapi.CheckCoding(c); err != nil {
		return tokenQuery{}, err
	}
	ct, err := httpapi.MediaType(c)
	if err != nil {
		return tokenQuery{}, err
	}
	if ct == fiber.MIMEApplicationForm {
		var f tokenQuery // apart from q, which the JSON decoder moves to the heap
		// A parameter sent twice is invalid_request (RFC 6749 section 3.1).
		err := httpapi.ReadPostForm(c, []httpapi.FormField{
			{Name: "token", Dst: &f.Token}, {Name: "token_type_hint", Dst: &f.TokenTypeHint},
			{Name: "client_id", Dst: &f.ClientID}, {Name: "client_secret", Dst: &f.ClientSecret},
		})
		if err != nil {
			return tokenQuery{}, err
		}
		return f, nil
	}
	var q tokenQuery
	if err := httpapi.DecodeJSONOnce(c, &q); err != nil {
		var p *problem.Problem
		if errors.As(err, &p) && p.Status == fiber.StatusUnsupportedMediaType {
			return q, problem.New(fiber.StatusUnsupportedMediaType, problem.CodeUnsupportedMedia,
				"send the body as application/x-www-form-urlencoded or application/json")
		}
		return q, err
	}
	return q, nil
}

// client reads and checks the request's client credentials; the account
// and its tenant must be active (else invalid_client). A failure to read
// whether they are is the server's error, answered as such.
func (s *Service) client(c *fiber.Ctx, q tokenQuery) (Client, error) {
	cr, err := readCredentials(c, q.ClientID, q.ClientSecret)
	if err != nil {
		return Client{}, err
	}
	cl, err := s.authenticate(c, cr)
	if err != nil {
		return Client{}, err
	}
	p, err := s.o.Projections.Get(c.UserContext(), cl.ID, cl.TenantID)
	switch {
	case errors.Is(err, projection.ErrNotFound), err == nil && !p.Active():
		return Client{}, invalidClient(c, cr.basic, "the client or its tenant is not active")
	case err != nil:
		// The server's failure, not the client's (a database gone away
		// is 503): never told as wrong credentials.
		return Client{}, err
	}
	return cl, nil
}

// introspection is the RFC 7662 answer for an active token.
type introspection struct {
	Active    bool   `json:"active"`
	Scope     string `json:"scope"`
	ClientID  string `json:"client_id,omitempty"`
	TokenType string `json:"token_type"`
	Exp       int64  `json:"exp"`
	Iat       int64  `json:"iat"`
	Nbf       int64  `json:"nbf,omitempty"`
	Sub       string `json:"sub"`
	Aud       string `json:"aud"`
	Iss       string `json:"iss"`
	Jti       string `json:"jti,omitempty"`
	// TenantID is the token's tenant (its tid claim); Principal "user" or
	// "service"; SessionID the session of a user's token.
	TenantID  string `json:"tenant_id"`
	Principal string `json:"principal"`
	SessionID string `json:"session_id,omitempty"`
}

// introspect: POST /api/v1/auth/introspect (RFC 7662).
func (s *Service) introspect(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	q, err := decodeQuery(c)
	if err != nil {
		return err
	}
	cl, err := s.client(c, q)
	if err != nil {
		return err
	}
	if q.Token == "" {
		return oautherr.Problem(fiber.StatusBadRequest, problem.CodeInvalidRequest, "token is required")
	}
	info, err := s.inspect(c.UserContext(), q.Token)
	// Another tenant's token is described to nobody but its own tenant.
	if errors.Is(err, errInactive) || err == nil && info.TenantID != cl.TenantID {
		return c.JSON(fiber.Map{"active": false})
	}
	if err != nil {
		return err
	}
	return c.JSON(introspection{
		Active: true, Scope: strings.Join(info.Permissions, " "), ClientID: info.ClientID, TokenType: "Bearer",
		Exp: info.Expires, Iat: info.IssuedAt, Nbf: info.NotBefore, Sub: info.Subject, Aud: s.o.Audience, Iss: s.o.Issuer,
		Jti: info.ID, TenantID: info.TenantID, Principal: info.Principal, SessionID: info.SessionID,
	})
}

// revoke: POST /api/v1/auth/revoke (RFC 7009). Refresh tokens end their
// session; API keys (their whole format, apikey.Parse) go to the API-key
// revoker; a valid access token is unsupported_token_type (they are
// short-lived: revoke the refresh token, or the session); anything else,
// and any token of another tenant, is answered 200 with nothing revoked.
// token_type_hint is read but never trusted: every kind is tried by the
// token's shape.
//
// A request without client credentials (at most a client_id naming no
// service account) comes from a public client (an app a user signed in
// to): the refresh grant asks it for none, so neither does the
// revocation of a refresh token, which ends the token's session in
// whatever tenant (its holder could end it by replaying the token at the
// token endpoint anyway; a token rotated before the grace window ends it
// as a reuse here too, see revokeRefresh). Such a client can thus sign
// out when its access token has expired. An unknown token gets the same 200; what is shaped as an
// access token or an API key still needs client authentication.
func (s *Service) revoke(c *fiber.Ctx) error {
	q, err := decodeQuery(c)
	if err != nil {
		return err
	}
	if holder, err := s.holderRevocation(c, q); err != nil || holder {
		return err
	}
	cl, err := s.client(c, q)
	if err != nil {
		return err
	}
	if q.Token == "" {
		return oautherr.Problem(fiber.StatusBadRequest, problem.CodeInvalidRequest, "token is required")
	}
	ctx := c.UserContext()
	_, isKey := apikey.Parse([]byte(q.Token))
	switch {
	case isKey:
		// An API key's whole format, not only its prefix: a refresh
		// token is 43 base64url characters, "_" among them, and about
		// one in 262,144 starts with "tg_" (it went to the API-key
		// revoker, which found no key in it, and its session stayed).
		if s.o.APIKeys != nil {
			if _, err := s.o.APIKeys.RevokeAPIKey(ctx, cl.TenantID, q.Token, cl.ID, strings.Clone(httpapi.RequestIDOf(c))); err != nil {
				return err
			}
		}
	case looksLikeJWT(q.Token):
		info, err := s.inspect(ctx, q.Token)
		if err != nil && !errors.Is(err, errInactive) {
			return err
		}
		if err == nil && info.TenantID == cl.TenantID {
			return oautherr.Problem(fiber.StatusBadRequest, problem.CodeUnsupportedTokenType,
				"access tokens are not revoked one by one (they are short-lived): revoke the refresh token")
		}
	default:
		if err := s.revokeRefresh(c, cl.TenantID, cl.ID, q.Token); err != nil {
			return err
		}
	}
	// RFC 7009 section 2.2: 200; the body is ignored, so none is sent.
	c.Status(fiber.StatusOK)
	return nil
}

// holderRevocation revokes, for a request without client credentials, the
// refresh token it names (see revoke) and answers 200: holder is true
// when it did. A request with credentials, without a token, or with a
// token shaped as an access token or an API key is left to the client
// authentication (holder false, nothing answered).
//
// A client_id alone, without a secret, is a public client naming itself
// (RFC 6749 section 2.3; many libraries send it): a request whose
// client_id names no service account is the holder's. One that names a
// service account (a confidential client) without its secret is left to
// the client authentication, which refuses it.
func (s *Service) holderRevocation(c *fiber.Ctx, q tokenQuery) (holder bool, err error) {
	if q.Token == "" {
		return false, nil
	}
	// A bearer is no client authentication (readCredentials): a client
	// whose access token expired may still send it.
	cr, err := readCredentials(c, q.ClientID, q.ClientSecret)
	if err != nil || cr.basic || cr.secret != "" {
		return false, nil
	}
	if _, isKey := apikey.Parse([]byte(q.Token)); isKey || looksLikeJWT(q.Token) {
		return false, nil
	}
	if confidential, err := s.confidential(c, cr.id); err != nil || confidential {
		return false, err
	}
	if err := s.revokeRefresh(c, "", "", q.Token); err != nil {
		return true, err
	}
	c.Status(fiber.StatusOK)
	return true, nil
}

// confidential tells whether a client id names a service account, a
// confidential client, whatever the state of the account or its secrets.
func (s *Service) confidential(c *fiber.Ctx, clientID string) (bool, error) {
	id, valid := ids.Parse(clientID)
	if !valid {
		return false, nil
	}
	cl, _, err := s.store.Lookup(c.UserContext(), id, "")
	return cl.TenantID != "", err
}

// revokeRefresh ends the session of a refresh token (any token of the
// session's rotation chain names it): of tenantID's sessions only, for a
// client of that tenant acting as actorID; of any tenant when tenantID is
// "" (the token's holder revokes it: the session's user is the actor).
// A token rotated (or ended by a reissue) before the grace window is a
// reuse, as at the token endpoint: whoever presents it holds a token
// left behind in the chain, not the session, so the session ends as a
// reuse, audited with the request and its client IP
// (sessions.RevokeForReuse), never as a sign-out of the user's own.
func (s *Service) revokeRefresh(c *fiber.Ctx, tenantID, actorID, tok string) error {
	if len(tok) > maxToken {
		return nil
	}
	ctx := c.UserContext()
	rid := strings.Clone(httpapi.RequestIDOf(c))
	return pgx.BeginFunc(ctx, s.o.Pool, func(tx pgx.Tx) error {
		h, ok, err := s.o.Sessions.FindHolder(ctx, tx, tok)
		if err != nil || !ok || tenantID != "" && h.TenantID != tenantID {
			return err // another tenant's session: untouched, answered alike
		}
		sid, uid, tid := h.SessionID, h.UserID, h.TenantID
		if h.Reused {
			return sessions.RevokeForReuse(ctx, tx, sid, uid, tid, sessions.Presenter{RequestID: rid, IP: httpapi.ClientIP(c)})
		}
		reason := sessions.ReasonRevoked
		if actorID == "" {
			actorID, reason = uid, sessions.ReasonLogout
		}
		n, err := s.o.Sessions.Revoke(ctx, tx, uid, sid, reason)
		if err != nil || n == 0 {
			return err
		}
		if err := audit.Write(ctx, tx, audit.Event{TenantID: tid, ActorUserID: actorID, Action: ActionTokenRevoked,
			TargetType: "session", TargetID: sid, Data: map[string]string{"user_id": uid, "token_type": "refresh_token"}, RequestID: rid}); err != nil {
			return err
		}
		return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(uid), Reason: invalidation.ReasonSessionRevoked})
	})
}
