package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/tollgate-auth/tollgate/shared/clip"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// DecodeJSON strictly decodes the request body into dst: the content type
// must be JSON, in UTF-8 (MediaType: another charset is 415), unknown fields and trailing data are rejected, and a
// malformed body is a 400 problem that says where it went wrong. A
// top-level member sent as null is 422 validation_failed naming it, as a
// member of another type is, unless its field is tagged nullable:"true"
// (an expiry whose null means none): encoding/json leaves the field as
// it was, so a PATCH went on without the member and a creation used the
// default in its place, where the client may have meant to clear it.
func DecodeJSON(c *fiber.Ctx, dst any) error {
	return decodeJSON(c, dst, problem.CodeBadRequest, true)
}

// decodeJSON is DecodeJSON answering a repeated or misspelled member with
// code, and refusing a null member only when refuseNull.
func decodeJSON(c *fiber.Ctx, dst any, code string, refuseNull bool) error {
	if err := CheckCoding(c); err != nil {
		return err
	}
	// Read as MediaType reads it: a charset other than UTF-8 is refused,
	// not read as UTF-8 ("Ã©" in latin1 is "é" in UTF-8).
	mt, err := MediaType(c)
	if err != nil {
		return err
	}
	if mt != "application/json" && !strings.HasSuffix(mt, "+json") {
		return problem.New(fiber.StatusUnsupportedMediaType, problem.CodeUnsupportedMedia, "send the body as application/json")
	}
	body := c.Request().Body() // as sent: c.Body() would decompress
	if len(bytes.TrimSpace(body)) == 0 {
		return problem.New(fiber.StatusBadRequest, problem.CodeBadRequest, "request body is empty")
	}
	if !utf8.Valid(body) {
		return problem.New(fiber.StatusBadRequest, problem.CodeBadRequest, "request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		if p := timeProblem(err, body, dst); p != nil {
			return p
		}
		return decodeProblem(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return problem.New(fiber.StatusBadRequest, problem.CodeBadRequest, "unexpected data after the JSON value")
	}
	// The raw body is valid UTF-8, but an escape (\u0000) still decodes
	// to a NUL that PostgreSQL refuses in text (SQLSTATE 22021).
	if field, ok := cleanStrings(reflect.ValueOf(dst), ""); !ok {
		return badString(field)
	}
	// encoding/json reads an escaped lone surrogate (\ud800, which no
	// UTF-8 text holds) as U+FFFD: what is stored would not be the text
	// sent, which another reader of the body (JavaScript) keeps as sent.
	if off := loneSurrogate(body); off >= 0 {
		return badString(memberAt(body, off))
	}
	// encoding/json keeps the last of a repeated member and fills a field
	// from a member named in any case: a body that another reader (a
	// gateway's filter, an audit of the raw request) reads differently is
	// refused instead.
	return checkMembers(body, fieldNames(dst), code, refuseNull)
}

// CheckCoding answers 415 unsupported_media_type, with Accept-Encoding:
// identity (RFC 9110 section 15.5.16), to a request whose body is sent in
// a content coding (Content-Encoding: gzip, br, deflate...). Bodies are
// read as sent, never decompressed: MaxBodyBytes bounds the bytes on the
// wire, and a few kilobytes of gzip inflate to gigabytes. Every
// Content-Encoding field line counts (they are one list, RFC 9110 section
// 5.3), so "identity" on one and "gzip" on the next is a coding too.
func CheckCoding(c *fiber.Ctx) error {
	if identityCoding(c.Request().Header.PeekAll(fiber.HeaderContentEncoding)) {
		return nil
	}
	c.Set(fiber.HeaderAcceptEncoding, "identity")
	return problem.New(fiber.StatusUnsupportedMediaType, problem.CodeUnsupportedMedia,
		"send the body without a Content-Encoding (identity): compressed bodies are not accepted")
}

// identityCoding reports whether the Content-Encoding field lines name no
// coding but identity (empty list elements are allowed, RFC 9110 section
// 5.6.1).
func identityCoding(lines [][]byte) bool {
	for _, l := range lines {
		for _, e := range bytes.Split(l, []byte(",")) {
			if e = bytes.TrimSpace(e); len(e) > 0 && !bytes.EqualFold(e, []byte("identity")) {
				return false
			}
		}
	}
	return true
}

// MediaType returns the media type of the request's Content-Type, lower
// case, read as mime.ParseMediaType reads it; "" when there is none. A
// field that does not parse (a parameter without a value, an empty one,
// text after the subtype) is 415 unsupported_media_type, as is a charset
// other than UTF-8 (in any case), the only one bodies are read in: a
// body is never read under a type it does not declare exactly.
func MediaType(c *fiber.Ctx) (string, error) {
	ct := c.Get(fiber.HeaderContentType)
	if strings.TrimSpace(ct) == "" {
		return "", nil
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return "", problem.New(fiber.StatusUnsupportedMediaType, problem.CodeUnsupportedMedia,
			"malformed Content-Type: a media type, then only name=value parameters")
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return "", problem.New(fiber.StatusUnsupportedMediaType, problem.CodeUnsupportedMedia,
			"unsupported charset in Content-Type: send the body in UTF-8")
	}
	return mt, nil
}

// bodyField is what checkMembers knows of a JSON member of a body's
// struct: the JSON type its field decodes from (jsonType), and whether
// null is one of its values (the field is tagged nullable:"true").
type bodyField struct {
	typ      string
	nullable bool
}

// fieldNames maps the JSON member names of the struct dst points to,
// spelled exactly as its fields declare them, to their fields, or is nil
// when dst is not a pointer to a struct.
func fieldNames(dst any) map[string]bodyField {
	t := reflect.TypeOf(dst)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil
	}
	if m, ok := fieldNameSets.Load(t); ok {
		return m.(map[string]bodyField)
	}
	m := map[string]bodyField{}
	addFieldNames(m, t.Elem())
	fieldNameSets.Store(t, m)
	return m
}

