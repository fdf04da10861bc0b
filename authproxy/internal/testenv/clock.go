package testenv

import (
	"time"
	"unsafe"
)

// WallSetBack is t, a time.Now reading, as time.Now reads it after the
// system's wall clock was set back by d (an NTP step, an operator, a VM
// resumed): its wall time d earlier, its monotonic reading unchanged.
// Code that measures intervals with time.Sub sees no step; code that
// measures them in unix nanoseconds sees time go back.
func WallSetBack(t time.Time, d time.Duration) time.Time {
	w, r := t.Add(-d), t
	// A time.Time with a monotonic reading keeps the wall clock in its
	// first word and the monotonic reading in its second: t takes w's
	// wall clock and keeps its own monotonic reading (r is t changed).
	*(*uint64)(unsafe.Pointer(&r)) = *(*uint64)(unsafe.Pointer(&w))
	if r.Sub(t) != 0 || r.UnixNano() != w.UnixNano() {
		panic("testenv: time.Time's layout changed: WallSetBack cannot set its wall clock apart")
	}
	return r
}
