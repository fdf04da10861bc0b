package serviceaccounts

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
	"github.com/tollgate-auth/tollgate/coreapi/internal/projection"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/jwtclaims"
)

// maxToken bounds a token coreapi will look at (the proxy's default).
const maxToken = 8192

// errInactive: the token is not an active access token of ours (invalid,
// expired, revoked, or its account, membership or tenant not active).
// Introspection tells no more than that.
var errInactive = errors.New("token not active")

// tokenInfo is what introspection reports about an active access token.
type tokenInfo struct {
	Subject, TenantID, SessionID, Principal, ClientID, ID string
	IssuedAt, NotBefore, Expires                          int64
	Permissions                                           []string
}

// looksLikeJWT: three non-empty dot-separated parts.
func looksLikeJWT(tok string) bool {
	parts := strings.Split(tok, ".")
	return len(parts) == 3 && parts[0] != "" && parts[1] != "" && parts[2] != ""
}

// inspect verifies an access token the way the proxy does (each segment
// in the signer's spelling, typ at+jwt, no key-bearing headers, a
// published kid whose algorithm is the header's, the signature, issuer,
// audience, exp/nbf/iat with leeway, lifetime, id claims, principal) and then checks it against the database as the
// proxy's projection does (user, membership and tenant active, the
// tenant's MFA policy, token version, session not revoked: here any
// revoked or expired session, not only recently revoked ones). Any failure is errInactive; other errors are the
// database's.
func (s *Service) inspect(ctx context.Context, tok string) (tokenInfo, error) {
	if len(tok) > maxToken || !looksLikeJWT(tok) {
		return tokenInfo{}, errInactive
	}
	parts := strings.SplitN(tok, ".", 3)
	h, err := jwtclaims.ParseHeader([]byte(parts[0]))
	if err != nil {
		return tokenInfo{}, errInactive
	}
	// The token as coreapi wrote it, not another base64 spelling of its
	// payload or signature, which the JWS library would verify too.
	if !jwtclaims.CanonicalSegment([]byte(parts[1])) || !jwtclaims.CanonicalSegment([]byte(parts[2])) {
		return tokenInfo{}, errInactive
	}
	key, alg, ok := s.o.Keys.PublicKey(h.Kid)
	// The algorithm is the key's, never the token's choice.
	if !ok || h.Alg != alg {
		return tokenInfo{}, errInactive
	}
	body, err := jws.Verify([]byte(tok), jws.WithKey(jwa.SignatureAlgorithm(alg), key))
	if err != nil {
		return tokenInfo{}, errInactive
	}
	var p jwtclaims.Payload
	if err := jwtclaims.DecodePayload(body, &p); err != nil {
		return tokenInfo{}, errInactive
	}
	if p.Iss != s.o.Issuer || !jwtclaims.HasAudience(p.Aud, s.o.Audience) {
		return tokenInfo{}, errInactive
	}
	info := tokenInfo{Subject: p.Sub, TenantID: p.Tid, SessionID: p.Sid, ID: p.Jti}
	if info.Expires, ok = jwtclaims.NumericDate(p.Exp); !ok {
		return tokenInfo{}, errInactive
	}
	if info.IssuedAt, ok = jwtclaims.NumericDate(p.Iat); !ok {
		return tokenInfo{}, errInactive
	}
	if p.Nbf != nil {
		if info.NotBefore, ok = jwtclaims.NumericDate(p.Nbf); !ok {
			return tokenInfo{}, errInactive
		}
	}
	if p.TV == nil {
		return tokenInfo{}, errInactive
	}
	tv, err := p.TV.Int64()
	if err != nil || tv < 0 {
		return tokenInfo{}, errInactive
	}
	switch {
	case p.Principal == nil && ids.Valid(p.Sid):
		info.Principal = identity.PrincipalUser
	case p.Principal != nil && *p.Principal == identity.PrincipalService && p.Sid == "":
		info.Principal, info.ClientID = identity.PrincipalService, p.ClientID
	default:
		return tokenInfo{}, errInactive
	}
	if !ids.Valid(p.Sub) || !ids.Valid(p.Tid) {
		return tokenInfo{}, errInactive
	}
	if info.Expires <= info.IssuedAt || time.Duration(info.Expires-info.IssuedAt)*time.Second > s.o.MaxLifetime {
		return tokenInfo{}, errInactive
	}
	now, lw := s.o.Now(), s.o.Leeway
	if !now.Before(time.Unix(info.Expires, 0).Add(lw)) ||
		(info.NotBefore != 0 && now.Before(time.Unix(info.NotBefore, 0).Add(-lw))) ||
		now.Before(time.Unix(info.IssuedAt, 0).Add(-lw)) {
		return tokenInfo{}, errInactive
	}
	pr, err := s.o.Projections.Get(ctx, p.Sub, p.Tid)
	if errors.Is(err, projection.ErrNotFound) {
		return tokenInfo{}, errInactive
	}
	if err != nil {
		return tokenInfo{}, err
	}
	if !pr.Active() || tv < pr.TokenVersion || pr.SessionRevoked(p.Sid) {
		return tokenInfo{}, errInactive
	}
	if info.Principal == identity.PrincipalUser {
		// A tenant that requires a second factor confines a member who
		// has none to enrolling one, as the proxy does (403
		// mfa_enrollment_required on every other route): the token is
		// good for nothing an app serves. A service account has no
		// factor to enrol and is exempt, as at the proxy.
		if pr.TenantRequireMFA && !pr.MFAEnabled {
			return tokenInfo{}, errInactive
		}
		live, err := s.sessionLive(ctx, p.Sid, p.Sub, p.Tid)
		if err != nil {
			return tokenInfo{}, err
		}
		if !live {
			return tokenInfo{}, errInactive
		}
	}
	info.Permissions = pr.Permissions
	if p.Scope != nil {
		// Split as the grant writes it and the proxy reads it (U+0020
		// only): a token holding another separator is not one coreapi
		// issued.
		scope, err := parseScope(*p.Scope)
		if err != nil {
			return tokenInfo{}, errInactive
		}
		info.Permissions = slices.DeleteFunc(slices.Clone(pr.Permissions), func(perm string) bool { return !slices.Contains(scope, perm) })
	}
	return info, nil
}

// sessionLive reports whether the session is the user's live session in
// tenantID (sessions.QLiveIn: not revoked, not expired, not stamped with
// an older token version than the user's, and not moved to another
// tenant by POST /auth/switch-tenant since the token was issued). An
// access token issued by the last refresh before the session's expiry
// outlives it at the proxy; here it ends with it. So does one issued
// before a switch: its tenant is no longer the session's, as coreapi's
// own sensitive writes judge it (sessions.LiveIn).
func (s *Service) sessionLive(ctx context.Context, sid, userID, tenantID string) (bool, error) {
	const q = `SELECT EXISTS (SELECT 1 FROM sessions WHERE ` + sessions.QLiveIn + `)`
	var live bool
	if err := s.o.Pool.QueryRow(ctx, q, sid, userID, tenantID).Scan(&live); err != nil {
		return false, fmt.Errorf("check session: %w", err)
	}
	return live, nil
}
