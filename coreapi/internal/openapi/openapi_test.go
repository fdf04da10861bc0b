package openapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/tollgate-auth/tollgate/shared/problem"
)

func TestDocumentLoadsAndValidates(t *testing.T) {
	if _, err := NewValidator(); err != nil {
		t.Fatal(err)
	}
	var d struct {
		OpenAPI string `json:"openapi"`
	}
	if err := json.Unmarshal(Document(), &d); err != nil || d.OpenAPI != "3.1.0" {
		t.Fatalf("openapi = %q, %v; want 3.1.0", d.OpenAPI, err)
	}
}

// TestPublicDocument: the served document validates on its own, names its
// server, and holds no internal route or scheme; the internal document
// adds exactly the internal routes.
func TestPublicDocument(t *testing.T) {
	pub, err := openapi3.NewLoader().LoadFromData(Document())
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Validate(context.Background()); err != nil {
		t.Fatalf("public document alone: %v", err)
	}
	if len(pub.Servers) == 0 || pub.Servers[0].URL == "" {
		t.Error("public document has no servers")
	}
	for path := range pub.Paths.Map() {
		if strings.HasPrefix(path, "/internal/") {
			t.Errorf("public document describes %s", path)
		}
	}
	if _, ok := pub.Components.SecuritySchemes["serviceSignature"]; ok {
		t.Error("public document defines the internal serviceSignature scheme")
	}
	merged, err := Internal()
	if err != nil {
		t.Fatal(err)
	}
	all, err := openapi3.NewLoader().LoadFromData(merged)
	if err != nil {
		t.Fatal(err)
	}
	var internal []string
	for path := range all.Paths.Map() {
		if pub.Paths.Find(path) == nil {
			internal = append(internal, path)
		}
	}
	slices.Sort(internal)
	if want := []string{"/internal/v1/api-keys/resolve", "/internal/v1/api-keys/used", "/internal/v1/projections/{user_id}"}; !slices.Equal(internal, want) {
		t.Errorf("internal paths = %v, want %v", internal, want)
	}
	if op := all.Paths.Find("/internal/v1/projections/{user_id}").Get; op == nil || op.OperationID != "getProjection" {
		t.Error("merged document lacks getProjection")
	}
}

// TestEnumsAndConstsTyped: every enum and const says its type (generators
// make an untyped enum an interface{}).
func TestEnumsAndConstsTyped(t *testing.T) {
	merged, err := Internal()
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(merged, &d); err != nil {
		t.Fatal(err)
	}
	n := 0
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			_, enum := v["enum"]
			_, cnst := v["const"]
			if enum || cnst {
				n++
				if _, ok := v["type"]; !ok {
					t.Errorf("%s: enum or const without type", at)
				}
			}
			for k, c := range v {
				walk(c, at+"/"+k)
			}
		case []any:
			for i, c := range v {
				walk(c, fmt.Sprintf("%s/%d", at, i))
			}
		}
	}
	walk(d, "#")
	if n == 0 {
		t.Fatal("no enum found: the walk is broken")
	}
}

// TestMergeRefusesDuplicates: internal.json cannot redefine a public name.
func TestMergeRefusesDuplicates(t *testing.T) {
	dst := map[string]any{"paths": map[string]any{"/a": 1}}
	if err := mergeInto(dst, "paths", map[string]any{"/a": 2}); err == nil {
		t.Error("duplicate path merged")
	}
	if err := mergeInto(dst, "paths", []any{}); err == nil {
		t.Error("non-object merged")
	}
	if err := mergeInto(dst, "schemas", map[string]any{"X": 1}); err != nil || dst["schemas"].(map[string]any)["X"] != 1 {
		t.Errorf("new section: %v %v", err, dst)
	}
}

