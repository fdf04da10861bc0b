// Package fiberid is the Fiber adapter of package verify: a handler that
// accepts a request only when authproxy signed it and stores the caller's
// verify.Identity for the handlers after it.
//
//	v, err := verify.New(verify.Config{Keys: keys})
//	app.Use(fiberid.New(v))
//	app.Post("/notes", fiberid.RequirePermission("notes:write"), createNote)
//
//	func createNote(c *fiber.Ctx) error {
//		id := fiberid.MustFrom(c)
//		...
//	}
//
// The app must keep multipart bodies as bytes, or it cannot check them
// against the signature:
//
//	app := fiber.New(fiber.Config{DisablePreParseMultipartForm: true})
//
// (c.MultipartForm still parses them, from the bytes.) Without it, a
// multipart request is answered 500.
//
// A route of the proxy may list methods beyond the standard ones
// (PROPFIND, QUERY, PURGE), which it signs and forwards. Fiber answers a
// method outside its RequestMethods itself (400 "Invalid http method"),
// before this handler or any other runs: list them, with Fiber's own,
//
//	app := fiber.New(fiber.Config{RequestMethods: append(slices.Clone(fiber.DefaultMethods), "PROPFIND", "QUERY")})
//
// (net/http takes any method.)
//
// Errors answer problem+json directly (401 unsigned, forged, stale or
// replayed, 403 insufficient_scope, 413 body too large), whatever the
// app's ErrorHandler; the reason of a 401 goes to the verifier's Logger at
// debug level, as with the net/http middleware. A replay is the same signed
// request sent again within the window: the verifier remembers the
// signatures it accepted (verify.Config.ReplayCacheSize, AllowReplays;
// see package verify for what that memory covers).
// The identity's strings are copies: they stay valid after the handler
// returns, unlike what c.Get returns.
package fiberid

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/tollgate-auth/tollgate/shared/requestid"
)

type localsKey struct{}

var (
	errUnsigned = problem.New(http.StatusUnauthorized, problem.CodeUnauthenticated, "missing or invalid identity signature")
	errTooLarge = problem.New(http.StatusRequestEntityTooLarge, problem.CodeBodyTooLarge, "request body too large")
	// The app's configuration, not the request, is at fault: a 401 would
	// call every upload forged.
	errBodyUnread = problem.New(http.StatusBadRequest, problem.CodeBadRequest, "could not read the request body")
	errFormParsed = problem.New(http.StatusInternalServerError, problem.CodeInternal,
		"multipart body cannot be verified: the app must set fiber.Config.DisablePreParseMultipartForm")
)

// New returns a handler that verifies the identity headers of every
// request (signature, timestamp window, body digest, not a replay:
// verify.Verifier.CheckOnce) and then calls the next handler, with the
// identity available through From. The body is the one fasthttp read
// (bounded by the app's BodyLimit) or, when the app streams request bodies
// (StreamRequestBody), at most MaxBodyBytes of the stream, read here and
// put back for the handler; one over the verifier's MaxBodyBytes is 413.
func New(v *verify.Verifier) fiber.Handler {
	return func(c *fiber.Ctx) error {
		get := func(name string) string { return c.Get(name) }
		if c.App().Config().DisableHeaderNormalizing {
			get = func(name string) string { return anyCase(c, name) }
		}
		if !verify.Signed(get) {
			v.LogRejected(c.UserContext(), strings.Clone(c.Path()), identity.ErrMissing)
			return write(c, errUnsigned)
		}
		if formParsedOnRead(c) {
			return write(c, errFormParsed)
		}
		body, err := readBody(c, v.MaxBodyBytes())
		if err != nil {
			if errors.Is(err, errBodyTooLarge) {
				return write(c, errTooLarge)
			}
			return write(c, errBodyUnread)
		}
		// After the body: a chunked body's trailer section, read with a
		// streamed body's last chunk, holds header lines too (PeekAll
		// returns them beside the header section's).
		if repeated(c) || aliased(c) {
			v.LogRejected(c.UserContext(), strings.Clone(c.Path()), identity.ErrMalformed)
			return write(c, errUnsigned)
		}
		id, err := v.CheckOnce(get, c.Method(), c.OriginalURL(), body)
		if err != nil {
			v.LogRejected(c.UserContext(), strings.Clone(c.Path()), err)
			return write(c, errUnsigned)
		}
		owned := clone(&id)
		c.Locals(localsKey{}, owned)
		c.SetUserContext(verify.NewContext(c.UserContext(), owned))
		return c.Next()
	}
}

