// Package problem is the RFC 9457 problem+json error body used by both
// services, with a stable machine-readable code and the request id.
package problem

import (
	"encoding/json"
	"net/http"
	"slices"
)

// ContentType is the media type of a problem body.
const ContentType = "application/problem+json"

// Problem is an RFC 9457 problem details object.
type Problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Instance  string `json:"instance,omitempty"`
	Code      string `json:"code"`
	RequestID string `json:"request_id,omitempty"`
	// Errors lists per-field validation failures, when there are any.
	Errors []FieldError `json:"errors,omitempty"`
	// OAuthError and OAuthErrorDescription are the RFC 6749 section 5.2 fields, set
	// on the answers of the OAuth endpoints (token, introspection,
	// revocation) so that standard OAuth clients understand them.
	OAuthError            string `json:"error,omitempty"`
	OAuthErrorDescription string `json:"error_description,omitempty"`
}

// FieldError names one invalid field of a request body or query.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Error makes a Problem usable as an error value.
func (p *Problem) Error() string {
	if p.Detail != "" {
		return p.Code + ": " + p.Detail
	}
	return p.Code
}

// New returns a problem with the given status, code and detail. Title is
// the code's registered title, or the HTTP status text.
func New(status int, code, detail string) *Problem {
	return &Problem{
		Type:   "about:blank",
		Title:  title(status),
		Status: status,
		Code:   code,
		Detail: detail,
	}
}

// With returns a copy of p carrying a request id and instance path.
func (p *Problem) With(requestID, instance string) *Problem {
	q := *p
	q.RequestID = requestID
	q.Instance = instance
	return &q
}

// JSON encodes the problem; it never fails for this type.
func (p *Problem) JSON() []byte {
	b, _ := json.Marshal(p)
	return b
}

// Common codes, shared so clients can switch on them.
const (
	CodeBadRequest        = "bad_request"
	CodeValidation        = "validation_failed"
	CodeInvalidToken      = "invalid_token"
	CodeUnauthenticated   = "unauthenticated"
	CodeInsufficientScope = "insufficient_scope"
	CodeForbidden         = "forbidden"
	CodeNotFound          = "not_found"
	CodeMethodNotAllowed  = "method_not_allowed"
	CodeNotImplemented    = "not_implemented" // a request method the server does not know
	CodeConflict          = "conflict"
	CodeBodyTooLarge      = "body_too_large"
	CodeUnsupportedMedia  = "unsupported_media_type"
	CodeTooManyRequests   = "too_many_requests"
	CodeUpstreamDown      = "upstream_unavailable"
	CodeUnavailable       = "unavailable"
	CodeInternal          = "internal"
	CodeBadPath           = "bad_path"
	// CodeEmailUnverified: the route requires a verified email address.
	CodeEmailUnverified = "email_unverified"
	// CodePrincipalNotAllowed: the route acts on a person's own account
	// (sign-in, credentials, sessions, address, invitations, personal
	// keys) and the caller's principal (an API key, a service account) may
	// not use it, whatever its permissions (shared/accountroutes).
	CodePrincipalNotAllowed = "principal_not_allowed"
)

