package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/openapi"
)

// TestRoutesDocumented runs the real serve command with every feature on
// and compares the routes its server registered with the operations of
// the OpenAPI document (internal routes merged in): a route served but
// not documented, or documented but not served, fails the test, so a
// handler added, moved or dropped cannot leave the contract behind.
// Path parameters are compared by place, not by name; HEAD, which Fiber
// adds beside each GET, is not an operation of its own.
func TestRoutesDocumented(t *testing.T) {
	srvc := make(chan *httpapi.Server, 1)
	env := serveEnv(t, dbtest.New(t).URL)
	env["API_KEY_PEPPER"] = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	env["MFA_ENCRYPTION_KEYS"] = "k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))
	startServeWith(t, env, hooks{server: func(s *httpapi.Server) { srvc <- s }})
	srv := <-srvc

	param := regexp.MustCompile(`\{[^}/]+\}|:[^/]+`)
	shape := func(method, path string) string { return method + " " + param.ReplaceAllString(path, "{}") }

	served := map[string]bool{}
	for _, r := range srv.App().GetRoutes(true) {
		if r.Method == "HEAD" {
			continue
		}
		served[shape(r.Method, r.Path)] = true
	}
	merged, err := openapi.Internal()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(merged, &doc); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" || method == "summary" || method == "description" {
				continue
			}
			documented[shape(strings.ToUpper(method), path)] = true
		}
	}
	var undocumented, unserved []string
	for k := range served {
		if !documented[k] {
			undocumented = append(undocumented, k)
		}
	}
	for k := range documented {
		if !served[k] {
			unserved = append(unserved, k)
		}
	}
	slices.Sort(undocumented)
	slices.Sort(unserved)
	for _, k := range undocumented {
		t.Errorf("served, not in the OpenAPI document: %s", k)
	}
	for _, k := range unserved {
		t.Errorf("in the OpenAPI document, not served: %s", k)
	}
	if len(served) < 50 {
		t.Fatalf("only %d routes served: the walk is broken", len(served))
	}
}