var fieldNameSets sync.Map // reflect.Type → map[string]bodyField

func addFieldNames(m map[string]bodyField, t reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if tag == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				addFieldNames(m, ft)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = bodyField{typ: jsonType(f.Type), nullable: f.Tag.Get("nullable") == "true"}
	}
}

// CheckString reports whether s may be stored as text: valid UTF-8
// without NUL bytes.
func CheckString(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// CheckForm answers 400 when a value of a form body (or query) is not
// valid UTF-8 or holds a NUL byte, naming the field.
func CheckForm(args *fasthttp.Args) error {
	return ReadForm(args, nil)
}

// FormField is a parameter that ReadForm reads: the value of Name goes to
// *Dst.
type FormField struct {
	Name string
	Dst  *string
}

// maxFormFields bounds the fields of one ReadForm (a bit each in a uint64).
const maxFormFields = 64

// ReadForm reads a form body (or query) in one pass over its parameters:
// the value of each of fields (a copy) goes to its Dst, which is left as
// it is when the field is absent. Like CheckForm it answers 400 when any
// parameter is not valid UTF-8 or holds a NUL byte; and one of fields sent
// more than once is 400 invalid_request naming it, whatever the values
// (the same, or one of them empty): RFC 6749 section 3.1 says a request
// parameter must not be included more than once, and using one of the
// values would be a guess. Parameters that are not among fields are
// ignored, repeated or not (RFC 6749 section 3.2 ignores unrecognized
// parameters; RFC 8707 repeats resource). At most 64 fields.
func ReadForm(args *fasthttp.Args, fields []FormField) error {
	return readArgs(args, fields, problem.CodeInvalidRequest, false)
}

// MaxFormParams bounds the parameters of a form body (counted as the
// "&" that separate them, empty ones included). fasthttp parses a form
// into an entry of 56 bytes and a key buffer per parameter, which the
// request's pooled context keeps for the requests after it: "a&a&…", half
// a million parameters in a 1 MiB body, allocated 158 MiB and left 36 MiB
// held by every context that had parsed one, on public routes (the token,
// introspection and revocation endpoints, the mailed links' pages) before
// any limit. No form coreapi reads has more than 12 fields.
const MaxFormParams = 256

// MaxQueryParams bounds the parameters of a query string (counted as
// MaxFormParams counts a form's), on every route, before anything parses
// it: fasthttp keeps a parsed query as it keeps a form, and "a&a&…" up to
// the 16 KiB of a request's head left 582 KiB held by the pooled context
// of each connection that sent one, on public routes too (the OAuth
// sign-in's start and callback, the mailed links' pages). The queries
// coreapi reads (a list's page, the OAuth callback's, with what a provider
// adds) hold a handful.
const MaxQueryParams = MaxFormParams

var errTooManyQueryParams = problem.New(fiber.StatusBadRequest, problem.CodeInvalidQuery,
	"the query has more than "+strconv.Itoa(MaxQueryParams)+" parameters")

// boundQuery refuses (400 invalid_query) a request whose query string
// holds more than MaxQueryParams parameters, before any handler parses it.
func boundQuery(c *fiber.Ctx) error {
	if bytes.Count(c.Request().URI().QueryString(), []byte{'&'}) >= MaxQueryParams {
		return errTooManyQueryParams
	}
	return c.Next()
}

// ReadPostForm is ReadForm over the request's form body, refused (400
// invalid_request) before it is parsed when it holds more than
// MaxFormParams parameters.
func ReadPostForm(c *fiber.Ctx, fields []FormField) error {
	return readPostArgs(c, fields, problem.CodeInvalidRequest)
}

// ReadPostBodyForm is ReadPostForm for the form body of a route that is
// not an OAuth endpoint: one of fields sent more than once, and a form of
// more than MaxFormParams parameters, are 400 bad_request, as a JSON
// member named twice is.
func ReadPostBodyForm(c *fiber.Ctx, fields []FormField) error {
	return readPostArgs(c, fields, problem.CodeBadRequest)
}

func readPostArgs(c *fiber.Ctx, fields []FormField, code string) error {
	// The body as sent (CheckCoding refused any other): PostArgs parses
	// these bytes.
	if bytes.Count(c.Request().Body(), []byte{'&'}) >= MaxFormParams {
		return problem.New(fiber.StatusBadRequest, code,
			"the form has more than "+strconv.Itoa(MaxFormParams)+" parameters")
	}
	return readArgs(c.Request().PostArgs(), fields, code, false)
}

// ReadQuery is ReadForm for the query of a route that is not an OAuth
// endpoint: one of fields sent more than once is 400 invalid_query naming
// it, as a list's repeated limit, cursor or include_total is; so is a
// parameter named as one of fields in another letter case (Scope for
// scope), as a JSON member is refused (misspelled): it was ignored, where
// a reader of the URL that matches names without regard to case takes it.
func ReadQuery(args *fasthttp.Args, fields []FormField) error {
	return readArgs(args, fields, problem.CodeInvalidQuery, true)
}

// readArgs reads fields from args, answering a repeat with repeatCode,
// and with exactNames a parameter named as a field in another case too.
func readArgs(args *fasthttp.Args, fields []FormField, repeatCode string, exactNames bool) error {
	if len(fields) > maxFormFields {
		panic("httpapi: ReadForm reads at most 64 fields")
	}
	var seen uint64
	for k, v := range args.All() {
		if !cleanBytes(k) {
			return badString("(body)")
		}
		if !cleanBytes(v) {
			return badString(string(k))
		}
		for i := range fields {
			if string(k) != fields[i].Name {
				if exactNames && asciiEqualFold(k, fields[i].Name) {
					return otherCase(string(k), fields[i].Name, repeatCode)
				}
				continue
			}
			if seen&(1<<i) != 0 {
				// A copy: a problem holding fields' strings would move
				// fields, and the values its Dst fields point to, to the heap.
				return repeated(strings.Clone(fields[i].Name), repeatCode)
			}
			seen |= 1 << i
			*fields[i].Dst = string(v) // string() copies
			break
		}
	}
	return nil
}

// asciiEqualFold reports whether b and s are the same ASCII letters up to
// case (without allocating).
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// otherCase is the 400 (code) answer to a query parameter named as want in
// another letter case: parameter names are case-sensitive.
func otherCase(name, want, code string) *problem.Problem {
	p := problem.New(fiber.StatusBadRequest, code,
		fmt.Sprintf("unknown parameter %q (parameter names are case-sensitive: %q)", name, want))
	p.Errors = []problem.FieldError{{Field: name, Message: otherCaseMessage}}
	return p
}

const otherCaseMessage = "unknown parameter (parameter names are case-sensitive)"

// DecodeJSONOnce is DecodeJSON for a body whose members are request
// parameters that must not be repeated (RFC 6749 section 3.1): an object
// that names a member more than once is 400 invalid_request naming it,
// where encoding/json would keep the last value. Names are compared as
// encoding/json matches them to fields, without regard to case
// (strings.EqualFold): "scope" and "Scope" fill the same field. dst must
// point to a struct, so that only its few field names get this far
// (DecodeJSON refuses unknown members).
func DecodeJSONOnce(c *fiber.Ctx, dst any) error {
	return decodeJSON(c, dst, problem.CodeInvalidRequest, false)
}

// repeatedMember refuses a member of the JSON object body that is named
// twice, as an OAuth parameter (invalid_request).
func repeatedMember(body []byte) error {
	return checkMembers(body, nil, problem.CodeInvalidRequest, false)
}

// checkMembers refuses a member of the JSON object body that is named
// twice (in any case: encoding/json fills one field from both), answering
// with code, and, when known is not nil, a member that is not spelled
// exactly as one of known, and with refuseNull one whose value is null
// that its field does not take (nullMember). body is JSON that DecodeJSON
// has accepted, so this scan checks nothing else: it walks the object's
// top-level members, skipping their values, without allocating unless a
// name holds an escape.
func checkMembers(body []byte, known map[string]bodyField, code string, refuseNull bool) error {
	var buf [16][]byte
	names := buf[:0]
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return nil // not an object (null): nothing is repeated
	}
	for i++; ; i++ {
		i = skipSpace(body, i)
		if i >= len(body) || body[i] != '"' {
			return nil // '}': the end of the object
		}
		end := stringEnd(body, i)
		if end < 0 {
			return nil
		}
		name := body[i+1 : end-1]
		if bytes.IndexByte(name, '\\') >= 0 {
			var s string
			if json.Unmarshal(body[i:end], &s) != nil {
				return nil
			}
			name = []byte(s)
		}
		for _, n := range names {
			if bytes.EqualFold(n, name) {
				return repeated(string(n), code)
			}
		}
		f, ok := known[string(name)]
		if !ok && known != nil {
			return misspelled(string(name), known, code)
		}
		names = append(names, name)
		if i = skipSpace(body, end); i >= len(body) || body[i] != ':' {
			return nil
		}
		i = skipSpace(body, i+1)
		if refuseNull && ok && !f.nullable && bytes.HasPrefix(body[i:], []byte("null")) {
			return nullMember(string(name), f.typ)
		}
		if i = skipValue(body, i); i < 0 {
			return nil
		}
		if i = skipSpace(body, i); i >= len(body) || body[i] != ',' {
			return nil
		}
	}
}

