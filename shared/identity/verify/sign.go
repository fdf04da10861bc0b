package verify

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/requestid"
)

// Sign adds the identity headers v2 for id to r, signed by s at time now,
// as authproxy would: for an app's tests, and for tools that call an app
// directly. It reads r's body to hash it and puts it back. The request id
// and client IP are taken from r's X-Request-Id and X-Auth-Client-Ip when
// set (otherwise a new id and 127.0.0.1). The request-target signed is the
// one the middleware checks: r.RequestURI when set (httptest.NewRequest
// sets it), else the URL's path and query, which a client sends. An empty Principal means
// anonymous without a user id and user with one. Another principal than
// user, api_key, service or anonymous, a value with a line break, or a
// list element that is empty or holds a comma (which the verifier would
// read as other elements), is an error, and r is left unsigned.
func Sign(r *http.Request, s *identity.KeySigner, id identity.Identity, now time.Time) error {
	sum := identity.EmptyBodySHA256
	if r.Body != nil && r.Body != http.NoBody {
		b, err := io.ReadAll(r.Body)
		_ = r.Body.Close()
		if err != nil {
			return err
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		if len(b) > 0 {
			sum = sha256.Sum256(b)
		}
	}
	if id.Principal == "" {
		id.Principal = identity.PrincipalAnonymous
		if id.UserID != "" {
			id.Principal = identity.PrincipalUser
		}
	}
	rid := r.Header.Get(identity.HeaderRequestID)
	if rid == "" {
		rid = requestid.New()
	}
	ip := r.Header.Get(identity.HeaderClientIP)
	if ip == "" {
		ip = "127.0.0.1"
	}
	req := identity.Request{Timestamp: now.UnixMilli(), RequestID: rid, ClientIP: ip, Method: r.Method,
		PathQuery: requestTarget(r), BodySHA256: sum}
	if err := signable(&id, &req); err != nil {
		return err
	}
	h := r.Header
	set := func(name, value string) {
		if value == "" {
			h.Del(name)
			return
		}
		h.Set(name, value)
	}
	identity.EachHeader(s.KeyID(), &id, &req, set)
	set(identity.HeaderSignature, s.Sign(&id, &req))
	return nil
}

// signable refuses what the proxy never signs and a verifier would read
// otherwise: a value with a line break, and a list element that is empty
// or holds a comma (joined, ["guest,admin"] reads as two roles); and a
// principal that is none of the four, which a verifier refuses as
// malformed.
func signable(id *identity.Identity, r *identity.Request) error {
	switch id.Principal {
	case identity.PrincipalUser, identity.PrincipalAPIKey, identity.PrincipalService, identity.PrincipalAnonymous:
	default:
		return fmt.Errorf("verify: sign: principal %q is not %s, %s, %s or %s", id.Principal,
			identity.PrincipalUser, identity.PrincipalAPIKey, identity.PrincipalService, identity.PrincipalAnonymous)
	}
	for _, v := range [...]string{id.Principal, id.UserID, id.TenantID, id.SessionID, r.RequestID, r.ClientIP, r.Method, r.PathQuery} {
		if strings.ContainsAny(v, "\r\n") {
			return fmt.Errorf("verify: sign: value %q holds a line break", v)
		}
	}
	for _, l := range [...][]string{id.Roles, id.Permissions, id.AMR} {
		for _, v := range l {
			if v == "" || strings.ContainsAny(v, ",\r\n") {
				return fmt.Errorf("verify: sign: list element %q is empty or holds a comma or line break", v)
			}
		}
	}
	return nil
}
