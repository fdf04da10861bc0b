package main

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/buildinfo"
)

// TestVersion: --version needs neither nats-server nor a database.
func TestVersion(t *testing.T) {
	want := buildinfo.Read().String("scalesim") + "\n"
	if !strings.HasSuffix(want, " "+runtime.Version()+"\n") {
		t.Fatalf("version line %q", want)
	}
	for _, args := range [][]string{{"--version"}, {"-version"}, {"-proxies", "5", "-version"}} {
		var out bytes.Buffer
		if err := run(context.Background(), args, &out, slog.New(slog.DiscardHandler)); err != nil {
			t.Errorf("run %v = %v", args, err)
		}
		if out.String() != want {
			t.Errorf("run %v printed %q, want %q", args, out.String(), want)
		}
	}
}
