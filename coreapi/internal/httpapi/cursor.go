package httpapi

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"hash"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
	"github.com/tollgate-auth/tollgate/coreapi/internal/jsonenc"
	"github.com/tollgate-auth/tollgate/shared/identity"
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
	// macs holds *cursorMAC states keyed with key: hmac.New hashes both
	// pads of the key each time, a Reset state restores them from a copy.
	// Every page that has a next one makes a cursor.
	macs *sync.Pool
	// others check the cursors sealed with other keys, which decode too
	// but are never sealed with: those derived from the identity keys
	// listed after the first, so that a cursor outlives a rotation's
	// switch, when pods that list the new key first and pods that still
	// list the old one first serve the same clients.
	others []cursorCodec
}

// cursorMAC is a pooled HMAC state with room for its input's separator
// and its sum (kept off the heap of each call).
type cursorMAC struct {
	h   hash.Hash
	sep [1]byte
	sum [sha256.Size]byte
}

// newCursorCodec returns the codec that seals cursors with key and
// decodes those sealed with key or with one of others.
func newCursorCodec(key []byte, others ...[]byte) cursorCodec {
	cc := cursorCodec{key: key, macs: &sync.Pool{New: func() any { return &cursorMAC{h: hmac.New(sha256.New, key)} }}}
	for _, k := range others {
		if !bytes.Equal(k, key) && !slices.ContainsFunc(cc.others, func(o cursorCodec) bool { return bytes.Equal(o.key, k) }) {
			cc.others = append(cc.others, newCursorCodec(k))
		}
	}
	return cc
}

// cursorKeys derives the cursor key of each identity key (DeriveCursorKey).
func cursorKeys(keys []identity.Key) [][]byte {
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = DeriveCursorKey(k.Secret)
	}
	return out
}

const macLen = 16

// mac appends the cursor tag of payload to dst:
// HMAC(key, list 0x00 scope 0x00 payload), truncated to macLen bytes.
func (cc cursorCodec) mac(dst []byte, list, scope string, payload []byte) []byte {
	m := cc.macs.Get().(*cursorMAC)
	m.h.Reset()
	m.h.Write(unsafe.Slice(unsafe.StringData(list), len(list))) // Write neither keeps nor changes it
	m.h.Write(m.sep[:])
	m.h.Write(unsafe.Slice(unsafe.StringData(scope), len(scope)))
	m.h.Write(m.sep[:])
	m.h.Write(payload)
	dst = append(dst, m.h.Sum(m.sum[:0])[:macLen]...)
	cc.macs.Put(m)
	return dst
}

func (cc cursorCodec) encode(list, scope string, v any) string {
	payload, _ := json.Marshal(v) // cursor payloads are plain structs
	return cc.seal(list, scope, payload)
}

// seal returns the cursor of a JSON payload.
func (cc cursorCodec) seal(list, scope string, payload []byte) string {
	enc := base64.RawURLEncoding
	var tag [macLen]byte
	var buf [256]byte
	b := enc.AppendEncode(buf[:0], payload)
	b = append(b, '.')
	b = enc.AppendEncode(b, cc.mac(tag[:0], list, scope, payload))
	return string(b)
}

// ErrBadCursor is the answer to a malformed, altered or foreign cursor, and
// to a cursor whose payload does not hold what its list expects.
var ErrBadCursor = problem.New(fiber.StatusBadRequest, problem.CodeInvalidCursor, "the cursor is malformed, altered, or from another list")

func (cc cursorCodec) decode(list, scope, s string, v any) error {
	p, t, ok := strings.Cut(s, ".")
	// The decoder skips CR and LF even when strict: a cursor holding them
	// would be one cursor in many spellings.
	if !ok || len(s) > 1024 || strings.ContainsAny(s, "\r\n") {
		return ErrBadCursor
	}
	enc := base64.RawURLEncoding.Strict() // one accepted spelling per cursor
	payload, err1 := enc.DecodeString(p)
	tag, err2 := enc.DecodeString(t)
	if err1 != nil || err2 != nil || !cc.sealed(list, scope, payload, tag) {
		return ErrBadCursor
	}
	if err := json.Unmarshal(payload, v); err != nil {
		return ErrBadCursor
	}
	return nil
}

