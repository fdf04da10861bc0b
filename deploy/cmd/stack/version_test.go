package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/buildinfo"
)

// TestVersion: --version starts nothing (no database, build or NATS).
func TestVersion(t *testing.T) {
	want := buildinfo.Read().String("stack") + "\n"
	if !strings.HasSuffix(want, " "+runtime.Version()+"\n") {
		t.Fatalf("version line %q", want)
	}
	t.Setenv("DATABASE_URL", "")
	for _, args := range [][]string{{"--version"}, {"-version"}, {"-no-seed", "--version"}} {
		var out bytes.Buffer
		if err := run(context.Background(), slog.New(slog.DiscardHandler), args, &out, io.Discard); err != nil {
			t.Errorf("run %v = %v", args, err)
		}
		if out.String() != want {
			t.Errorf("run %v printed %q, want %q", args, out.String(), want)
		}
	}
}

// TestHelp: -h (as docs/operations.md, "Local stack", points to for the
// flags) prints the flags and ends the run as asked, not as a failure
// ("stack stopped", exit 1), and starts nothing.
func TestHelp(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	for _, args := range [][]string{{"-h"}, {"-help"}, {"--help"}, {"-no-seed", "-h"}} {
		if err := run(context.Background(), slog.New(slog.DiscardHandler), args, io.Discard, io.Discard); err != nil {
			t.Errorf("run %v = %v, want nil", args, err)
		}
	}
}
