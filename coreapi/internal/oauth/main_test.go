package oauth_test

import (
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// coverage records which documented operations this package's tests saw
// answer with a document-conforming response.
var coverage = apitest.NewCoverage()

// TestMain fails a full run in which the callback, or a route of the
// caller's linked identities, never answered with a successful,
// document-conforming response. (Authorize answers 302; every test starts
// with it and checks it.)
func TestMain(m *testing.M) {
	coverage.Main(m, []string{"oauthCallback", "listMyIdentities", "linkMyIdentity", "confirmMyIdentityLink", "unlinkMyIdentity"})
}
