package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tollgate-auth/tollgate/shared/silent"
)

// TestCommandsGiveUpOnASilentDatabase: the operator commands, the migrate
// init container's among them, end with an error when the database
// accepts the connection and never answers, after the connect timeout
// (pgtrace.DefaultConnectTimeout), instead of waiting for the context: a
// pod's init container has no probe to end it.
func TestCommandsGiveUpOnASilentDatabase(t *testing.T) {
	env := envOf(map[string]string{"DATABASE_URL": "postgres://postgres@" + silent.Addr(t) + "/tollgate?sslmode=disable"})
	id := uuid.NewString()
	for _, args := range [][]string{
		{"migrate", "status"},
		{"tenants", "suspend", id},
		{"users", "reset-mfa", id},
	} {
		t.Run(args[0], func(t *testing.T) {
			t.Parallel()
			// The context outlasts the connect timeout by far: the command
			// must end on its own bound, not on this one.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := run(ctx, args, env, io.Discard)
			if err == nil {
				t.Fatal("no error against a silent database")
			}
			if ctx.Err() != nil {
				t.Fatalf("ended by the test's context, not the connect timeout: %v", err)
			}
		})
	}
}