// Codes of coreapi's hardened flows.
const (
	// CodeOperatorOnly: the change is an operator action (a coreapi
	// command), not an API call (a tenant's status).
	CodeOperatorOnly = "operator_only"
	// CodeStateNotBound: an OAuth callback without the browser-binding
	// cookie of the flow it claims to finish.
	CodeStateNotBound = "state_not_bound"
	// CodeReturnToNotAllowed: an OAuth return_to that is missing or not on
	// OAUTH_ALLOWED_RETURN_URLS.
	CodeReturnToNotAllowed = "return_to_not_allowed"
	// CodeSchemaOutdated: the database schema is older than the code needs.
	CodeSchemaOutdated = "schema_outdated"
	// CodeCatalogRollout: 503 to a change that hands out or reshapes
	// privileges, made on a coreapi replica whose permission catalog is
	// not the one recorded last (a rollout under way): nothing changed;
	// retry after Retry-After, on a replica with the current catalog.
	CodeCatalogRollout = "catalog_rollout"

	// Account lifecycle.
	CodeEmailTaken          = "email_taken"
	CodeAlreadyVerified     = "email_already_verified"
	CodeLinkInvalid         = "link_invalid"
	CodeLinkExpired         = "link_expired"
	CodeInvitationMismatch  = "invitation_email_mismatch"
	CodeInvitationPending   = "invitation_pending"
	CodeInvitationNotActive = "invitation_not_pending"
	CodeAccountExists       = "account_exists"
	CodeVerifyBeforeLinking = "account_email_unverified"
	// CodeAccountProofRequired: a mailed verification link was used
	// without proof of holding the account it was sent for: the account's
	// password in the body, or that account's bearer token (the only proof
	// of an account without a password). The link stays usable.
	CodeAccountProofRequired = "account_proof_required"
	// CodeLinkAccountMismatch: a mailed link was used with the bearer
	// token of another account than the one it was sent for.
	CodeLinkAccountMismatch = "link_account_mismatch"
	// CodeAdminPasswordBeforeLinking: an OIDC sign-in found, or an
	// invitation's acceptance names, an account whose password a tenant
	// admin chose; its owner changes or resets it first.
	CodeAdminPasswordBeforeLinking = "account_password_set_by_admin"
	// CodeMFABeforeLinking: an OIDC sign-in found an account with an
	// active second factor, which no provider identity is linked to by
	// email.
	CodeMFABeforeLinking = "account_mfa_enabled"
	// CodeOtherSubjectLinked: an OIDC sign-in whose address is that of an
	// account already linked to another subject of the same provider.
	CodeOtherSubjectLinked = "account_linked_to_other_subject"
	// CodeIdentityInUse: a provider identity an owner asked to link to
	// their account is linked to another account.
	CodeIdentityInUse = "identity_in_use"
	// CodeProviderNotAuthoritative: an OIDC sign-in whose address is
	// that of an existing account, through a provider that is not
	// authoritative for the address's domain (OIDC_<NAME>_EMAIL_DOMAINS,
	// or its hd claim names another domain): it does not vouch for the
	// address, and nothing is linked by it. The account's owner links the
	// provider from the account.
	CodeProviderNotAuthoritative = "provider_not_authoritative"
)

// Codes of multi-factor authentication.
const (
	// CodeMFARequired: the password was right; finish the sign-in with
	// grant_type=mfa_otp and the mfa_token of the answer.
	CodeMFARequired = "mfa_required"
	// CodeInsufficientUserAuthentication (RFC 9470): the route needs a
	// second factor, or a more recent one, than the token carries.
	CodeInsufficientUserAuthentication = "insufficient_user_authentication"
	// CodeMFAEnrollmentRequired: the tenant requires a second factor and
	// the caller has none; only enrolment routes are open.
	CodeMFAEnrollmentRequired = "mfa_enrollment_required"
	// CodeInvalidMFACode: a wrong, reused or expired code.
	CodeInvalidMFACode = "invalid_mfa_code"
	// CodeMFAUnavailable: the server has no MFA_ENCRYPTION_KEYS.
	CodeMFAUnavailable = "mfa_unavailable"
)

// Codes of requests the API could not read.
const (
	// CodeInvalidRequest: a missing or malformed parameter (RFC 6749 5.2
	// spelling, used by the token and sign-in endpoints).
	CodeInvalidRequest = "invalid_request"
	CodeMalformedJSON  = "malformed_json"
	CodeUnknownField   = "unknown_field"
	CodeInvalidID      = "invalid_id"
	CodeInvalidQuery   = "invalid_query"
	CodeInvalidCursor  = "invalid_cursor"
)

