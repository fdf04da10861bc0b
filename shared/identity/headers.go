package identity

import "strconv"

// EachHeader calls set with every signed identity header of id and r but
// the signature (which the caller computes last, from the same values):
// key id, principal, user, tenant, session, roles, permissions, email
// verified, AMR, auth time, client IP, request id, timestamp, in that
// order. A value may be empty: the caller skips or deletes that header.
// It is the one list of them for everything that signs a request (the
// signing helper of package verify, the load harness, coreapi's tests).
func EachHeader(keyID string, id *Identity, r *Request, set func(name, value string)) {
	set(HeaderKeyID, keyID)
	set(HeaderPrincipal, id.Principal)
	set(HeaderUserID, id.UserID)
	set(HeaderTenantID, id.TenantID)
	set(HeaderSessionID, id.SessionID)
	set(HeaderRoles, JoinList(id.Roles))
	set(HeaderPermissions, JoinList(id.Permissions))
	set(HeaderEmailVerified, BoolString(id.EmailVerified))
	set(HeaderAMR, JoinList(id.AMR))
	set(HeaderAuthTime, FormatAuthTime(id.AuthTime))
	set(HeaderClientIP, r.ClientIP)
	set(HeaderRequestID, r.RequestID)
	set(HeaderTimestamp, strconv.FormatInt(r.Timestamp, 10))
}
