package sweep

import "time"

// SetStartWithin bounds the first round's delay for a test and returns
// the restore.
func SetStartWithin(d time.Duration) (restore func()) {
	old := startWithin
	startWithin = d
	return func() { startWithin = old }
}
