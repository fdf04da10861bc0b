package main

import (
	"context"
	"runtime"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/buildinfo"
)

// TestVersion: --version is answered before the configuration is read (the
// environment here is empty, which would fail).
func TestVersion(t *testing.T) {
	want := buildinfo.Read().String("authproxy") + "\n"
	if !strings.HasPrefix(want, "authproxy ") || !strings.HasSuffix(want, " "+runtime.Version()+"\n") {
		t.Fatalf("version line %q", want)
	}
	for _, args := range [][]string{{"--version"}, {"-version"}, {"-check-config", "--version"}} {
		out, read := stdoutFile(t)
		if err := run(context.Background(), args, envFrom(nil), out); err != nil {
			t.Errorf("run %v = %v", args, err)
		}
		if got := read(); got != want {
			t.Errorf("run %v printed %q, want %q", args, got, want)
		}
	}
}
