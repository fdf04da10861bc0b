package httpapi_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// BenchmarkProjectionWithCatalog is BenchmarkProjection for a member of a
// deployment declaring 50 app permissions (10 of them member defaults):
// the catalog travels as two array parameters of the same single query.
func BenchmarkProjectionWithCatalog(b *testing.B) {
	var cat strings.Builder
	for i := range 50 {
		fmt.Fprintf(&cat, "- {name: app%d:action, description: x, member_default: %t}\n", i, i%5 == 0)
	}
	c, err := permissions.Parse([]byte(cat.String()), "bench")
	if err != nil {
		b.Fatal(err)
	}
	e := start(b, apitest.Options{Configure: func(o *httpapi.Options) { o.Catalog = c }})
	ten := e.SeedTenant(b, "Acme")
	me := e.SeedUserIn(b, ten.ID, "me@acme.test", "member", "admin")
	if len(me.Permissions) != 57 {
		b.Fatalf("permissions = %d, want 57 (all but tenant:write)", len(me.Permissions))
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	path := identity.ProjectionPath + "/" + me.UserID + "?tenant_id=" + ten.ID
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest("GET", e.URL+path, nil)
		ts := time.Now().UnixMilli()
		req.Header.Set(identity.HeaderTimestamp, strconv.FormatInt(ts, 10))
		req.Header.Set(identity.HeaderSignature, e.Signer.Sign(ts, "GET", path, identity.Identity{}))
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
