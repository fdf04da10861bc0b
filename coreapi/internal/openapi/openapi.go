// Package openapi embeds coreapi's OpenAPI 3.1 document, the contract of
// its HTTP API, served at GET /openapi.json. The routes only authproxy
// calls (the projection endpoint) are described in a second document,
// internal.json, which is not served; the contract tests validate every
// response against the two merged (Internal).
package openapi

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// The documents are embedded as strings, which no caller can change.
//
//go:embed openapi.json
var doc string

//go:embed internal.json
var internalDoc string

// Document returns the public OpenAPI document (JSON), a copy of its own.
func Document() []byte { return []byte(doc) }

// Internal returns the public document with the internal routes, their
// schemas and security schemes merged in: the whole of what coreapi serves.
func Internal() ([]byte, error) {
	var pub, in map[string]any
	if err := json.Unmarshal([]byte(doc), &pub); err != nil {
		return nil, fmt.Errorf("openapi.json: %w", err)
	}
	if err := json.Unmarshal([]byte(internalDoc), &in); err != nil {
		return nil, fmt.Errorf("internal.json: %w", err)
	}
	if err := mergeInto(pub, "paths", in["paths"]); err != nil {
		return nil, err
	}
	comps, _ := in["components"].(map[string]any)
	pubComps, ok := pub["components"].(map[string]any)
	if !ok {
		return nil, errors.New("openapi.json: no components")
	}
	for kind, v := range comps {
		if err := mergeInto(pubComps, kind, v); err != nil {
			return nil, err
		}
	}
	return json.Marshal(pub)
}

// mergeInto adds the entries of the object add to dst[key], refusing a
// name both define.
func mergeInto(dst map[string]any, key string, add any) error {
	src, ok := add.(map[string]any)
	if !ok {
		return fmt.Errorf("internal.json: %s is not an object", key)
	}
	to, _ := dst[key].(map[string]any)
	if to == nil {
		to = map[string]any{}
		dst[key] = to
	}
	for name, v := range src {
		if _, dup := to[name]; dup {
			return fmt.Errorf("internal.json: %s %q is also in openapi.json", key, name)
		}
		to[name] = v
	}
	return nil
}

// Validator checks real HTTP responses against the document (tests use it
// on every response they receive).
type Validator struct {
	doc    *openapi3.T
	router routers.Router
}

// NewValidator loads and validates the merged document (Internal) and
// builds a router on it.
func NewValidator() (*Validator, error) {
	merged, err := Internal()
	if err != nil {
		return nil, err
	}
	loader := openapi3.NewLoader()
	d, err := loader.LoadFromData(merged)
	if err != nil {
		return nil, fmt.Errorf("load openapi document: %w", err)
	}
	if err := d.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("validate openapi document: %w", err)
	}
	// The pages the mailed links open are HTML: validated as a string.
	openapi3filter.RegisterBodyDecoder("text/html", openapi3filter.PlainBodyDecoder)
	// The router matches requests on the servers' URLs too; the tests'
	// servers listen on random ports, and the document's server ("/",
	// where it is served) says nothing about paths: route on paths only.
	d.Servers = nil
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
	err = openapi3filter.ValidateResponse(context.Background(), in)
	if herr := undocumentedHeaders(route.Operation, status, header); herr != nil {
		err = errors.Join(err, herr)
	}
	return op, err
}

// answerHeaders are the response fields a client acts on (a challenge to
// answer, a time to wait, a place to go): the document must name each
// where a response carries it, which the validator, checking only the
// fields it names, does not ask.
func answerHeaders() []string { return []string{"WWW-Authenticate", "Retry-After", "Location"} }

// undocumentedHeaders reports the answerHeaders present in header that
// op's response for status (or its default) does not document.
func undocumentedHeaders(op *openapi3.Operation, status int, header http.Header) error {
	ref := op.Responses.Status(status)
	if ref == nil {
		ref = op.Responses.Default()
	}
	if ref == nil || ref.Value == nil {
		return nil // the validator reports an undocumented status
	}
	var errs []error
	for _, h := range answerHeaders() {
		if header.Get(h) == "" {
			continue
		}
		if !documents(ref.Value.Headers, h) {
			errs = append(errs, fmt.Errorf("response %d of %s carries %s, which the document does not name", status, op.OperationID, h))
		}
	}
	return errors.Join(errs...)
}

func documents(hs openapi3.Headers, name string) bool {
	for k := range hs {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
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
