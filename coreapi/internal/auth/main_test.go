package auth_test

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// coverage records which documented operations this package's tests saw
// answer with a document-conforming response.
var coverage = apitest.NewCoverage()

// operations are the documented operations this package serves.
var operations = []string{"getJWKS", "createAccount", "issueToken", "logout", "switchTenant", "changePassword", "listSessions", "revokeSession", "enrolTOTP", "confirmTOTP", "disableTOTP", "resetMFA"}

// TestMain fails a full run that leaves one of the package's operations
// without a successful, document-conforming response.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if code != 0 || flag.Lookup("test.run").Value.String() != "" || flag.Lookup("test.bench").Value.String() != "" || testing.Short() {
		os.Exit(code)
	}
	if missing := coverage.WithoutSuccess(operations); len(missing) > 0 {
		fmt.Printf("FAIL: sign-in operations never validated with a 2xx response: %v\n", missing)
		os.Exit(1)
	}
	os.Exit(code)
}
