// Package eventually is the one wait-for-a-condition of the tests of every
// module.
package eventually

import (
	"testing"
	"time"
)

// Interval is how often Within retries.
const Interval = 5 * time.Millisecond

// Within calls cond until it returns nil. If d passes first, the test
// fails with cond's last error, which should say what was seen against
// what was wanted.
func Within(t testing.TB, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", d, err)
		}
		time.Sleep(Interval)
	}
}