// Codes of sign-in, tokens and accounts.
const (
	// CodeInvalidGrant (RFC 6749 5.2): wrong credentials, or a refresh
	// token, code or mfa_token that is unknown, used or expired.
	CodeInvalidGrant         = "invalid_grant"
	CodeUnsupportedGrantType = "unsupported_grant_type"
	// CodeInvalidClient (RFC 6749 5.2): client authentication failed or
	// was missing (token, introspection and revocation endpoints).
	CodeInvalidClient = "invalid_client"
	// CodeInvalidScope (RFC 6749 5.2): a requested scope is unknown or
	// more than the client holds.
	CodeInvalidScope = "invalid_scope"
	// CodeUnauthorizedClient (RFC 6749 5.2): the client may not use the
	// grant (e.g. its tenant is suspended).
	CodeUnauthorizedClient = "unauthorized_client"
	// CodeUnsupportedTokenType (RFC 7009 2.2.1): the revocation endpoint
	// does not revoke that kind of token (access tokens).
	CodeUnsupportedTokenType   = "unsupported_token_type"
	CodeInvalidCurrentPassword = "invalid_current_password"
	CodeUserDisabled           = "user_disabled"
	// CodeNoMembership: a sign-in with no active membership to land in
	// (403), and coreapi's internal answer (404) to a proxy fetching the
	// projection of a user with no membership in the tenant (or either
	// unknown). The proxy remembers "no membership" only on that 404 with
	// this code, so that a 404 of something else (no such route, another
	// service) is not taken for it.
	CodeNoMembership  = "no_membership"
	CodeAlreadyMember = "already_member"
	CodeLastOwner     = "last_owner"
	// CodeSoleOwner: an account's deletion would leave a tenant with
	// other members and no active owner (its detail names the tenants).
	CodeSoleOwner = "sole_owner"
	// CodeLastSignInMethod: an unlink of a sign-in provider would leave
	// the account with no way to sign in (no password, no other
	// provider).
	CodeLastSignInMethod = "last_sign_in_method"
	CodeRoleNameTaken    = "role_name_taken"
	CodeBuiltinRole      = "builtin_role"
)

// Codes of sign-in with an external OIDC provider.
const (
	CodeUnknownProvider     = "unknown_provider"
	CodeProviderUnavailable = "provider_unavailable"
	CodeProviderError       = "provider_error"
	CodeInvalidState        = "invalid_state"
	CodeExpiredState        = "expired_state"
	CodeInvalidCode         = "invalid_code"
	CodeInvalidIDToken      = "invalid_id_token"
	CodeNonceMismatch       = "nonce_mismatch"
	// CodeEmailNotVerified: the provider does not vouch for the email
	// (not CodeEmailUnverified, which is a route rule's refusal).
	CodeEmailNotVerified = "email_not_verified"
	// CodeUnsupportedResponseType (RFC 6749 4.1.2.1): a sign-in's start
	// asked for another response_type than code (implicit, hybrid).
	CodeUnsupportedResponseType = "unsupported_response_type"
	// CodeUnsupportedResponseMode: a sign-in's start asked for another
	// response_mode than query (fragment, form_post).
	CodeUnsupportedResponseMode = "unsupported_response_mode"
	// CodeLoginRequired (OpenID Connect Core 3.1.2.6): a sign-in's start
	// asked for prompt=none, which coreapi cannot honour: it keeps no
	// browser session of its own, and the provider may show its pages.
	CodeLoginRequired = "login_required"
)

// API keys.
const (
	// CodeAPIKeyRevoked and CodeAPIKeyExpired: coreapi's internal answers
	// (410) to a proxy resolving a key whose secret is right but which no
	// longer works; the client is told invalid_token.
	CodeAPIKeyRevoked = "api_key_revoked"
	CodeAPIKeyExpired = "api_key_expired"
	// CodeAPIKeyUnknown: coreapi's internal answer (404) to a proxy
	// resolving a key no key's public id matches (the client is told
	// invalid_token). Its own code, so that a 404 of something else (no
	// such route) is not taken for it.
	CodeAPIKeyUnknown = "api_key_unknown"
	// CodeAPIKeysUnavailable: coreapi has no API_KEY_PEPPER.
	CodeAPIKeysUnavailable = "api_keys_unavailable"
	// CodeAPIKeyInQuery: a key, or one of coreapi's access tokens, sent in
	// the query string (refused: URLs end up in logs).
	CodeAPIKeyInQuery = "api_key_in_query"
	// CodeAmbiguousCredentials: both X-API-Key and Authorization.
	CodeAmbiguousCredentials = "ambiguous_credentials"
)

