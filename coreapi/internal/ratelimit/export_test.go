package ratelimit

import "time"

// QSweep is Sweep's batch, for a test that reads its plan.
const QSweep = qSweep

// Earlier is h as if it had been counted d earlier: a test that makes
// time pass by moving a key's window back moves the key's hits with it.
func (h Hit) Earlier(d time.Duration) Hit {
	h.window = h.window.Add(-d)
	return h
}
