package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaults(t *testing.T) {
	s, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, path string
		want         Access
	}{
		{"POST", "/api/v1/auth/signup", Public},
		{"GET", "/api/v1/auth/signup", Protected},
		{"POST", "/api/v1/auth/token", Public},
		{"GET", "/api/v1/auth/oauth/google/authorize", Public},
		{"HEAD", "/api/v1/auth/oauth/google/authorize", Public},
		{"GET", "/api/v1/auth/oauth/google/callback", Public},
		{"GET", "/api/v1/auth/oauth/google/x/callback", Protected},
		{"GET", "/.well-known/jwks.json", Public},
		{"GET", "/openapi.json", Public},
		{"GET", "/api/v1/users/me", Protected},
		{"DELETE", "/api/v1/users/123", Protected},
		{"GET", "/api", Protected},
		{"GET", "/apiv1", Deny},
		{"GET", "/", Deny},
		{"GET", "/internal/v1/projections/u", Deny},
		{"GET", "/internal", Deny},
		{"GET", "/INTERNAL/v1/projections/u", Deny},
		{"GET", "/metrics", Deny},
		{"BREW", "/api/v1/users", Protected},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			if got := s.Match([]byte(tt.method), []byte(tt.path)).Access; got != tt.want {
				t.Fatalf("Match(%s %s) = %v, want %v", tt.method, tt.path, got, tt.want)
			}
		})
	}
}

func TestFileRulesFirst(t *testing.T) {
	yml := `
rules:
  - methods: [GET]
    path: /api/v1/users
    access: protected
    permissions: [users:read]
  - methods: [PATCH]
    path: /api/v1/roles/*
    access: protected
    permissions: [roles:write]
  - path: /api/v1/legacy/**
    access: deny
  - methods: [GET]
    path: /status
    access: public
`
	p := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(p, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	r := s.Match([]byte("GET"), []byte("/api/v1/users"))
	if r.Access != Protected || len(r.Permissions) != 1 || r.Permissions[0] != "users:read" {
		t.Fatalf("GET /api/v1/users = %v %v, want protected [users:read]", r.Access, r.Permissions)
	}
	if r := s.Match([]byte("PATCH"), []byte("/api/v1/roles/42")); r.Permissions[0] != "roles:write" {
		t.Fatalf("PATCH role permissions = %v", r.Permissions)
	}
	if r := s.Match([]byte("GET"), []byte("/api/v1/legacy/a/b")); r.Access != Deny {
		t.Fatalf("legacy = %v, want deny", r.Access)
	}
	if r := s.Match([]byte("GET"), []byte("/api/v1/legacy")); r.Access != Deny {
		t.Fatalf("legacy root = %v, want deny", r.Access)
	}
	if r := s.Match([]byte("GET"), []byte("/status")); r.Access != Public {
		t.Fatalf("status = %v, want public", r.Access)
	}
	// Defaults still follow.
	if r := s.Match([]byte("POST"), []byte("/api/v1/auth/signup")); r.Access != Public {
		t.Fatalf("signup = %v, want public", r.Access)
	}
}

func TestBadFiles(t *testing.T) {
	tests := map[string]string{
		"unknown field":     "rules: [{path: /a, access: public, extra: 1}]",
		"bad access":        "rules: [{path: /a, access: maybe}]",
		"bad method":        "rules: [{path: /a, access: public, methods: [FETCH]}]",
		"relative path":     "rules: [{path: a, access: public}]",
		"internal public":   "rules: [{path: /internal/**, access: public}]",
		"mid double star":   "rules: [{path: /a/**/b, access: public}]",
		"dot segment":       "rules: [{path: /a/../b, access: public}]",
		"perm on public":    "rules: [{path: /a, access: public, permissions: [x]}]",
		"comma permission":  "rules: [{path: /a, access: protected, permissions: ['a,b']}]",
		"not yaml":          "rules: [",
		"escape in pattern": "rules: [{path: /a%2fb, access: public}]",
	}
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse([]byte(body)); err == nil {
				t.Fatalf("Parse(%q) accepted", body)
			}
		})
	}
	// Every problem is reported, not just the first.
	_, err := Parse([]byte("rules: [{path: a, access: x}, {path: /b, access: y}]"))
	if err == nil || !strings.Contains(err.Error(), "rule 1") || !strings.Contains(err.Error(), "rule 2") {
		t.Fatalf("Parse() = %v, want errors for rules 1 and 2", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("Load(missing) accepted")
	}
}

func BenchmarkMatch(b *testing.B) {
	s, _ := Load("")
	m, p := []byte("GET"), []byte("/api/v1/users/me")
	b.ReportAllocs()
	for b.Loop() {
		s.Match(m, p)
	}
}

// The shipped example file parses and says what coreapi enforces.
func TestExampleFile(t *testing.T) {
	s, err := Load("../../rules.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, path string
		access       Access
		perms        string
	}{
		{"GET", "/api/v1/users/me", Protected, ""},
		{"PATCH", "/api/v1/users/me", Protected, ""},
		{"GET", "/api/v1/users/me/sessions", Protected, ""},
		{"DELETE", "/api/v1/users/me/sessions/abc", Protected, ""},
		{"GET", "/api/v1/users", Protected, "users:read"},
		{"POST", "/api/v1/users", Protected, "users:write"},
		{"GET", "/api/v1/users/u1", Protected, "users:read"},
		{"DELETE", "/api/v1/users/u1", Protected, "users:write"},
		{"PUT", "/api/v1/users/u1/roles/admin", Protected, "users:write"},
		{"PATCH", "/api/v1/tenant", Protected, "tenant:write"},
		{"PATCH", "/api/v1/roles/r1", Protected, "roles:write"},
		{"GET", "/api/v1/audit-events", Protected, "audit:read"},
		{"POST", "/api/v1/auth/token", Public, ""},
	}
	for _, tt := range tests {
		r := s.Match([]byte(tt.method), []byte(tt.path))
		if r.Access != tt.access || strings.Join(r.Permissions, ",") != tt.perms {
			t.Errorf("%s %s = %v %v, want %v [%s]", tt.method, tt.path, r.Access, r.Permissions, tt.access, tt.perms)
		}
	}
}
