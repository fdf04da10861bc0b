package oauth_test

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

// TestMain fails a full run in which the callback never answered with a
// successful, document-conforming response. (Authorize answers 302; every
// test starts with it and checks it.)
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if code != 0 || flag.Lookup("test.run").Value.String() != "" || testing.Short() {
		os.Exit(code)
	}
	if missing := coverage.WithoutSuccess([]string{"oauthCallback"}); len(missing) > 0 {
		fmt.Printf("FAIL: OAuth operations never validated with a 2xx response: %v\n", missing)
		os.Exit(1)
	}
	os.Exit(code)
}