// TestEarlyRefusalsDocumented: coreapi refuses a body over MAX_BODY_BYTES
// (413) and header fields over what it reads (431) before any route is
// chosen, so every operation, internal ones included, documents both.
func TestEarlyRefusalsDocumented(t *testing.T) {
	merged, err := Internal()
	if err != nil {
		t.Fatal(err)
	}
	all, err := openapi3.NewLoader().LoadFromData(merged)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for path, item := range all.Paths.Map() {
		for method, op := range item.Operations() {
			n++
			for _, status := range []int{413, 431} {
				if op.Responses.Status(status) == nil {
					t.Errorf("%s %s does not document %d", method, path, status)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no operation found")
	}
}

// TestDocumentsLaidOut: both documents are laid out as json.Indent lays
// them out with one space a level, so a line indented by hand at the
// wrong depth (which JSON ignores but a reader and a diff do not) shows.
func TestDocumentsLaidOut(t *testing.T) {
	for name, d := range map[string][]byte{"openapi.json": []byte(doc), "internal.json": []byte(internalDoc)} {
		var compact, want bytes.Buffer
		if err := json.Compact(&compact, d); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := json.Indent(&want, compact.Bytes(), "", " "); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want.WriteByte('\n')
		got, wantLines := strings.Split(string(d), "\n"), strings.Split(want.String(), "\n")
		for i := range min(len(got), len(wantLines)) {
			if got[i] != wantLines[i] {
				t.Errorf("%s line %d is laid out\n%.80s\nnot\n%.80s", name, i+1, got[i], wantLines[i])
				break
			}
		}
		if len(got) != len(wantLines) {
			t.Errorf("%s has %d lines, laid out %d", name, len(got), len(wantLines))
		}
	}
}

// TestResponsesInOrder: every operation lists its responses by status,
// ascending, so a reader finds a status where it belongs (a 429 after the
// 4xx before it, not after a 431 appended later).
func TestResponsesInOrder(t *testing.T) {
	for name, d := range map[string][]byte{"openapi.json": []byte(doc), "internal.json": []byte(internalDoc)} {
		var paths struct {
			Paths map[string]map[string]json.RawMessage `json:"paths"`
		}
		if err := json.Unmarshal(d, &paths); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for path, ops := range paths.Paths {
			for method, raw := range ops {
				var op struct {
					Responses json.RawMessage `json:"responses"`
				}
				if json.Unmarshal(raw, &op) != nil || op.Responses == nil {
					continue
				}
				codes := keysInOrder(t, op.Responses)
				if !slices.IsSortedFunc(codes, func(a, b string) int { return strings.Compare(statusKey(a), statusKey(b)) }) {
					t.Errorf("%s: %s %s lists its responses as %v", name, method, path, codes)
				}
			}
		}
	}
}

// statusKey sorts "default" after every status and 3-digit statuses by
// number.
func statusKey(code string) string {
	if code == "default" {
		return "999"
	}
	return code
}

// keysInOrder returns the members' names of the JSON object obj as they
// appear in it.
func keysInOrder(t *testing.T, obj json.RawMessage) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(obj))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// TestProblemCodesDocumented: the Problem schema's code lists exactly the
// codes of shared/problem, the ones coreapi and the proxy answer (every
// problem is made with one of its constants), so a client generated from
// the document can switch on every code it may meet, and the contract
// tests, which validate each problem answered against the schema, fail on
// a code the document does not list.
func TestProblemCodesDocumented(t *testing.T) {
	var d struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Enum []string `json:"enum"`
				} `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(Document(), &d); err != nil {
		t.Fatal(err)
	}
	got := d.Components.Schemas["Problem"].Properties["code"].Enum
	want := problem.Codes()
	for _, c := range want {
		if !slices.Contains(got, c) {
			t.Errorf("Problem.code does not list %q", c)
		}
	}
	for _, c := range got {
		if !problem.Known(c) {
			t.Errorf("Problem.code lists %q, which is no code of shared/problem", c)
		}
	}
	if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
		t.Errorf("Problem.code lists its codes out of order or twice: %v", got)
	}
}

// TestJSONBodiesClosed: every JSON request body's schema refuses members
// it does not name (additionalProperties: false), as httpapi.DecodeJSON
// does (422 unknown_field), so a generated client does not offer a body
// the server refuses. The token request is the one exception: its form
// (RFC 6749 section 3.2) ignores unknown parameters, and one schema
// describes both.
func TestJSONBodiesClosed(t *testing.T) {
	all, err := openapi3.NewLoader().LoadFromData(Document())
	if err != nil {
		t.Fatal(err)
	}
	open := map[string]bool{"issueToken": true}
	n := 0
	for path, item := range all.Paths.Map() {
		for method, op := range item.Operations() {
			if op.RequestBody == nil || op.RequestBody.Value == nil || open[op.OperationID] {
				continue
			}
			mt := op.RequestBody.Value.Content.Get("application/json")
			if mt == nil || mt.Schema == nil || mt.Schema.Value == nil {
				continue
			}
			n++
			if ap := mt.Schema.Value.AdditionalProperties; ap.Has == nil || *ap.Has {
				t.Errorf("%s %s (%s): the JSON body's schema %s does not refuse unknown members", method, path, op.OperationID, mt.Schema.Ref)
			}
		}
	}
	if n < 20 {
		t.Fatalf("only %d JSON bodies found: the walk is broken", n)
	}
}
