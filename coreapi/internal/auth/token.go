package auth

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

type tokenRequest struct {
	GrantType    string `json:"grant_type"`
	Email        string `json:"email"`
	Username     string `json:"username"` // RFC 6749 name of the same field
	Password     string `json:"password"`
	TenantID     string `json:"tenant_id"`
	RefreshToken string `json:"refresh_token"`
	Code         string `json:"code"`          // grant_type=oauth_handover, mfa_otp
	MFAToken     string `json:"mfa_token"`     // grant_type=mfa_otp
	CodeVerifier string `json:"code_verifier"` // grant_type=oauth_handover
	RedirectURI  string `json:"redirect_uri"`  // grant_type=oauth_handover
	Scope        string `json:"scope"`         // client_credentials; accepted, ignored by the others
	ClientID     string `json:"client_id"`     // client_credentials; accepted, ignored by the others
	ClientSecret string `json:"client_secret"` // client_credentials
}

func invalidRequest(detail string, fields ...problem.FieldError) *problem.Problem {
	p := problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest, detail)
	p.Errors = fields
	return p
}

// decodeToken reads a token request as JSON or as
// application/x-www-form-urlencoded (RFC 6749 §4.3, §6); in either, a
// parameter sent more than once is invalid_request (§3.1).
func decodeToken(c *fiber.Ctx) (tokenRequest, error) {
	if err := httpapi.CheckCoding(c); err != nil {
		return tokenRequest{}, err
	}
	ct, err := httpapi.MediaType(c)
	if err != nil {
		return tokenRequest{}, err
	}
	if ct == fiber.MIMEApplicationForm {
		var f tokenRequest // apart from req, which the JSON decoder moves to the heap
		// A parameter sent twice is invalid_request (RFC 6749 section 3.1).
		err := httpapi.ReadPostForm(c, []httpapi.FormField{
			{Name: "grant_type", Dst: &f.GrantType}, {Name: "email", Dst: &f.Email}, {Name: "username", Dst: &f.Username},
			{Name: "password", Dst: &f.Password}, {Name: "tenant_id", Dst: &f.TenantID}, {Name: "refresh_token", Dst: &f.RefreshToken},
			{Name: "code", Dst: &f.Code}, {Name: "mfa_token", Dst: &f.MFAToken}, {Name: "code_verifier", Dst: &f.CodeVerifier},
			{Name: "redirect_uri", Dst: &f.RedirectURI},
			{Name: "scope", Dst: &f.Scope}, {Name: "client_id", Dst: &f.ClientID}, {Name: "client_secret", Dst: &f.ClientSecret},
		})
		if err != nil {
			return tokenRequest{}, err
		}
		return f, nil
	}
	var req tokenRequest
	if err := httpapi.DecodeJSONOnce(c, &req); err != nil {
		var p *problem.Problem
		if errors.As(err, &p) && p.Status == fiber.StatusUnsupportedMediaType {
			return req, problem.New(fiber.StatusUnsupportedMediaType, problem.CodeUnsupportedMedia,
				"send the body as application/json or application/x-www-form-urlencoded")
		}
		return req, err
	}
	return req, nil
}

// grantFunc answers a token request of one grant_type.
type grantFunc func(s *Service, c *fiber.Ctx, req tokenRequest) (TokenResponse, error)

// tokenGrant is one grant_type of the token endpoint.
type tokenGrant struct {
	name  string
	grant grantFunc
}

// grantTypes are the token endpoint's grants, in the order its errors
// name them. A grant lives in a file of its own and adds itself here with
// one line.
func grantTypes() []tokenGrant {
	return []tokenGrant{
		{"password", (*Service).passwordGrant},
		{"refresh_token", (*Service).refreshGrant},
		{"oauth_handover", (*Service).handoverGrant},
		{"mfa_otp", (*Service).mfaGrant},
		{"client_credentials", (*Service).clientCredentialsGrant},
	}
}

// unknownGrant answers a missing or unsupported grant_type, naming the
// grants there are ("a, b or c").
func unknownGrant(grantType string) error {
	var list strings.Builder
	grants := grantTypes()
	for i, g := range grants {
		switch {
		case i == 0:
		case i == len(grants)-1:
			list.WriteString(" or ")
		default:
			list.WriteString(", ")
		}
		list.WriteString(g.name)
	}
	if grantType == "" {
		return invalidRequest("grant_type is required", problem.FieldError{Field: "grant_type", Message: "required: " + list.String()})
	}
	return problem.New(fiber.StatusBadRequest, problem.CodeUnsupportedGrantType, "grant_type must be "+list.String())
}

