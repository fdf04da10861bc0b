package tenantapi_test

import (
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

type world = apitest.World

func newWorld(t *testing.T) *world {
	t.Helper()
	return apitest.SeedWorld(t, start(t, apitest.Options{}))
}

func apitestReq(method, path string, body any, as *identity.Identity, service bool) apitest.Request {
	return apitest.Request{Method: method, Path: path, Body: body, As: as, Service: service}
}
