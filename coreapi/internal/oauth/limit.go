package oauth

import (
	"sync"
	"time"
)

// limiter counts the sign-ins each client IP starts per fixed window, in
// memory. In-process on purpose: the defence is against anonymous GETs
// that each cost a database write, so a refused request must cost no
// database work at all (a counter in PostgreSQL would itself be a write
// per request). The price is that the limit holds per replica; the
// table's global cap (Options.MaxPendingStates) bounds the total whatever
// the number of replicas or client addresses.
type limiter struct {
	per     int
	window  time.Duration
	maxKeys int
	now     func() time.Time

	mu      sync.Mutex
	windows map[string]*ipWindow
	// pruneAt is when the earliest window the last prune kept ends: a
	// full table holds no ended window before it, so a newcomer refused
	// meanwhile costs no scan (a client with many addresses would
	// otherwise make each of its requests walk every window, under mu).
	pruneAt time.Time
	// scans counts prunes (for tests).
	scans int
}

type ipWindow struct {
	start time.Time
	n     int
}

func newLimiter(per int, window time.Duration, maxKeys int, now func() time.Time) *limiter {
	return &limiter{per: per, window: window, maxKeys: maxKeys, now: now, windows: map[string]*ipWindow{}}
}

// allow counts one request of ip; when the ip is over its budget it
// reports how long until the window ends.
func (l *limiter) allow(ip string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.windows[ip]
	if ok && now.Sub(w.start) >= l.window {
		w.start, w.n = now, 0
	}
	if !ok {
		if len(l.windows) >= l.maxKeys && !now.Before(l.pruneAt) {
			l.prune(now)
		}
		if len(l.windows) >= l.maxKeys {
			// More live client addresses than the table may track: refuse
			// newcomers until windows end rather than grow without bound.
			return false, l.window
		}
		w = &ipWindow{start: now}
		l.windows[ip] = w
	}
	if w.n >= l.per {
		return false, w.start.Add(l.window).Sub(now)
	}
	w.n++
	return true, 0
}

// prune drops the windows that have ended, and notes when the earliest
// one left ends (pruneAt).
func (l *limiter) prune(now time.Time) {
	l.scans++
	next := now.Add(l.window)
	for ip, w := range l.windows {
		if now.Sub(w.start) >= l.window {
			delete(l.windows, ip)
		} else if end := w.start.Add(l.window); end.Before(next) {
			next = end
		}
	}
	l.pruneAt = next
}