func (s *Service) token(c *fiber.Ctx) error {
	// RFC 6749 §5.1: token responses must not be cached.
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set("Pragma", "no-cache")
	req, err := decodeToken(c)
	if err != nil {
		return err
	}
	grants := grantTypes()
	i := slices.IndexFunc(grants, func(g tokenGrant) bool { return g.name == req.GrantType })
	if i < 0 {
		return unknownGrant(req.GrantType)
	}
	resp, err := grants[i].grant(s, c, req)
	if errors.Is(err, errResponseWritten) {
		return nil
	}
	if err != nil {
		var mr *mfaRequiredError
		if errors.As(err, &mr) {
			return mr.render(c)
		}
		var ra *retryAfterError
		if errors.As(err, &ra) {
			c.Set(fiber.HeaderRetryAfter, strconv.Itoa(ra.seconds))
			return ra.Problem
		}
		return err
	}
	return c.JSON(resp)
}

func (s *Service) passwordGrant(c *fiber.Ctx, req tokenRequest) (TokenResponse, error) {
	email, username := mail.Canonical(req.Email), mail.Canonical(req.Username)
	switch {
	case email == "":
		email = username
	case username != "" && !mail.SameAddress(username, email): // one address in two letter cases is one account (lower() compares them)
		// One field under two names (RFC 6749's and ours): two addresses
		// leave it unclear whose password this is.
		return TokenResponse{}, invalidRequest("email and username name the same field and differ; send one",
			problem.FieldError{Field: "username", Message: "differs from email"})
	}
	var missing []problem.FieldError
	if email == "" {
		missing = append(missing, problem.FieldError{Field: "email", Message: "required"})
	}
	if req.Password == "" {
		missing = append(missing, problem.FieldError{Field: "password", Message: "required"})
	}
	if len(missing) > 0 {
		return TokenResponse{}, invalidRequest("email and password are required", missing...)
	}
	if len(req.Password) > password.MaxBytes {
		return TokenResponse{}, errPasswordTooLong
	}
	if len(email) > mail.MaxStoredAddress {
		return TokenResponse{}, errBadCredentials
	}
	tid, err := req.namedTenant()
	if err != nil {
		return TokenResponse{}, err
	}
	ctx := c.UserContext()
	ua, ip := client(c)
	a, err := s.passwordLogin(ctx, email, req.Password, tid, ip)
	if err != nil {
		return TokenResponse{}, err
	}
	if err := s.passwordSecondFactor(ctx, a, tid != ""); err != nil {
		return TokenResponse{}, err
	}
	var issued sessions.Issued
	for {
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			var err error
			if issued, err = s.sessions.CreateAt(ctx, tx, a.UserID, *a.TenantID, ua, ip, a.TokenVersion); err != nil {
				return err
			}
			// A factor confirmed since passwordSecondFactor looked ended the
			// account's other sessions before this one existed: the sign-in
			// asks for it instead (factorActiveLocked).
			if on, err := factorActiveLocked(ctx, tx, a.UserID); err != nil {
				return err
			} else if on {
				return errFactorConfirmedMeanwhile
			}
			return nil
		})
		if !errors.Is(err, sessions.ErrNoMembership) || tid != "" {
			break
		}
		// The user was removed or disabled in the tenant this sign-in,
		// naming none, picked (or the tenant was suspended): it lands in
		// the next one, as a sign-in after the change does, and with none
		// left it is answered as that one is.
		next, perr := users.SignInTenant(ctx, s.pool, a.UserID)
		if errors.Is(perr, users.ErrNotFound) {
			return TokenResponse{}, s.goneOr(ctx, a.UserID, errNoMembership)
		}
		if perr != nil {
			return TokenResponse{}, perr
		}
		a.TenantID = &next
	}
	if errors.Is(err, errFactorConfirmedMeanwhile) {
		return TokenResponse{}, s.passwordChallenge(ctx, a, tid != "")
	}
	if errors.Is(err, sessions.ErrAccountDisabled) { // disabled, or deleted, since the check
		return TokenResponse{}, s.goneOr(ctx, a.UserID, errAccountDisabled)
	}
	if errors.Is(err, sessions.ErrNoMembership) { // removed or disabled in the tenant, or the account deleted, since the check
		return TokenResponse{}, s.goneOr(ctx, a.UserID, errNotMemberOf(*a.TenantID))
	}
	if err != nil {
		return TokenResponse{}, err
	}
	return s.Issue(ctx, Grant{UserID: a.UserID, TenantID: *a.TenantID, SessionID: issued.SessionID,
		TokenVersion: a.TokenVersion, RefreshToken: issued.RefreshToken, AuthTime: issued.AuthTime}, func() error { return errSignedOutMeanwhile })
}

