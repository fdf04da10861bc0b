package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/shared/problem"
)

// DecodeJSON strictly decodes the request body into dst: the content type
// must be JSON, unknown fields and trailing data are rejected, and a
// malformed body is a 400 problem that says where it went wrong.
func DecodeJSON(c *fiber.Ctx, dst any) error {
	ct := c.Get(fiber.HeaderContentType)
	if mt, _, err := mime.ParseMediaType(ct); err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return problem.New(fiber.StatusUnsupportedMediaType, problem.CodeUnsupportedMedia, "send the body as application/json")
	}
	body := c.Body()
	if len(bytes.TrimSpace(body)) == 0 {
		return problem.New(fiber.StatusBadRequest, problem.CodeBadRequest, "request body is empty")
	}
	if !utf8.Valid(body) {
		return problem.New(fiber.StatusBadRequest, problem.CodeBadRequest, "request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeProblem(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return problem.New(fiber.StatusBadRequest, problem.CodeBadRequest, "unexpected data after the JSON value")
	}
	return nil
}

func decodeProblem(err error) *problem.Problem {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return problem.New(fiber.StatusBadRequest, "malformed_json", fmt.Sprintf("malformed JSON at byte %d", syn.Offset))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return problem.New(fiber.StatusBadRequest, "malformed_json", "malformed JSON: unexpected end of body")
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "(body)"
		}
		p := problem.New(fiber.StatusUnprocessableEntity, problem.CodeValidation, "a field has the wrong type")
		p.Errors = []problem.FieldError{{Field: field, Message: "want " + typ.Type.String() + ", got " + typ.Value}}
		return p
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.TrimPrefix(err.Error(), "json: unknown field ")
		p := problem.New(fiber.StatusBadRequest, "unknown_field", "unknown field "+name)
		p.Errors = []problem.FieldError{{Field: strings.Trim(name, `"`), Message: "unknown field"}}
		return p
	}
	return problem.New(fiber.StatusBadRequest, "malformed_json", "malformed JSON body")
}

// checks collects field errors and reports them together as one 422.
type checks struct {
	errs []problem.FieldError
}

func (v *checks) add(field, msg string) {
	v.errs = append(v.errs, problem.FieldError{Field: field, Message: msg})
}

func (v *checks) require(ok bool, field, msg string) {
	if !ok {
		v.add(field, msg)
	}
}

// length checks the length in characters of a string field.
func (v *checks) length(field, s string, min, max int) {
	n := utf8.RuneCountInString(s)
	switch {
	case n < min && min == 1:
		v.add(field, "required")
	case n < min:
		v.add(field, fmt.Sprintf("at least %d characters", min))
	case n > max:
		v.add(field, fmt.Sprintf("at most %d characters", max))
	}
}

func (v *checks) err() error {
	if len(v.errs) == 0 {
		return nil
	}
	p := problem.New(fiber.StatusUnprocessableEntity, problem.CodeValidation, "the request has invalid fields")
	p.Errors = v.errs
	return p
}
