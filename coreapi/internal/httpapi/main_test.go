package httpapi_test

import (
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// coverage collects, across the package's tests, which documented
// operations answered with a response matching the OpenAPI document.
var coverage = apitest.NewCoverage()

func start(t testing.TB, o apitest.Options) *apitest.Env {
	t.Helper()
	o.Coverage = coverage
	return apitest.Start(t, o)
}

// ownOperations are the documented operations the framework serves itself
// (the features' packages check theirs).
var ownOperations = []string{"getOpenAPI", "getOpenAPIv1", "getHealth"}

// TestMain fails the run when a full run of the tests leaves an operation
// of the framework without a successful, document-conforming response.
func TestMain(m *testing.M) { coverage.Main(m, ownOperations) }
