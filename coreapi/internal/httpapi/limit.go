package httpapi

import (
	"context"
	"time"
)

// limiter bounds the requests of one kind in flight. A request that finds
// every slot taken waits at most wait for one and is then refused, so an
// overload becomes quick 503s instead of a queue that grows without limit
// in front of the database pool.
type limiter struct {
	slots chan struct{}
	wait  time.Duration
}

func newLimiter(n int, wait time.Duration) *limiter {
	return &limiter{slots: make(chan struct{}, n), wait: wait}
}

// acquire takes a slot, waiting at most l.wait (or until ctx ends); false
// means the caller must refuse the request.
func (l *limiter) acquire(ctx context.Context) bool {
	select {
	case l.slots <- struct{}{}:
		return true
	default:
	}
	if l.wait <= 0 {
		return false
	}
	t := time.NewTimer(l.wait)
	defer t.Stop()
	select {
	case l.slots <- struct{}{}:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

func (l *limiter) release() { <-l.slots }