// loneSurrogate is the offset in the JSON text b of the first \u escape
// of a UTF-16 surrogate that is not half of a pair (a high one followed
// by an escaped low one), or -1: such an escape stands for no character.
func loneSurrogate(b []byte) int {
	if !bytes.Contains(b, []byte(`\u`)) {
		return -1
	}
	in := false
	for i := 0; i < len(b); i++ {
		if !in {
			in = b[i] == '"'
			continue
		}
		switch b[i] {
		case '"':
			in = false
		case '\\':
			if i+1 >= len(b) || b[i+1] != 'u' {
				i++ // a one-character escape (\\, \", \n...)
				continue
			}
			switch r := hex4(b, i+2); {
			case r >= 0xDC00 && r <= 0xDFFF:
				return i
			case r >= 0xD800 && r <= 0xDBFF:
				if i+11 >= len(b) || b[i+6] != '\\' || b[i+7] != 'u' {
					return i
				}
				if r2 := hex4(b, i+8); r2 < 0xDC00 || r2 > 0xDFFF {
					return i
				}
				i += 11 // the pair
				continue
			}
			i += 5
		}
	}
	return -1
}

// hex4 is the value of the four hex digits at b[i:], or -1.
func hex4(b []byte, i int) int {
	if i+4 > len(b) {
		return -1
	}
	n := 0
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		n = n<<4 | int(c)
	}
	return n
}

