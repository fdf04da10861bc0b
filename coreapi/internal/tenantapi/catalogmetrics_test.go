package tenantapi_test

import (
	"context"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// catalogGauges are a replica's permission catalog gauges: behind, the
// recorded catalog's version as the replica last read it, and its own.
type catalogGauges struct{ behind, recorded, own float64 }

func gaugesOf(t *testing.T, e *apitest.Env) catalogGauges {
	t.Helper()
	mfs, err := e.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()] = m.GetGauge().GetValue()
		}
	}
	for _, name := range []string{"coreapi_permission_catalog_behind", "coreapi_permission_catalog_recorded_version", "coreapi_permission_catalog_version"} {
		if _, ok := got[name]; !ok {
			t.Fatalf("the registry has no %s", name)
		}
	}
	return catalogGauges{got["coreapi_permission_catalog_behind"], got["coreapi_permission_catalog_recorded_version"], got["coreapi_permission_catalog_version"]}
}

func wantGauges(t *testing.T, what string, e *apitest.Env, want catalogGauges) {
	t.Helper()
	if got := gaugesOf(t, e); got != want {
		t.Errorf("%s: catalog gauges (behind, recorded version, own version) = %v, want %v", what, got, want)
	}
}

// TestCatalogBehindGauge: two replicas with different catalogs on one
// database. A replica whose catalog is not the recorded one refuses
// demotions and grants (503 catalog_rollout) and said so only in a log
// line at its start; coreapi_permission_catalog_behind shows it, beside
// the recorded version the replica last read and its own, updated when
// it records its catalog, when a guarded change reads the record, and
// when it re-reads it (permissions.Reread, which serve runs
// periodically).
func TestCatalogBehindGauge(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cat := mustCatalog(t, "version: 3\n"+notesCatalog)
	old := permissions.Builtin()
	newer := start(t, apitest.Options{Configure: func(o *httpapi.Options) { o.Catalog = cat }})
	w := apitest.SeedWorld(t, newer)
	older := start(t, apitest.Options{DB: newer.DB, Configure: func(o *httpapi.Options) { o.Catalog = old }})
	// A third replica of the old catalog that only reads the record in a
	// guarded change.
	other := start(t, apitest.Options{DB: newer.DB, Configure: func(o *httpapi.Options) { o.Catalog = permissions.Builtin() }})

	// Nothing recorded, nothing read: nobody is behind.
	wantGauges(t, "before any record", newer, catalogGauges{0, 0, 3})
	wantGauges(t, "before any record", older, catalogGauges{0, 0, 0})

	// The old catalog is recorded first, then the rollout's new one.
	if out, err := permissions.Record(ctx, older.DB.Pool, old); err != nil || out != permissions.Stored {
		t.Fatalf("record the old catalog = %v, %v", out, err)
	}
	wantGauges(t, "old catalog recorded", older, catalogGauges{0, 0, 0})
	if out, err := permissions.Record(ctx, newer.DB.Pool, cat); err != nil || out != permissions.Stored {
		t.Fatalf("record the new catalog = %v, %v", out, err)
	}
	wantGauges(t, "new catalog recorded", newer, catalogGauges{0, 3, 3})

	// The old replica learns it on its next reading of the record.
	if err := permissions.Reread(ctx, older.DB.Pool, old); err != nil {
		t.Fatal(err)
	}
	wantGauges(t, "old replica re-read the record", older, catalogGauges{1, 3, 0})

	// A guarded change reads the record too: refused, and shown.
	wantGauges(t, "third replica before a guarded change", other, catalogGauges{0, 0, 0})
	apitest.WantProblem(t, other.Send(t, &w.Owner, "PUT", "/api/v1/users/"+w.Member.UserID+"/roles/admin", nil), 503, problem.CodeCatalogRollout)
	wantGauges(t, "third replica after a refused grant", other, catalogGauges{1, 3, 0})

	// An old replica restarting mid-rollout is behind from its record.
	restarted := permissions.Builtin()
	if out, err := permissions.Record(ctx, older.DB.Pool, restarted); err != nil || out != permissions.Behind {
		t.Fatalf("record of a restarted old replica = %v, %v; want behind", out, err)
	}
	if b, v, ok := restarted.Standing(); !b || v != 3 || !ok {
		t.Errorf("restarted old replica's standing = %v, %d, %v; want behind the recorded version 3", b, v, ok)
	}

	// The old permissions shipped under a higher version (a rollback):
	// the old replicas' catalog is the recorded one again once they read it.
	rollback := mustCatalog(t, "version: 4\npermissions: []\n")
	if out, err := permissions.Record(ctx, newer.DB.Pool, rollback); err != nil || out != permissions.Stored {
		t.Fatalf("record the rollback = %v, %v", out, err)
	}
	if err := permissions.Reread(ctx, older.DB.Pool, old); err != nil {
		t.Fatal(err)
	}
	wantGauges(t, "old replica after the rollback", older, catalogGauges{0, 4, 0})
	// A guarded change on the new replica reads the rollback: it is behind.
	apitest.WantProblem(t, newer.Send(t, &w.Owner, "PUT", "/api/v1/users/"+w.Member.UserID+"/roles/admin", nil), 503, problem.CodeCatalogRollout)
	wantGauges(t, "new replica after the rollback", newer, catalogGauges{1, 4, 3})
}
