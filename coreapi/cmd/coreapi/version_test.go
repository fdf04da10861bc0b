package main

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/buildinfo"
)

// TestVersion: --version (or -version) anywhere on the command line is
// answered before configuration and subcommands (the environment here is
// empty, so anything else would fail).
func TestVersion(t *testing.T) {
	want := buildinfo.Read().String("coreapi") + "\n"
	if !strings.HasPrefix(want, "coreapi ") || !strings.HasSuffix(want, " "+runtime.Version()+"\n") {
		t.Fatalf("version line %q lacks the program or the Go version", want)
	}
	for _, args := range [][]string{{"--version"}, {"-version"}, {"serve", "--version"}, {"migrate", "up", "-version"}, {"keys", "--version"}} {
		var out bytes.Buffer
		if err := run(context.Background(), args, envOf(nil), &out); err != nil {
			t.Errorf("run %v = %v", args, err)
		}
		if out.String() != want {
			t.Errorf("run %v printed %q, want %q", args, out.String(), want)
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--", "--version"}, envOf(nil), &out); err == nil {
		t.Errorf("run -- --version = nil, want the configuration error (after -- it is no flag)")
	}
}