// memberAt names the top-level member of the JSON object b whose value
// holds the offset off, or is "(body)".
func memberAt(b []byte, off int) string {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return "(body)"
	}
	for i++; ; i++ {
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != '"' {
			return "(body)"
		}
		end := stringEnd(b, i)
		if end < 0 {
			return "(body)"
		}
		name := b[i:end]
		if i = skipSpace(b, end); i >= len(b) || b[i] != ':' {
			return "(body)"
		}
		start := skipSpace(b, i+1)
		if i = skipValue(b, start); i < 0 {
			return "(body)"
		}
		if off >= start && off < i {
			var s string
			if json.Unmarshal(name, &s) != nil {
				return "(body)"
			}
			return s
		}
		if i = skipSpace(b, i); i >= len(b) || b[i] != ',' {
			return "(body)"
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd is the index after the JSON string that starts at b[i] (a
// quote), or -1.
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue is the index after the JSON value that starts at b[i] (for a
// number or literal: at the comma or bracket after it), or -1.
func skipValue(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		switch b[i] {
		case '"':
			if i = stringEnd(b, i); i < 0 || depth == 0 {
				return i
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i
			}
			if depth--; depth == 0 {
				return i + 1
			}
		case ',':
			if depth == 0 {
				return i
			}
		}
		i++
	}
	return i
}

// repeated is the answer to a request parameter sent more than once.
func repeated(name, code string) *problem.Problem {
	p := problem.New(fiber.StatusBadRequest, code,
		name+" is sent more than once; send each parameter at most once")
	p.Errors = []problem.FieldError{{Field: name, Message: sentTwice}}
	return p
}

const sentTwice = "sent more than once"

// nullMember is the answer to a member sent as null whose field takes
// only values of type typ: the answer to a member of another type.
func nullMember(name, typ string) *problem.Problem {
	p := problem.New(fiber.StatusUnprocessableEntity, problem.CodeValidation, "a field has the wrong type")
	p.Errors = []problem.FieldError{{Field: name, Message: "want " + typ + ", got null (leave the member out instead)"}}
	return p
}

// misspelled is the answer to a member that encoding/json matched to a
// field without regard to case: member names are case-sensitive. An
// unknown field (422 unknown_field, as DecodeJSON's other unknown members)
// on a data route; code on an OAuth endpoint (invalid_request).
func misspelled(name string, known map[string]bodyField, code string) *problem.Problem {
	want := ""
	for k := range known {
		if strings.EqualFold(k, name) {
			want = k
		}
	}
	status := fiber.StatusBadRequest
	if code == problem.CodeBadRequest {
		status, code = fiber.StatusUnprocessableEntity, problem.CodeUnknownField
	}
	p := problem.New(status, code, fmt.Sprintf("unknown field %q (member names are case-sensitive: %q)", name, want))
	p.Errors = []problem.FieldError{{Field: name, Message: "unknown field"}}
	return p
}

func cleanBytes(b []byte) bool {
	return utf8.Valid(b) && bytes.IndexByte(b, 0) < 0
}

func badString(field string) *problem.Problem {
	p := problem.New(fiber.StatusBadRequest, problem.CodeBadRequest, "a string holds a NUL byte or invalid UTF-8")
	p.Errors = []problem.FieldError{{Field: field, Message: "NUL bytes and invalid UTF-8 are not allowed"}}
	return p
}

// cleanStrings walks a decoded value and reports the first string (by its
// JSON path) that CheckString refuses.
func cleanStrings(v reflect.Value, path string) (string, bool) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return "", true
		}
		return cleanStrings(v.Elem(), path)
	case reflect.String:
		if !CheckString(v.String()) {
			if path == "" {
				path = "(body)"
			}
			return path, false
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" {
				name = f.Name
			}
			if p, ok := cleanStrings(v.Field(i), join(path, name)); !ok {
				return p, false
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if p, ok := cleanStrings(v.Index(i), path); !ok {
				return p, false
			}
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			if p, ok := cleanStrings(it.Key(), path); !ok {
				return p, false
			}
			if p, ok := cleanStrings(it.Value(), path); !ok {
				return p, false
			}
		}
	}
	return "", true
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

var timeType = reflect.TypeFor[time.Time]()

// timeProblem is the 422 validation_failed answer, naming the member, to
// a date-time member of body that time.Time's UnmarshalJSON refused: a
// string not in RFC 3339 form, or another JSON type (a number, an
// object), which it refuses with an error of its own that encoding/json
// passes on without the member's name, and which is no malformed JSON. nil
// for any other error.
func timeProblem(err error, body []byte, dst any) *problem.Problem {
	var tim *time.ParseError
	if !errors.As(err, &tim) && !strings.HasPrefix(err.Error(), "Time.UnmarshalJSON: ") {
		return nil
	}
	field, got := timeMember(body, dst)
	msg := "want an RFC 3339 date-time string such as 2027-01-31T00:00:00Z, got " + got
	if tim != nil {
		msg = "want an RFC 3339 date-time such as 2027-01-31T00:00:00Z, got " + strconv.Quote(clip.String(tim.Value, 64))
	}
	p := problem.New(fiber.StatusUnprocessableEntity, problem.CodeValidation, "a date-time field is not in RFC 3339 form")
	p.Errors = []problem.FieldError{{Field: field, Message: msg}}
	return p
}

// timeMember finds the top-level member of body that fills a time.Time
// (or *time.Time) field of the struct dst points to and does not decode
// as one: its name and its value's JSON type; "(body)" and "another
// value" when there is none (a date-time nested deeper).
func timeMember(body []byte, dst any) (string, string) {
	t := reflect.TypeOf(dst)
	var members map[string]json.RawMessage
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct || json.Unmarshal(body, &members) != nil {
		return "(body)", "another value"
	}
	t = t.Elem()
	for i := range t.NumField() {
		f := t.Field(i)
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if ft != timeType || !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		for k, raw := range members { // encoding/json matches names in any case
			var v time.Time
			if strings.EqualFold(k, name) && json.Unmarshal(raw, &v) != nil {
				return name, rawType(raw)
			}
		}
	}
	return "(body)", "another value"
}

// rawType names the JSON type of a value as encoding/json's type errors
// do (number, object...).
func rawType(raw json.RawMessage) string {
	switch raw[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// maxNameEcho bounds the bytes of an unknown member's name that its
// answer quotes (clip.Mark adds "..." to a longer one).
const maxNameEcho = 64

func decodeProblem(err error) *problem.Problem {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return problem.New(fiber.StatusBadRequest, problem.CodeMalformedJSON, fmt.Sprintf("malformed JSON at byte %d", syn.Offset))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return problem.New(fiber.StatusBadRequest, problem.CodeMalformedJSON, "malformed JSON: unexpected end of body")
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "(body)"
		}
		p := problem.New(fiber.StatusUnprocessableEntity, problem.CodeValidation, "a field has the wrong type")
		p.Errors = []problem.FieldError{{Field: field, Message: "want " + jsonType(typ.Type) + ", got " + jsonValue(typ.Value)}}
		return p
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// The same status as a wrong type: both are well-formed JSON that
		// does not fit the operation's schema.
		// The name is the client's, of any length up to the body's: it
		// is named clipped, as a date-time that does not parse is.
		quoted := strings.TrimPrefix(err.Error(), "json: unknown field ")
		name, uerr := strconv.Unquote(quoted)
		if uerr != nil {
			name = strings.Trim(quoted, `"`)
		}
		name = clip.Mark(name, maxNameEcho)
		p := problem.New(fiber.StatusUnprocessableEntity, problem.CodeUnknownField, "unknown field "+strconv.Quote(name))
		p.Errors = []problem.FieldError{{Field: name, Message: "unknown field"}}
		return p
	}
	return problem.New(fiber.StatusBadRequest, problem.CodeMalformedJSON, "malformed JSON body")
}

// jsonType names a Go type by the JSON Schema type it decodes from, so
// that no message names a Go type (httpapi.createUserBody).
func jsonType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Map, reflect.Struct:
		return "object"
	}
	return "another JSON type"
}

