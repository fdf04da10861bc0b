package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// -proxy-b's names: "tree" is A's own file, "copy" a byte-identical,
// executable copy of it in another file, anything else the path given.
func TestProxyBBinary(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "authproxy")
	body := []byte("#!/bin/sh\nexit 0\n")
	if err := os.WriteFile(a, body, 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := proxyBBinary(a, "tree"); err != nil || got != a {
		t.Fatalf("tree: %q, %v; want %q", got, err, a)
	}
	got, err := proxyBBinary(a, "copy")
	if err != nil {
		t.Fatal(err)
	}
	if got == a || filepath.Dir(got) != dir {
		t.Fatalf("copy: %q, want another file beside %q", got, a)
	}
	b, err := os.ReadFile(got)
	if err != nil || !bytes.Equal(b, body) {
		t.Fatalf("copy: contents %q, %v; want A's", b, err)
	}
	if fi, err := os.Stat(got); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("copy: not executable (%v)", err)
	}
	if got, err := proxyBBinary(a, "/opt/other"); err != nil || got != "/opt/other" {
		t.Fatalf("a path: %q, %v", got, err)
	}
	if _, err := proxyBBinary(filepath.Join(dir, "missing"), "copy"); err == nil {
		t.Fatal("copy of a missing A: no error")
	}
}
