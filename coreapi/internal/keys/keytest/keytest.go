// Package keytest makes signing key rings for tests.
package keytest

import (
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/keys"
)

// Ring is a ring of one EdDSA key generated an hour ago in a temporary
// directory, which it returns too (a test may add or remove key files).
func Ring(t testing.TB, opts ...keys.Option) (*keys.Ring, string) {
	t.Helper()
	dir := t.TempDir()
	if _, err := keys.Generate(dir, keys.AlgEdDSA, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	ring, err := keys.Load(dir, keys.AlgEdDSA, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return ring, dir
}
