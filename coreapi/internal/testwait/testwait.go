// Package testwait is coreapi's one helper for tests that wait for
// something asynchronous (a relay, a watcher, a background loop).
package testwait

import (
	"testing"
	"time"
)

// Interval is how often Eventually retries.
const Interval = 10 * time.Millisecond

// Eventually calls cond until it returns nil. If d passes first, the test
// fails with cond's last error, which should say what was seen against
// what was wanted.
func Eventually(t testing.TB, d time.Duration, cond func() error) {
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
