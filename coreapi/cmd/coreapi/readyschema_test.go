package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/schema"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
)

// TestReadySchemaSaysNoDriverError: /readyz names a schema behind this
// build as it is, but a failure to read it (a driver error naming the
// database's host, user and database) only in the log.
func TestReadySchemaSaysNoDriverError(t *testing.T) {
	logs := &testkit.LogBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	behind := fmt.Errorf("%w: it is at version 3, this build needs 9; run `coreapi migrate up`", schema.ErrOutdated)
	if err := readySchema(log, func(context.Context) error { return behind })(context.Background()); err != behind {
		t.Fatalf("behind: %v, want it as it is", err)
	}
	if err := readySchema(log, func(context.Context) error { return nil })(context.Background()); err != nil {
		t.Fatalf("ready: %v", err)
	}
	driver := errors.New(`read schema version: failed to connect to host=db.internal user=tollgate database=tollgate: timeout`)
	err := readySchema(log, func(context.Context) error { return driver })(context.Background())
	if err == nil || strings.Contains(err.Error(), "db.internal") || strings.Contains(err.Error(), "user=") {
		t.Fatalf("unread: %v, want a message without the driver's", err)
	}
	if !strings.Contains(logs.String(), "db.internal") {
		t.Fatalf("the driver's error is not logged:\n%s", logs.String())
	}
}

// TestReadySightingsSaysNoDriverError: /readyz says that the signing
// keys' first sightings could not be looked up, without the lookup's
// driver error (serve logs it).
func TestReadySightingsSaysNoDriverError(t *testing.T) {
	var failure error
	ready := readySightings(func() error { return failure })
	if err := ready(); err != nil {
		t.Fatalf("looked up: %v", err)
	}
	failure = errors.New(`look up when the signing keys were first found: failed to connect to host=db.internal user=tollgate database=tollgate: timeout`)
	err := ready()
	if err == nil || strings.Contains(err.Error(), "db.internal") || strings.Contains(err.Error(), "user=") || !strings.Contains(err.Error(), "signing keys") {
		t.Fatalf("not looked up: %v, want the signing keys named without the driver's message", err)
	}
}
