package rules

import (
	"os"
	"strings"
	"testing"
)

// The file names every public lifecycle route coreapi serves, and only
// those.
func TestLifecycleRules(t *testing.T) {
	p, err := Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/verify-email,", "/reset-password,", "/accept-invitation,", "/api/v1/auth/verify-email,",
		"/api/v1/auth/password/forgot,", "/api/v1/auth/password/reset,", "/api/v1/invitations/accept,"} {
		if !strings.Contains(string(b), "path: "+path) {
			t.Errorf("rules lack %s", strings.TrimSuffix(path, ","))
		}
	}
	if n := strings.Count(string(b), "access: public"); n != 7 {
		t.Errorf("%d public rules, want 7", n)
	}
	if strings.Contains(string(b), "**") {
		t.Error("a wildcard rule would open more than the lifecycle routes")
	}
}