// goneOr is the answer to a sign-in of userID refused after its password
// was checked: errBadCredentials when the account was deleted meanwhile
// (accountGone), else refusal.
func (s *Service) goneOr(ctx context.Context, userID string, refusal error) error {
	gone, err := accountGone(ctx, s.pool, userID)
	if err != nil {
		return err
	}
	if gone {
		return errBadCredentials
	}
	return refusal
}

// errSignedOutMeanwhile answers a sign-in whose new session was signed
// out (a sign-out everywhere, a password change or reset) before its
// access token was issued (see Service.Issue).
var errSignedOutMeanwhile = problem.New(fiber.StatusBadRequest, problem.CodeInvalidGrant,
	"the session was signed out before its tokens were issued; sign in again")

// errRefreshRevoked answers the refresh of a revoked session.
var errRefreshRevoked = problem.New(fiber.StatusBadRequest, problem.CodeInvalidGrant, sessions.ErrRevoked.Error())

// errRefreshOtherTenant answers a refresh naming another tenant than the
// one its session is signed in to.
var errRefreshOtherTenant = invalidRequest(
	"the refresh token's session is signed in to another tenant, and a refresh keeps it there: leave tenant_id out, or switch tenants with POST /api/v1/auth/switch-tenant",
	problem.FieldError{Field: "tenant_id", Message: "not the tenant of the refresh token's session"})

func (s *Service) refreshGrant(c *fiber.Ctx, req tokenRequest) (TokenResponse, error) {
	ctx := c.UserContext()
	if req.RefreshToken == "" {
		return TokenResponse{}, invalidRequest("refresh_token is required", problem.FieldError{Field: "refresh_token", Message: "required"})
	}
	// A refresh keeps the session's tenant. One that names another is
	// refused, its token left as it was: answered with tokens of the
	// session's tenant, a client that asked for another would act there
	// unawares.
	tid, err := req.namedTenant()
	if err != nil {
		return TokenResponse{}, err
	}
	r, err := s.sessions.RotateIn(ctx, req.RefreshToken, tid,
		sessions.Presenter{RequestID: strings.Clone(httpapi.RequestIDOf(c)), IP: httpapi.ClientIP(c)})
	switch {
	case errors.Is(err, sessions.ErrOtherTenant):
		return TokenResponse{}, errRefreshOtherTenant
	// An inactive account, membership or tenant (ErrInactive) is 400
	// invalid_grant too, not a sign-in's 403: RFC 6749 section 5.2 answers
	// a refresh token that may not be used so, and clients take it as
	// "sign in again", where the sign-in tells why.
	case errors.Is(err, sessions.ErrInvalidToken), errors.Is(err, sessions.ErrExpired),
		errors.Is(err, sessions.ErrRevoked), errors.Is(err, sessions.ErrReused), errors.Is(err, sessions.ErrInactive):
		return TokenResponse{}, problem.New(fiber.StatusBadRequest, problem.CodeInvalidGrant, err.Error())
	case err != nil:
		return TokenResponse{}, err
	}
	// A sign-out that committed since the rotation is answered as a
	// revoked session's refresh.
	return s.Issue(ctx, Grant{UserID: r.UserID, TenantID: r.TenantID, SessionID: r.SessionID,
		TokenVersion: r.TokenVersion, RefreshToken: r.RefreshToken, AMR: r.AMR, AuthTime: r.AuthTime,
		SessionEnds: r.Ends},
		func() error { return errRefreshRevoked })
}

// namedTenant is the tenant_id the request names, in canonical form, or
// "" when it names none; one that is not a UUID is 400 invalid_request.
// Every grant that takes tenant_id reads it here.
func (req *tokenRequest) namedTenant() (string, error) {
	if req.TenantID == "" {
		return "", nil
	}
	tid, ok := ids.Parse(req.TenantID)
	if !ok {
		return "", invalidRequest("tenant_id must be a UUID", problem.FieldError{Field: "tenant_id", Message: "must be a UUID"})
	}
	return tid, nil
}