// sealed reports whether tag is the tag of payload under cc's key or one
// of its others'.
func (cc cursorCodec) sealed(list, scope string, payload, tag []byte) bool {
	var want [macLen]byte
	if hmac.Equal(tag, cc.mac(want[:0], list, scope, payload)) {
		return true
	}
	for _, o := range cc.others {
		if hmac.Equal(tag, o.mac(want[:0], list, scope, payload)) {
			return true
		}
	}
	return false
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

// PageQuery is the parsed ?limit=&cursor=&include_total= of a list.
type PageQuery struct {
	Limit        int
	Cursor       string // "" on the first page
	IncludeTotal bool
}

// pageParams are the query parameters ParsePage reads.
func pageParams() [3]string { return [...]string{"limit", "cursor", "include_total"} }

// ParsePage reads a list's query; a bad limit or include_total, or one of
// the three sent more than once, without a value or named in another
// letter case (Limit), or any other parameter, is a 400 problem with code
// invalid_query naming it. c.Query answers the first of repeated
// values, where another reader of the URL (a cache, a gateway, a log) may
// take the last: the page size or position it sees would not be the one
// served, so a repeat is refused, as a repeated JSON member or OAuth
// parameter is. An empty value (limit=, or limit alone) is refused rather
// than read as the parameter left out: a client whose value was lost on
// its way into the URL would get the first page, or the default size, as
// if it had asked for it.
func ParsePage(c *fiber.Ctx) (PageQuery, error) { return parsePage(c, true) }

// noTotal is the answer to include_total=true on a list without a total.
const noTotal = "this list has no total; leave include_total out"

// ParsePageWithoutTotal is ParsePage for a list that answers no total:
// include_total=true is then a 400 invalid_query naming it, rather than
// served without the total the client asked for (false is accepted).
func ParsePageWithoutTotal(c *fiber.Ctx) (PageQuery, error) { return parsePage(c, false) }

func parsePage(c *fiber.Ctx, hasTotal bool) (PageQuery, error) {
	var v Checks
	args := c.Context().QueryArgs()
	// A page parameter named in another letter case (Limit) is refused,
	// as ReadQuery refuses one: it was ignored (50 rows for ?Limit=5).
	// So is any other parameter: a list filters on none, and one that
	// served every row for ?email=x let its client believe it had.
	for k := range args.All() {
		known := false
		for _, name := range pageParams() {
			switch {
			case string(k) == name:
				known = true
			case asciiEqualFold(k, name):
				v.Add(string(k), otherCaseMessage)
				known = true
			}
		}
		if !known {
			v.unknownParam(k, unknownPageParam)
		}
	}
	for _, name := range pageParams() {
		switch n, empty := countArg(args, name); {
		case n > 1:
			v.Add(name, sentTwice)
		case n == 1 && empty:
			v.Add(name, sentEmpty)
		}
	}
	q := PageQuery{Limit: defaultLimit, Cursor: strings.Clone(c.Query("cursor"))}
	if s := c.Query("limit"); s != "" {
		n, ok := parseLimit(s)
		if !ok {
			v.Add("limit", "an integer from 1 to "+strconv.Itoa(maxLimit)+", in plain digits")
		}
		q.Limit = n
	}
	switch c.Query("include_total") {
	case "", "false", "0":
	case "true", "1":
		if !hasTotal {
			v.Add("include_total", noTotal)
		}
		q.IncludeTotal = hasTotal
	default:
		v.Add("include_total", "true or false")
	}
	if err := queryProblem(v.Err()); err != nil {
		return q, err
	}
	return q, nil
}

// unknownPageParam is the answer to a parameter a list does not read.
const unknownPageParam = "unknown query parameter: a list reads only limit, cursor and include_total, and filters on nothing"

// unknownParam records msg for the query parameter named k, once however
// often it is sent; a name that is not clean text (NUL, invalid UTF-8) or
// is empty is named quoted.
func (v *Checks) unknownParam(k []byte, msg string) {
	field := string(k)
	if len(k) == 0 || !cleanBytes(k) {
		field = strconv.QuoteToASCII(field)
	}
	for _, e := range v.errs {
		if e.Field == field {
			return
		}
	}
	v.Add(field, msg)
}

// NoQuery is the check of a list that reads no query parameter (it has
// one page): any parameter is a 400 problem with code invalid_query naming
// it, as a paged list refuses one it does not read (ParsePage).
func NoQuery(c *fiber.Ctx) error {
	var v Checks
	for k := range c.Context().QueryArgs().All() {
		v.unknownParam(k, "unknown query parameter: this list has one page and filters on nothing")
	}
	return queryProblem(v.Err())
}

// queryProblem turns the validation problem of Checks.Err into the 400
// invalid_query of a bad query (nil for nil).
func queryProblem(err error) error {
	if err == nil {
		return nil
	}
	p := err.(*problem.Problem)
	p.Status, p.Title, p.Code = fiber.StatusBadRequest, "Bad Request", problem.CodeInvalidQuery
	p.Detail = "invalid query parameters"
	return p
}

// parseLimit reads a page size written as plain decimal digits, without
// a sign or a leading zero, from 1 to maxLimit. strconv.Atoi also takes
// "+5" (sent as %2B5) and "05": each page size would have many spellings,
// which a cache or a log keyed on the URL would count as other pages.
func parseLimit(s string) (int, bool) {
	if len(s) > len(strconv.Itoa(maxLimit)) || s[0] == '0' {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, n <= maxLimit
}

// sentEmpty is the answer to a page parameter sent without a value.
const sentEmpty = "sent without a value; give one or leave the parameter out"

// countArg counts the values of name in args, and reports whether one of
// them is empty (without allocating).
func countArg(args *fasthttp.Args, name string) (n int, empty bool) {
	for k, val := range args.All() {
		if string(k) == name {
			n++
			empty = empty || len(val) == 0
		}
	}
	return n, empty
}

// ListResponse is the shape of every list: {data, next_cursor, total?}.
type ListResponse[T any] struct {
	Data       []T     `json:"data"`
	NextCursor *string `json:"next_cursor"`
	Total      *int64  `json:"total,omitempty"`
}

// Page builds the list response from rows fetched with a limit of
// pq.Limit+1: the extra row only says that a next page exists. total is
// the count of the whole list (answered only when pq.IncludeTotal); after
// returns the cursor that continues after a row.
func Page[T any](rows []T, total int64, pq PageQuery, after func(T) string) ListResponse[T] {
	out := ListResponse[T]{Data: rows}
	if out.Data == nil {
		out.Data = []T{}
	}
	if len(rows) > pq.Limit {
		out.Data = rows[:pq.Limit]
		cur := after(out.Data[pq.Limit-1])
		out.NextCursor = &cur
	}
	if pq.IncludeTotal {
		// Even with no rows: a page past the end of a list still says
		// how many the list holds (each store counts it then).
		out.Total = &total
	}
	return out
}

// TimeKey is the cursor payload of a list in keyset order of a time and an
// id that breaks ties (created_at, id): the one keyset of such lists (see
// Cursors.After and Cursors.DecodeAfter).
type TimeKey struct {
	T  int64  `json:"t"` // unix microseconds, PostgreSQL's precision
	ID string `json:"id"`
}

// After returns the cursor that continues list (scoped to scope) after
// the row at time t with id. Its payload is TimeKey's JSON, written
// without reflection (the same bytes: a test holds them equal).
func (c *Cursors) After(list, scope string, t time.Time, id string) string {
	var buf [128]byte
	return c.cc.seal(list, scope, appendTimeKey(buf[:0], TimeKey{T: t.UnixMicro(), ID: id}))
}

// appendTimeKey appends k as encoding/json marshals it.
func appendTimeKey(b []byte, k TimeKey) []byte {
	b = jsonenc.Int(append(b, `{"t":`...), k.T)
	b = jsonenc.String(append(b, `,"id":`...), k.ID)
	return append(b, '}')
}

// DecodeAfter checks a cursor made by After and returns its row's time and
// id; a malformed, altered or foreign cursor is ErrBadCursor.
func (c *Cursors) DecodeAfter(list, scope, cursor string) (time.Time, string, error) {
	var k TimeKey
	if err := c.cc.decode(list, scope, cursor, &k); err != nil {
		return time.Time{}, "", err
	}
	if !ids.Valid(k.ID) {
		return time.Time{}, "", ErrBadCursor
	}
	return time.UnixMicro(k.T), k.ID, nil
}
