package identity

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
)

func TestParseKey(t *testing.T) {
	raw := []byte("0123456789abcdef0123456789abcdef!")
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		got, err := ParseKey(" " + enc.EncodeToString(raw) + "\n")
		if err != nil || string(got) != string(raw) {
			t.Fatalf("ParseKey(%v) = %q, %v", enc, got, err)
		}
	}
	for _, bad := range []string{"", "!!!", base64.StdEncoding.EncodeToString([]byte("short"))} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
}

func TestLoadKey(t *testing.T) {
	text := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, []byte(text+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey("", p); err != nil {
		t.Fatalf("from file: %v", err)
	}
	if _, err := LoadKey(text, ""); err != nil {
		t.Fatalf("from value: %v", err)
	}
	if _, err := LoadKey(text, p); err == nil {
		t.Fatal("both set: accepted")
	}
	if _, err := LoadKey("", ""); err == nil {
		t.Fatal("neither set: accepted")
	}
	if _, err := LoadKey("", p+".missing"); err == nil {
		t.Fatal("missing file: accepted")
	}
}
