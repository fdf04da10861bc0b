package auth_test

import (
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// coverage records which documented operations this package's tests saw
// answer with a document-conforming response.
var coverage = apitest.NewCoverage()

// operations are the documented operations this package serves.
var operations = []string{"getJWKS", "createAccount", "issueToken", "logout", "switchTenant", "changePassword", "listSessions", "revokeSession", "enrolTOTP", "confirmTOTP", "disableTOTP", "regenerateRecoveryCodes", "resetMFA"}

// TestMain fails a full run that leaves one of the package's operations
// without a successful, document-conforming response.
func TestMain(m *testing.M) { coverage.Main(m, operations) }
