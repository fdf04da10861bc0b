package clients

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Pinned generator versions (the Go module proxy serves them).
const (
	oapiCodegen = "github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.8.2"
	oapiRuntime = "github.com/oapi-codegen/runtime v1.9.0"
)

// document is the public OpenAPI document coreapi serves at /openapi.json.
var document = filepath.Join("..", "..", "coreapi", "internal", "openapi", "openapi.json")

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func absDocument(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(document)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestGoClient generates a Go client (models and client) from the
// document with the pinned oapi-codegen and builds it together with a
// program that uses its typed enums and both signup types: a redeclared
// name, an untyped enum (interface{}) or an internal route in the public
// document fails the test.
func TestGoClient(t *testing.T) {
	t.Parallel() // a temporary module of its own; the module cache is shared safely
	doc := absDocument(t)
	dir := t.TempDir()
	// Outside the workspace: the client is a module of its own, as in a
	// consumer's repository.
	env := []string{"GOWORK=off", "GOFLAGS=-mod=mod"}
	write(t, filepath.Join(dir, "go.mod"), "module example.com/tollgateclient\n\ngo 1.25.0\n\nrequire "+oapiRuntime+"\n")
	write(t, filepath.Join(dir, "oapi-codegen.yaml"), "package: tollgate\noutput: tollgate/client.gen.go\ngenerate:\n  models: true\n  client: true\n")
	if err := os.Mkdir(filepath.Join(dir, "tollgate"), 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, dir, env, "go", "run", oapiCodegen, "-config", "oapi-codegen.yaml", doc)
	gen, err := os.ReadFile(filepath.Join(dir, "tollgate", "client.gen.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"GetProjection", "/internal/v1/"} {
		if strings.Contains(string(gen), bad) {
			t.Errorf("generated client contains %q: the internal route is in the public document", bad)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "use"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "use", "main.go"), `// Command use compiles against the generated client.
package main

import (
	"context"
	"fmt"

	"example.com/tollgateclient/tollgate"
)

func main() {
	c, err := tollgate.NewClientWithResponses("http://localhost:8080")
	if err != nil {
		panic(err)
	}
	// Enums are string types with constants, not interface{}.
	var status tollgate.MeStatus = tollgate.MeStatusActive
	var grant tollgate.TokenRequestGrantType = tollgate.Password
	fmt.Println(string(status), string(grant))
	// The signup schema and the signup operation's response are distinct.
	var body tollgate.SignupResponse
	var resp *tollgate.CreateAccountResponse
	resp, err = c.CreateAccountWithResponse(context.Background(), tollgate.CreateAccountJSONRequestBody{})
	if err == nil && resp.JSON201 != nil {
		body = *resp.JSON201
	}
	me, err := c.GetMeWithResponse(context.Background())
	if err == nil && me.JSON200 != nil {
		fmt.Println(me.JSON200.Status == tollgate.MeStatusDisabled)
	}
	fmt.Println(body.AccessToken)
}
`)
	run(t, dir, env, "go", "mod", "tidy")
	run(t, dir, env, "go", "build", "./...")
	run(t, dir, env, "go", "vet", "./...")
}

// TestTypeScriptTypes generates TypeScript types with openapi-typescript
// and type-checks them, with a file using them, under tsc --strict. The
// tools come from npm at the versions of typescript/package-lock.json,
// installed into the test's temporary directory.
func TestTypeScriptTypes(t *testing.T) {
	t.Parallel() // a temporary directory and npm cache of its own
	doc := absDocument(t)
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatal("npm is not installed: this test needs Node.js and npm (with access to the npm registry, or a cache that holds openapi-typescript and typescript) to check the TypeScript types")
	}
	dir := t.TempDir()
	for _, f := range []string{"package.json", "package-lock.json"} {
		b, err := os.ReadFile(filepath.Join("typescript", f))
		if err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, f), string(b))
	}
	cmd := exec.Command(npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--cache", filepath.Join(dir, ".npm-cache"))
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci (openapi-typescript and typescript, pinned in deploy/clients/typescript) failed: %v\n"+
			"It needs the npm registry (or npm_config_registry pointing at a mirror); it is not needed by the services.\n%s", err, out)
	}
	bin := filepath.Join(dir, "node_modules", ".bin")
	run(t, dir, nil, filepath.Join(bin, "openapi-typescript"), doc, "-o", "api.d.ts")
	types, err := os.ReadFile(filepath.Join(dir, "api.d.ts"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(types), "/internal/v1/") {
		t.Error("generated types describe an internal route")
	}
	write(t, filepath.Join(dir, "use.ts"), `import type { components, paths } from "./api";

type Me = components["schemas"]["Me"];
type Signup = components["schemas"]["SignupResponse"];
type TokenRequest = components["schemas"]["TokenRequest"];

// Enums are unions of string literals: a wrong value does not type-check.
export const status: Me["status"] = "active";
// @ts-expect-error not a user status
export const badStatus: Me["status"] = "suspended";
export const grant: TokenRequest["grant_type"] = "refresh_token";
// @ts-expect-error not a grant type
export const badGrant: TokenRequest["grant_type"] = "implicit";

export function accessToken(s: Signup): string {
  return s.access_token;
}

export type MeResponse = paths["/api/v1/users/me"]["get"]["responses"][200]["content"]["application/json"];
`)
	run(t, dir, nil, filepath.Join(bin, "tsc"), "--strict", "--noEmit", "--target", "es2022", "--module", "es2022", "--moduleResolution", "bundler", "api.d.ts", "use.ts")
}
