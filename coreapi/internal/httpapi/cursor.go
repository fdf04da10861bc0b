package httpapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/shared/problem"
)

// DeriveCursorKey derives the key that authenticates pagination cursors
// from the identity HMAC key, so the two are never the same bytes.
func DeriveCursorKey(identityKey []byte) []byte {
	m := hmac.New(sha256.New, identityKey)
	m.Write([]byte("tollgate coreapi pagination cursor v1"))
	return m.Sum(nil)
}

// cursorCodec makes opaque, tamper-evident cursors: base64url(JSON) "."
// base64url(HMAC(list, scope, JSON)). A cursor is bound to the list it came
// from and to its scope (the tenant or user), so it cannot be replayed
// against another list or tenant.
type cursorCodec struct {
	key []byte
}

const macLen = 16

func (cc cursorCodec) mac(list, scope string, payload []byte) []byte {
	m := hmac.New(sha256.New, cc.key)
	m.Write([]byte(list))
	m.Write([]byte{0})
	m.Write([]byte(scope))
	m.Write([]byte{0})
	m.Write(payload)
	return m.Sum(nil)[:macLen]
}

func (cc cursorCodec) encode(list, scope string, v any) string {
	payload, _ := json.Marshal(v) // cursor payloads are plain structs
	enc := base64.RawURLEncoding
	return enc.EncodeToString(payload) + "." + enc.EncodeToString(cc.mac(list, scope, payload))
}

var errBadCursor = problem.New(fiber.StatusBadRequest, problem.CodeInvalidCursor, "the cursor is malformed, altered, or from another list")

func (cc cursorCodec) decode(list, scope, s string, v any) error {
	p, t, ok := strings.Cut(s, ".")
	if !ok || len(s) > 1024 {
		return errBadCursor
	}
	enc := base64.RawURLEncoding.Strict() // one accepted spelling per cursor
	payload, err1 := enc.DecodeString(p)
	tag, err2 := enc.DecodeString(t)
	if err1 != nil || err2 != nil || !hmac.Equal(tag, cc.mac(list, scope, payload)) {
		return errBadCursor
	}
	if err := json.Unmarshal(payload, v); err != nil {
		return errBadCursor
	}
	return nil
}

// Cursors makes and checks pagination cursors for lists that other
// packages add (Routes.Cursors). list names the list and scope what it is
// scoped to (a tenant or user id): a cursor only decodes for the same pair.
type Cursors struct {
	cc cursorCodec
}

// Encode returns an opaque cursor holding v (JSON-encoded).
func (c *Cursors) Encode(list, scope string, v any) string { return c.cc.encode(list, scope, v) }

// Decode checks a cursor and unpacks it into v; a malformed, altered or
// foreign cursor is a 400 problem with code invalid_cursor.
func (c *Cursors) Decode(list, scope, s string, v any) error { return c.cc.decode(list, scope, s, v) }

// Page limits.
const (
	defaultLimit = 50
	maxLimit     = 200
)

// pageQuery is the parsed ?limit=&cursor=&include_total= of a list.
type pageQuery struct {
	limit        int
	cursor       string
	includeTotal bool
}

func parsePage(c *fiber.Ctx) (pageQuery, error) {
	var v checks
	q := pageQuery{limit: defaultLimit, cursor: strings.Clone(c.Query("cursor"))}
	if s := c.Query("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLimit {
			v.add("limit", "an integer from 1 to "+strconv.Itoa(maxLimit))
		}
		q.limit = n
	}
	switch c.Query("include_total") {
	case "", "false", "0":
	case "true", "1":
		q.includeTotal = true
	default:
		v.add("include_total", "true or false")
	}
	if err := v.err(); err != nil {
		p := err.(*problem.Problem)
		p.Status, p.Title, p.Code = fiber.StatusBadRequest, "Bad Request", problem.CodeInvalidQuery
		p.Detail = "invalid query parameters"
		return q, p
	}
	return q, nil
}

// listResponse is the shape of every list: {data, next_cursor, total?}.
type listResponse[T any] struct {
	Data       []T     `json:"data"`
	NextCursor *string `json:"next_cursor"`
	Total      *int64  `json:"total,omitempty"`
}
