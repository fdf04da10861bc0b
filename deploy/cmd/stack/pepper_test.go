package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/identity"
)

func TestEnsureAPIKeyPepper(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "api-key.pepper")
	created, err := ensureAPIKeyPepper(path)
	if err != nil || !created {
		t.Fatalf("first ensureAPIKeyPepper = %v, %v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("stat = %v, %v; want mode 600", st, err)
	}
	first, _ := os.ReadFile(path)
	if p, err := identity.ParseKey(string(first)); err != nil || len(p) != 32 {
		t.Fatalf("ParseKey(%q) = %d bytes, %v; want 32", first, len(p), err)
	}
	if created, err := ensureAPIKeyPepper(path); err != nil || created {
		t.Fatalf("second run = %v, %v; want false, nil", created, err)
	}
	if again, _ := os.ReadFile(path); string(again) != string(first) {
		t.Error("second run changed the pepper")
	}
	for name, content := range map[string]string{"garbage": "not base64!\n", "16 bytes": "MDEyMzQ1Njc4OWFiY2RlZg==\n", "empty": ""} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "k")
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := ensureAPIKeyPepper(p); err == nil {
				t.Fatalf("accepted %q", content)
			}
			if after, _ := os.ReadFile(p); string(after) != content {
				t.Error("a bad file was rewritten")
			}
		})
	}
}