var errBodyTooLarge = errors.New("fiberid: body too large")

// repeated is verify.Repeated of the request: whether it has a signed
// header more than once, in its header and trailer sections. PeekAll finds
// a name in its canonical spelling only, which is every spelling as
// fasthttp stores names, unless the app keeps them as sent
// (DisableHeaderNormalizing): then each line is compared in any letter
// case, since another reader of the request (a Go or Node server it is
// passed to, the app's own lookup in another spelling) takes
// "x-auth-roles" for the same header as "X-Auth-Roles".
func repeated(c *fiber.Ctx) bool {
	h := &c.Request().Header
	if !c.App().Config().DisableHeaderNormalizing {
		return verify.Repeated(func(name string) int { return len(h.PeekAll(name)) })
	}
	return verify.Repeated(func(name string) int {
		n := 0
		for k := range h.All() {
			if bytes.EqualFold(k, []byte(name)) {
				n++
			}
		}
		for line := range bytes.SplitSeq(h.TrailerHeader(), []byte("\r\n")) {
			if k, _, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(k, []byte(name)) {
				n++
			}
		}
		return n
	})
}

// aliased reports whether the request has, in its header or trailer
// section, a line whose name is one of the signed headers spelled with '_'
// for '-' or as CGI names it (verify.Aliased: X_Auth_Roles,
// HTTP_X_AUTH_ROLES). fasthttp files it apart from the signed header, but
// a CGI-style reader the app hands the request to files both under one
// name.
func aliased(c *fiber.Ctx) bool {
	h := &c.Request().Header
	for k := range h.All() {
		if bytes.IndexByte(k, '_') >= 0 && verify.Aliased(string(k)) {
			return true
		}
	}
	for line := range bytes.SplitSeq(h.TrailerHeader(), []byte("\r\n")) {
		if k, _, ok := bytes.Cut(line, []byte(":")); ok && bytes.IndexByte(k, '_') >= 0 && verify.Aliased(string(k)) {
			return true
		}
	}
	return false
}

// anyCase is c.Get of an app that keeps header names as sent
// (DisableHeaderNormalizing), whose Peek finds a name in the spelling
// asked for only: the value of the first line of name in any letter case,
// as every other reader of the request reads it, in the header section,
// else in the trailer section, as Peek looks ("" when there is none).
// Read in its canonical spelling only, a signed header sent as
// "x-auth-roles" was verified as absent; read in the header section only,
// one the proxy left out and someone added in a chunked body's trailer was
// verified as absent while the app's c.Get read the trailer's.
func anyCase(c *fiber.Ctx, name string) string {
	h := &c.Request().Header
	for k, v := range h.All() {
		if bytes.EqualFold(k, []byte(name)) {
			return string(v)
		}
	}
	for line := range bytes.SplitSeq(h.TrailerHeader(), []byte("\r\n")) {
		// fasthttp writes each trailer line as "name: value".
		if k, v, ok := bytes.Cut(line, []byte(": ")); ok && bytes.EqualFold(k, []byte(name)) {
			return string(v)
		}
	}
	return ""
}

