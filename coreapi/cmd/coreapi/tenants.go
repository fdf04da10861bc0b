package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
	"github.com/tollgate-auth/tollgate/coreapi/internal/pgtrace"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenantapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/requestid"
)

const tenantsUsage = "tenants: want `tenants suspend ID` or `tenants reactivate ID`"

// tenantsCmd is `coreapi tenants suspend|reactivate ID`: the operator
// actions on a tenant's status. The change is audited (no acting user) and
// announced through the outbox on the tenant's invalidation subject, so a
// running coreapi's relay tells every proxy. It prints the tenant as JSON.
// Suspending a suspended tenant or reactivating an active one succeeds and
// writes nothing (no audit row, no announcement); the JSON then has
// "unchanged": true, so a script can tell.
func tenantsCmd(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) != 2 {
		return usageErrorf("%s", tenantsUsage)
	}
	status, ok := map[string]string{"suspend": identity.StatusSuspended, "reactivate": identity.StatusActive}[args[0]]
	if !ok {
		return usageErrorf("%s", tenantsUsage)
	}
	id, ok := ids.Parse(args[1])
	if !ok {
		return fmt.Errorf("tenants %s: %q is not a tenant id (a UUID)", args[0], args[1])
	}
	url, err := config.DatabaseURLFrom(getenv)
	if err != nil {
		return err
	}
	pool, err := pgtrace.NewPool(ctx, url, pgtrace.PoolOptions{})
	if err != nil {
		return fmt.Errorf("tenants: %w", err)
	}
	defer pool.Close()
	actor := roles.Actor{RequestID: "operator-" + requestid.New()}
	t, changed, err := tenants.NewStore(pool).Update(ctx, id, actor, tenants.Patch{Status: &status})
	if errors.Is(err, tenants.ErrNotFound) {
		return fmt.Errorf("tenants %s: no tenant %s", args[0], id)
	}
	if err != nil {
		return fmt.Errorf("tenants %s: %w", args[0], err)
	}
	return json.NewEncoder(stdout).Encode(tenantResult{Tenant: tenantapi.Tenant(t), Unchanged: !changed})
}

// tenantResult is what `coreapi tenants` prints: the tenant, and whether it
// already had the status asked for.
type tenantResult struct {
	tenantapi.Tenant
	Unchanged bool `json:"unchanged,omitempty"`
}
