package logging

import (
	"sync"
	"time"
)

// Budget lets through at most PerSecond log lines of one kind in each
// second and counts the others, for lines a client decides the number of
// (one per refused request): without it, a client sending refused
// requests as fast as it can writes as many lines, warnings included,
// which LOG_LEVEL=warn does not stop.
type Budget struct {
	PerSecond int

	mu      sync.Mutex
	sec     int64 // the current second (unix)
	n       int   // lines let through in it
	dropped int64 // lines refused since the last report
}

// Take asks for one line at now. It reports whether the line may be
// written and, on the first line of a later second, how many were refused
// since the last report (to be reported once, with that line).
func (b *Budget) Take(now time.Time) (ok bool, dropped int64) {
	sec := now.Unix()
	b.mu.Lock()
	defer b.mu.Unlock()
	if sec != b.sec {
		b.sec, b.n = sec, 0
		dropped, b.dropped = b.dropped, 0
	}
	if b.n < b.PerSecond {
		b.n++
		return true, dropped
	}
	b.dropped++
	return false, dropped
}
