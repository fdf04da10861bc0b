// Package openapi embeds coreapi's OpenAPI 3.1 document, the contract of
// its HTTP API, served at GET /openapi.json.
package openapi

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

//go:embed openapi.json
var doc []byte

// Document returns the OpenAPI document (JSON). Callers must not modify it.
func Document() []byte { return doc }

// Validator checks real HTTP responses against the document (tests use it
// on every response they receive).
type Validator struct {
	doc    *openapi3.T
	router routers.Router
}

// NewValidator loads and validates the document and builds a router on it.
func NewValidator() (*Validator, error) {
	loader := openapi3.NewLoader()
	d, err := loader.LoadFromData(doc)
	if err != nil {
		return nil, fmt.Errorf("load openapi document: %w", err)
	}
	if err := d.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("validate openapi document: %w", err)
	}
	// The pages the mailed links open are HTML: validated as a string.
	openapi3filter.RegisterBodyDecoder("text/html", openapi3filter.PlainBodyDecoder)
	r, err := legacy.NewRouter(d)
	if err != nil {
		return nil, fmt.Errorf("openapi router: %w", err)
	}
	return &Validator{doc: d, router: r}, nil
}

// ErrUndocumented wraps failures to find the request's route in the
// document.
var ErrUndocumented = errors.New("route not in the OpenAPI document")

// IsUndocumented reports whether err means the route is not documented.
func IsUndocumented(err error) bool { return errors.Is(err, ErrUndocumented) }

// ValidateResponse checks that the document describes req's route and that
// the status, headers and body of the response match it. reqBody is the
// body that was sent (req.Body may already be consumed). It returns the
// operation id of the route when the route was found.
func (v *Validator) ValidateResponse(req *http.Request, reqBody []byte, status int, header http.Header, body []byte) (string, error) {
	r := req.Clone(context.Background())
	r.Body = io.NopCloser(bytes.NewReader(reqBody))
	route, params, err := v.router.FindRoute(r)
	if err != nil {
		return "", fmt.Errorf("%w: %s %s: %v", ErrUndocumented, req.Method, req.URL.Path, err)
	}
	op := route.Operation.OperationID
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: r, PathParams: params, Route: route,
		},
		Status: status,
		Header: header,
		Body:   io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{
			IncludeResponseStatus: true,
			MultiError:            true,
		},
	}
	return op, openapi3filter.ValidateResponse(context.Background(), in)
}

// Operations returns every operation id in the document.
func (v *Validator) Operations() []string {
	var out []string
	for _, item := range v.doc.Paths.Map() {
		for _, op := range item.Operations() {
			out = append(out, op.OperationID)
		}
	}
	return out
}
