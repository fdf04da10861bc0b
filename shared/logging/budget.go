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
//
// The count of lines refused is handed back by Take with the first line
// let through in a later second. When Report is set, a count no later
// line has taken about a second after the last refusal is passed to
// Report instead: after a burst ends (an outage over, a client gone) no
// later line may come, and the count would wait for it for ever. Each
// count is reported once, by Take or by Report, never both.
type Budget struct {
	PerSecond int
	// Report, if set, writes a count of refused lines that no later line
	// took (the same line the caller writes for Take's count). It runs on
	// a timer's goroutine, without the budget's lock held.
	Report func(dropped int64)

	mu       sync.Mutex
	sec      int64 // the current second (unix)
	n        int   // lines let through in it
	dropped  int64 // lines refused since the last report
	timer    *time.Timer
	pending  bool  // timer is armed
	armedSec int64 // sec when timer was armed
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
	if b.Report != nil && !b.pending {
		b.arm(time.Second)
	}
	return false, dropped
}

// Allow is Take for a caller whose count line is Report's: it asks for
// one line at now, passes a count the line hands over to Report first,
// and reports whether the line may be written.
func (b *Budget) Allow(now time.Time) bool {
	ok, dropped := b.Take(now)
	if dropped > 0 && b.Report != nil {
		b.Report(dropped)
	}
	return ok
}

// arm starts the timer that reports a count no later line takes; b.mu is
// held. One timer at most is pending, so a burst costs no more than one
// a second.
func (b *Budget) arm(d time.Duration) {
	b.pending, b.armedSec = true, b.sec
	if b.timer == nil {
		b.timer = time.AfterFunc(d, b.flush)
		return
	}
	b.timer.Reset(d)
}

// flush reports the count when no line of a later second has taken it
// since the timer was armed. When one has (the burst went on), the count
// left is the current second's, which the first line of the next second
// takes: the timer waits for the end of that second, so a burst still
// going costs no extra line, and its last count comes at most about a
// second after its last refusal.
func (b *Budget) flush() {
	b.mu.Lock()
	b.pending = false
	dropped := b.dropped
	switch {
	case dropped == 0:
	case b.sec != b.armedSec:
		// Just after the end of that second: a burst still going has
		// had its line of the next second by then. On the real clock
		// this is at most 1.1 s; a caller's clock set apart is held to
		// a second (or reported at once, when behind).
		b.arm(min(time.Until(time.Unix(b.sec+1, 0))+100*time.Millisecond, time.Second))
		dropped = 0
	default:
		b.dropped = 0
	}
	b.mu.Unlock()
	if dropped > 0 {
		b.Report(dropped)
	}
}