// known holds every code above.
var known = map[string]struct{}{
	CodeBadRequest:                     {},
	CodeValidation:                     {},
	CodeInvalidToken:                   {},
	CodeUnauthenticated:                {},
	CodeInsufficientScope:              {},
	CodeForbidden:                      {},
	CodeNotFound:                       {},
	CodeMethodNotAllowed:               {},
	CodeNotImplemented:                 {},
	CodeConflict:                       {},
	CodeBodyTooLarge:                   {},
	CodeUnsupportedMedia:               {},
	CodeTooManyRequests:                {},
	CodeUpstreamDown:                   {},
	CodeUnavailable:                    {},
	CodeInternal:                       {},
	CodeBadPath:                        {},
	CodeEmailUnverified:                {},
	CodePrincipalNotAllowed:            {},
	CodeOperatorOnly:                   {},
	CodeStateNotBound:                  {},
	CodeReturnToNotAllowed:             {},
	CodeSchemaOutdated:                 {},
	CodeCatalogRollout:                 {},
	CodeEmailTaken:                     {},
	CodeAlreadyVerified:                {},
	CodeLinkInvalid:                    {},
	CodeLinkExpired:                    {},
	CodeInvitationMismatch:             {},
	CodeInvitationPending:              {},
	CodeInvitationNotActive:            {},
	CodeAccountExists:                  {},
	CodeVerifyBeforeLinking:            {},
	CodeAccountProofRequired:           {},
	CodeLinkAccountMismatch:            {},
	CodeAdminPasswordBeforeLinking:     {},
	CodeMFABeforeLinking:               {},
	CodeOtherSubjectLinked:             {},
	CodeIdentityInUse:                  {},
	CodeProviderNotAuthoritative:       {},
	CodeMFARequired:                    {},
	CodeInsufficientUserAuthentication: {},
	CodeMFAEnrollmentRequired:          {},
	CodeInvalidMFACode:                 {},
	CodeMFAUnavailable:                 {},
	CodeInvalidRequest:                 {},
	CodeMalformedJSON:                  {},
	CodeUnknownField:                   {},
	CodeInvalidID:                      {},
	CodeInvalidQuery:                   {},
	CodeInvalidCursor:                  {},
	CodeInvalidGrant:                   {},
	CodeUnsupportedGrantType:           {},
	CodeInvalidClient:                  {},
	CodeInvalidScope:                   {},
	CodeUnauthorizedClient:             {},
	CodeUnsupportedTokenType:           {},
	CodeInvalidCurrentPassword:         {},
	CodeUserDisabled:                   {},
	CodeNoMembership:                   {},
	CodeAlreadyMember:                  {},
	CodeLastOwner:                      {},
	CodeSoleOwner:                      {},
	CodeLastSignInMethod:               {},
	CodeRoleNameTaken:                  {},
	CodeBuiltinRole:                    {},
	CodeUnknownProvider:                {},
	CodeProviderUnavailable:            {},
	CodeProviderError:                  {},
	CodeInvalidState:                   {},
	CodeExpiredState:                   {},
	CodeInvalidCode:                    {},
	CodeInvalidIDToken:                 {},
	CodeNonceMismatch:                  {},
	CodeEmailNotVerified:               {},
	CodeUnsupportedResponseType:        {},
	CodeUnsupportedResponseMode:        {},
	CodeLoginRequired:                  {},
	CodeAPIKeyRevoked:                  {},
	CodeAPIKeyExpired:                  {},
	CodeAPIKeyUnknown:                  {},
	CodeAPIKeysUnavailable:             {},
	CodeAPIKeyInQuery:                  {},
	CodeAmbiguousCredentials:           {},
}

// Known reports whether code is one of this package's codes, one the
// services answer. A page that shows a code from its URL (the mailed
// links' pages of coreapi) shows only these: another, however code-shaped
// (your_account_is_locked_call_us), would be a link's words shown as the
// service's own.
func Known(code string) bool {
	_, ok := known[code]
	return ok
}

// Codes returns every code of this package, sorted: the list the OpenAPI
// document gives clients to switch on.
func Codes() []string {
	out := make([]string, 0, len(known))
	for c := range known {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

func title(status int) string {
	switch status {
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 408:
		return "Request Timeout"
	case 409:
		return "Conflict"
	case 413:
		return "Content Too Large"
	case 415:
		return "Unsupported Media Type"
	case 422:
		return "Unprocessable Content"
	case 429:
		return "Too Many Requests"
	case 431:
		return "Request Header Fields Too Large"
	case 500:
		return "Internal Server Error"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	}
	// Any other status (410 of a revoked key or a used invitation, 501 of
	// an unknown method, 505) by its reason phrase too: RFC 9457 section
	// 4.2.1 asks the title of about:blank to be it.
	if t := http.StatusText(status); t != "" {
		return t
	}
	return "Error"
}

// KnownMethod reports whether m is a request method the servers of this
// project route (Fiber's default set). Fiber answers any other itself,
// before any middleware, with a plain-text 400: both servers refuse it
// first, with 501 CodeNotImplemented (RFC 9110 section 9.1).
func KnownMethod(m []byte) bool {
	switch string(m) { // no allocation: the compiler special-cases this
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return true
	}
	return false
}