// jsonValue names the JSON value encoding/json found ("number 1.5" → number).
func jsonValue(v string) string {
	v, _, _ = strings.Cut(v, " ")
	if v == "bool" {
		return "boolean"
	}
	return v
}

// Checks collects field errors and reports them together as one 422
// validation problem: every handler validates its input this way.
type Checks struct {
	errs []problem.FieldError
}

// Add records an error of field.
func (v *Checks) Add(field, msg string) {
	v.errs = append(v.errs, problem.FieldError{Field: field, Message: msg})
}

// Require records msg for field unless ok.
func (v *Checks) Require(ok bool, field, msg string) {
	if !ok {
		v.Add(field, msg)
	}
}

// Length checks the length in characters of a string field.
func (v *Checks) Length(field, s string, min, max int) {
	n := utf8.RuneCountInString(s)
	switch {
	case n < min && min == 1:
		v.Add(field, "required")
	case n < min:
		v.Add(field, fmt.Sprintf("at least %d characters", min))
	case n > max:
		v.Add(field, fmt.Sprintf("at most %d characters", max))
	}
}

// Text is Length for a name or description that others are shown (a
// member list, an invitation mail's subject), refusing as well a control
// character (a line break, U+2028 and U+2029 included, a tab, a terminal
// escape) and a bidirectional
// override, embedding or isolate, with which text displays in another
// order than it is stored: "Acme" + U+202E + "moc.live" shows as
// "Acmeevil.com".
//
// Text that is not empty must also be Visible, an optional one (a display
// name, min 0) included: one of only zero-width or blank characters, or
// of combining marks with nothing to combine with, is refused, which would
// pass for a name and show as none ("You are invited to join ").
func (v *Checks) Text(field, s string, min, max int) {
	if r, ok := PlainText(s); !ok {
		v.Add(field, fmt.Sprintf("no control characters or bidirectional overrides (%U)", r))
		return
	}
	n := len(v.errs)
	v.Length(field, s, min, max)
	if len(v.errs) == n && s != "" && !Visible(s) {
		v.Add(field, NotVisible)
	}
}

