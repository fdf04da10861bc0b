package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apikeys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
)

// TestAPIKeyCreationsPerHourIsEachServers: API_KEY_CREATIONS_PER_HOUR
// bounds the tenant keys created through the API-key service wired with
// it, and no other. It was written into a package variable that every
// service of the process read, so the service wired last set the limit of
// all of them: one wired with 2 let a tenant create 5 once another was
// wired with 5, and one wired with the default kept the limit an earlier
// one had set. Both count the tenant's creations in the same row.
func TestAPIKeyCreationsPerHourIsEachServers(t *testing.T) {
	ctx := context.Background()
	db := dbtest.New(t)
	var tenantID, userID string
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		ten, err := tenants.Create(ctx, tx, "Acme")
		if err != nil {
			return err
		}
		u, err := users.Insert(ctx, tx, users.NewUser{Email: "owner@acme.test"})
		if err != nil {
			return err
		}
		tenantID, userID = ten.ID, u.ID
		return tenants.AddMember(ctx, tx, ten.ID, u.ID, roles.Owner)
	})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	wire := func(perHour int) *apikeys.Service {
		t.Helper()
		cfg := config.Config{APIKeyPepper: bytes.Repeat([]byte("p"), apikeys.MinPepperLen), APIKeyCreationsPerHour: perHour,
			AccessTokenTTL: 15 * time.Minute}
		svc, err := wireAPIKeys(cfg, log, db.Pool)
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	strict, lax, byDefault := wire(2), wire(5), wire(0)
	create := func(s *apikeys.Service) error {
		_, _, err := s.Store().Create(ctx, apikeys.NewKey{TenantID: tenantID, UserID: userID, Kind: apikeys.KindTenant, Name: "ci",
			Permissions: []string{}, Held: []string{roles.APIKeysWrite}})
		return err
	}
	limited := func(err error) bool {
		_, ok := errors.AsType[*ratelimit.Refused](err)
		return ok
	}
	for i := range 2 {
		if err := create(strict); err != nil {
			t.Fatalf("creation %d under a limit of 2: %v", i+1, err)
		}
	}
	if err := create(strict); !limited(err) {
		t.Fatalf("third creation under a limit of 2: %v, want a refusal", err)
	}
	for i := range 3 {
		if err := create(lax); err != nil {
			t.Fatalf("creation %d under a limit of 5: %v", i+3, err)
		}
	}
	if err := create(lax); !limited(err) {
		t.Fatalf("sixth creation under a limit of 5: %v, want a refusal", err)
	}
	if err := create(byDefault); err != nil {
		t.Fatalf("sixth creation under the default limit (%d): %v", apikeys.DefaultTenantCreationsPerHour, err)
	}
}