// readBody returns the body as sent: c.Body() would decode a
// Content-Encoding, but the proxy signed the bytes it forwarded. A body
// fasthttp streams (the app's StreamRequestBody, for a body over its
// BodyLimit) is read here, at most limit+1 bytes of it, and put back for the
// handler; Request.Body would read all of it into memory first.
func readBody(c *fiber.Ctx, limit int64) ([]byte, error) {
	r := c.Request()
	if !r.IsBodyStream() {
		body := r.Body()
		if int64(len(body)) > limit {
			return nil, errBodyTooLarge
		}
		return body, nil
	}
	if cl := int64(r.Header.ContentLength()); cl > limit {
		return nil, errBodyTooLarge
	}
	body, err := io.ReadAll(io.LimitReader(r.BodyStream(), limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > limit {
		return nil, errBodyTooLarge
	}
	r.SetBodyRaw(body)
	return body, nil
}

// formParsedOnRead reports whether fasthttp parsed the request's
// multipart body as it read it, keeping the parsed form instead of the
// bytes: what it answers for the body then is a re-encoding of the form
// (parts reordered, part headers dropped), not the bytes the proxy signed.
// It does so unless the app sets fiber.Config.DisablePreParseMultipartForm.
func formParsedOnRead(c *fiber.Ctx) bool {
	h := &c.Request().Header
	// fasthttp's own test (ContinueReadBody): a known length, a boundary
	// (any letter case of the media type), no Content-Encoding.
	if h.ContentLength() <= 0 || len(h.MultipartFormBoundary()) == 0 || len(h.Peek(fiber.HeaderContentEncoding)) > 0 {
		return false
	}
	return !c.App().Config().DisablePreParseMultipartForm
}

// clone copies every string out of fasthttp's buffers (one allocation for
// all of them).
func clone(id *verify.Identity) *verify.Identity {
	n := 0
	for _, s := range [...]string{id.Principal, id.UserID, id.TenantID, id.SessionID, id.ClientIP, id.RequestID, id.KeyID} {
		n += len(s)
	}
	for _, l := range [...][]string{id.Roles, id.Permissions, id.AMR} {
		for _, s := range l {
			n += len(s)
		}
	}
	var b strings.Builder
	b.Grow(n)
	own := func(s string) string {
		start := b.Len()
		b.WriteString(s)
		return b.String()[start:]
	}
	ownList := func(l []string) []string {
		if len(l) == 0 {
			return nil
		}
		out := make([]string, len(l))
		for i, s := range l {
			out[i] = own(s)
		}
		return out
	}
	return &verify.Identity{
		Principal: own(id.Principal), UserID: own(id.UserID), TenantID: own(id.TenantID), SessionID: own(id.SessionID),
		Roles: ownList(id.Roles), Permissions: ownList(id.Permissions), EmailVerified: id.EmailVerified,
		AMR: ownList(id.AMR), AuthTime: id.AuthTime, ClientIP: own(id.ClientIP), RequestID: own(id.RequestID), KeyID: own(id.KeyID),
	}
}

// From returns the verified identity of the request, and whether New ran.
func From(c *fiber.Ctx) (*verify.Identity, bool) {
	id, ok := c.Locals(localsKey{}).(*verify.Identity)
	return id, ok
}

// MustFrom is From for handlers behind New; it panics when New did not run,
// a wiring mistake.
func MustFrom(c *fiber.Ctx) *verify.Identity {
	id, ok := From(c)
	if !ok {
		panic("fiberid: no identity; is the handler behind fiberid.New?")
	}
	return id
}

// RequirePermission returns a handler that lets a request through only if
// the verified caller is signed in (401 otherwise) and holds every one of
// perms (403 insufficient_scope otherwise). It must run after New.
func RequirePermission(perms ...string) fiber.Handler {
	perms = slices.Clone(perms)
	return func(c *fiber.Ctx) error {
		id, _ := From(c)
		if p := verify.Authorize(id, perms...); p != nil {
			return write(c, p)
		}
		return c.Next()
	}
}

func write(c *fiber.Ctx, p *problem.Problem) error {
	rid := c.Get(identity.HeaderRequestID)
	if !requestid.Valid(rid) {
		rid = ""
	}
	body := p.With(rid, c.Path()).JSON()
	c.Set(fiber.HeaderContentType, problem.ContentType)
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentLength, strconv.Itoa(len(body)))
	return c.Status(p.Status).Send(body)
}