// NotVisible is the message of a text that is not Visible.
const NotVisible = "at least one visible character (not only white space, zero-width characters or combining marks)"

// Visible reports whether s holds a character that shows on its own: one
// that is not white space, a format character (Unicode Cf: U+200B ZERO
// WIDTH SPACE, U+2060 WORD JOINER, U+FEFF...), a variation selector,
// another default-ignorable code point (U+3164 HANGUL FILLER, U+115F...)
// or a combining mark (Unicode M: U+0301, U+20DD...), which shows only on
// the character before it.
func Visible(s string) bool {
	for _, r := range s {
		if !unicode.IsSpace(r) && !unicode.In(r, unicode.Cf, unicode.M, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point) {
			return true
		}
	}
	return false
}

// PlainText reports whether s holds no control character (Unicode Cc),
// no line or paragraph separator (U+2028, U+2029: line breaks too, in
// JavaScript, editors and some terminals, as the mail templates take
// them) and no bidirectional embedding, override or isolate
// (U+202A-U+202E, U+2066-U+2069); else the first such character. The
// marks U+200E, U+200F and U+061C, which right-to-left names need, are
// allowed.
func PlainText(s string) (rune, bool) {
	for _, r := range s {
		if !plainRune(r) {
			return r, false
		}
	}
	return 0, true
}

// CleanText is s without the characters PlainText refuses: for a name a
// user did not type here (an identity provider's name claim).
func CleanText(s string) string {
	if _, ok := PlainText(s); ok {
		return s
	}
	return strings.Map(func(r rune) rune {
		if plainRune(r) {
			return r
		}
		return -1
	}, s)
}

func plainRune(r rune) bool {
	return !unicode.IsControl(r) && (r < 0x2028 || r > 0x202E) && (r < 0x2066 || r > 0x2069)
}

// Err is nil without errors, else the 422 problem listing them.
func (v *Checks) Err() error {
	if len(v.errs) == 0 {
		return nil
	}
	p := problem.New(fiber.StatusUnprocessableEntity, problem.CodeValidation, "the request has invalid fields")
	p.Errors = v.errs
	return p
}

// Invalid is the 422 problem of one invalid field (Checks for several).
func Invalid(field, msg string) *problem.Problem {
	var v Checks
	v.Add(field, msg)
	return v.Err().(*problem.Problem)
}
