package logging

import (
	"context"
	"log/slog"
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
// later line may come, and the count would wait for it for ever. Close
// passes a count still pending to Report at once, when the service stops.
// Each count is reported once, by Take, by Report or by Close.
type Budget struct {
	PerSecond int
	// Report, if set, writes a count of refused lines that no later line
	// took (the same line the caller writes for Take's count), with the
	// most severe level among the lines it counts (as Allow was given
	// them; Take's count as slog.LevelInfo): the count of error lines
	// left out is written where LOG_LEVEL=error shows it. It runs on a
	// timer's goroutine (or Allow's, or Close's caller), without the
	// budget's lock held.
	Report func(dropped int64, level slog.Level)

	// reporting is held while the timer reports, so that Close returns
	// only once a report under way is written.
	reporting sync.Mutex

	mu       sync.Mutex
	sec      int64      // the current second (unix)
	n        int        // lines let through in it
	dropped  int64      // lines refused since the last report
	level    slog.Level // the most severe of them (while dropped > 0)
	timer    *time.Timer
	pending  bool  // timer is armed
	armedSec int64 // sec when timer was armed
	closed   bool  // a timer reports nothing (Close)
}

// clockStepBack: a line's second this much before the budget's current
// one is the wall clock set back, not a late line (see take). It is longer
// than any request a line is timed by the start of, so that lines of the
// seconds of requests of every length, taking turns, are not let through
// at will: only one timed more than a minute back starts the budget
// afresh, and so at most one a minute per request a client holds open.
const clockStepBack = 60

// movesTo reports whether a line of second sec starts a second of its own
// (a later one, or the wall clock set back): else it counts in b.sec, the
// current one. b.mu is held.
func (b *Budget) movesTo(sec int64) bool { return sec > b.sec || sec < b.sec-clockStepBack }

// Take asks for one line at now. It reports whether the line may be
// written and, on the first line of a later second, how many were refused
// since the last report (to be reported once, with that line). A line of
// a second before the current one counts in the current one.
func (b *Budget) Take(now time.Time) (ok bool, dropped int64) {
	ok, dropped, _ = b.take(now, slog.LevelInfo)
	return ok, dropped
}

// take is Take for a line at level; it also returns the most severe
// level among the lines counted in dropped.
func (b *Budget) take(now time.Time, level slog.Level) (ok bool, dropped int64, dlevel slog.Level) {
	sec := now.Unix()
	b.mu.Lock()
	defer b.mu.Unlock()
	// A line of an earlier second (a caller that read the clock before
	// another took the lock, a proxy's failure timed by its request's
	// start) counts in the current one: moved back, the budget started
	// afresh at each line of seconds taking turns, and let all through.
	// A second more than clockStepBack before it is the wall clock set
	// back, which the budget follows: else it would let one second's
	// lines through until the clock came back to where it was.
	if b.movesTo(sec) {
		b.sec, b.n = sec, 0
		dropped, b.dropped, dlevel = b.dropped, 0, b.level
	}
	if b.n < b.PerSecond {
		b.n++
		return true, dropped, dlevel
	}
	// The level is kept on this path only: a line let through costs
	// nothing more.
	if b.dropped == 0 || level > b.level {
		b.level = level
	}
	b.dropped++
	if b.Report != nil && !b.pending {
		b.arm(time.Second)
	}
	return false, dropped, dlevel
}

// Allow is Take for a caller whose count line is Report's: it asks for
// one line at level at now, passes a count the line hands over to Report
// first, and reports whether the line may be written.
func (b *Budget) Allow(now time.Time, level slog.Level) bool {
	ok, dropped, dlevel := b.take(now, level)
	if dropped > 0 && b.Report != nil {
		b.Report(dropped, dlevel)
	}
	return ok
}

// Close stops the timer and passes a count no line has taken yet to
// Report before it returns (waiting for a report the timer is writing),
// so that a service stopping writes its counts before its last line and
// before its log's output is closed, not on a timer that may fire after
// them or never. Lines asked for after Close are still bounded, but no
// timer reports them: their count goes with a later line of a later
// second, or to another Close.
func (b *Budget) Close() {
	if b.Report == nil {
		return
	}
	b.reporting.Lock()
	defer b.reporting.Unlock()
	b.mu.Lock()
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
	}
	dropped, level := b.dropped, b.level
	b.dropped = 0
	b.mu.Unlock()
	if dropped > 0 {
		b.Report(dropped, level)
	}
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
//
// The count written is one of the lines of the second it is written in:
// a budget whose count goes in its own line (Take's callers) writes at
// most PerSecond lines a second, the timer's included.
func (b *Budget) flush() {
	b.reporting.Lock()
	defer b.reporting.Unlock()
	b.mu.Lock()
	if b.closed { // Close took the count; later ones wait for a line
		b.mu.Unlock()
		return
	}
	b.pending = false
	dropped, level := b.dropped, b.level
	now := time.Now().Unix()
	switch {
	case dropped == 0:
	case b.sec != b.armedSec, !b.movesTo(now) && b.n >= b.PerSecond:
		// Just after the end of that second: a burst still going has
		// had its line of the next second by then (or this second's
		// lines are all written). On the real clock this is at most
		// 1.1 s; a caller's clock set apart is held to a second (or
		// reported at once, when behind).
		b.arm(min(time.Until(time.Unix(b.sec+1, 0))+100*time.Millisecond, time.Second))
		dropped = 0
	default:
		b.dropped = 0
		if b.movesTo(now) {
			b.sec, b.n = now, 0
		}
		b.n++
	}
	b.mu.Unlock()
	if dropped > 0 {
		b.Report(dropped, level)
	}
}

// CountLevel is the level of a line counting lines a Budget left out,
// given the most severe level among them (Report's): a warning, or
// theirs when more severe, so that LOG_LEVEL=error, which shows the error
// lines let through, shows how many were left out too.
func CountLevel(level slog.Level) slog.Level { return max(level, slog.LevelWarn) }

// CountLine returns a Budget.Report that writes the count of lines left
// out to log as msg, at CountLevel, with the count and the budget's
// per_second: the line every service writes for its budgets.
func CountLine(log *slog.Logger, msg string, perSecond int) func(dropped int64, level slog.Level) {
	return func(dropped int64, level slog.Level) {
		log.LogAttrs(context.Background(), CountLevel(level), msg, slog.Int64("count", dropped), slog.Int("per_second", perSecond))
	}
}
