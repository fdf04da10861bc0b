package tenantapi_test

import (
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/openapi"
)

// coverage collects, across the package's tests, which documented
// operations answered with a response matching the OpenAPI document.
var coverage = apitest.NewCoverage()

func start(t testing.TB, o apitest.Options) *apitest.Env {
	t.Helper()
	o.Coverage = coverage
	return apitest.Start(t, o)
}

// otherOperations are documented but served by other packages, which have
// their own tests.
var otherOperations = []string{"getOpenAPI", "getOpenAPIv1", "getHealth", "getJWKS", "createAccount", "issueToken", "logout", "switchTenant", "changePassword", "listSessions", "revokeSession", "oauthAuthorize", "oauthCallback", "oauthOpenLink",
	// package oauth's routes of the caller's linked identities, checked by its own TestMain
	"listMyIdentities", "linkMyIdentity", "confirmMyIdentityLink", "unlinkMyIdentity",
	// package lifecycle's routes, checked by its own TestMain
	"verifyEmail", "resendVerification", "forgotPassword", "resetPassword", "listInvitations", "createInvitation",
	"revokeInvitation", "resendInvitation", "acceptInvitation", "listMyInvitations",
	"pageVerifyEmail", "pageResetPassword", "pageAcceptInvitation",
	"enrolTOTP", "confirmTOTP", "disableTOTP", "regenerateRecoveryCodes", "resetMFA",
	// package serviceaccounts' routes, checked by its own TestMain
	"getAuthorizationServerMetadata", "getOpenIDConfiguration", "introspectToken", "revokeToken",
	"listServiceAccounts", "createServiceAccount", "deleteServiceAccount", "createClientSecret", "deleteClientSecret",
	// package apikeys' routes, checked by its own TestMain
	"listAPIKeys", "createAPIKey", "revokeAPIKey", "listMyAPIKeys", "createMyAPIKey", "revokeMyAPIKey",
	"resolveAPIKey", "reportAPIKeysUsed"}

// TestMain fails the run when a full run of the tests leaves an operation
// of the tenant API (every documented one but otherOperations) without a
// successful, document-conforming response.
func TestMain(m *testing.M) {
	v, err := openapi.NewValidator()
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	var ops []string
	for _, op := range v.Operations() {
		if !slices.Contains(otherOperations, op) {
			ops = append(ops, op)
		}
	}
	coverage.Main(m, ops)
}
