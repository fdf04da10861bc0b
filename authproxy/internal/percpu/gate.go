package percpu

import (
	"runtime"
	"sync/atomic"
)

// Gate guards something that must not be in use while it is torn down
// (a store whose Close shuts the channels its operations send on). Users
// go in and out in great numbers and at once; Close shuts the gate, turns
// away whoever comes after and waits for those inside to leave. Going in
// counts in the cell of the caller's CPU, not in one shared word (which,
// like an RWMutex's reader count, every CPU would pull over in turn); the
// only shared word it reads is whether the gate is shut, written once.
// Make one with NewGate.
type Gate struct {
	cells  []gateCell
	closed atomic.Bool
}

type gateCell struct {
	n atomic.Int64 // users inside who went in through this cell
	_ [CacheLine - 8]byte
}

// NewGate returns an open gate.
func NewGate() *Gate { return &Gate{cells: make([]gateCell, Cells)} }

// Enter goes in if the gate is open: ok, and Leave(cell) must follow once
// the caller is done; nothing that waits for Close may run in between.
// Once Close has begun, Enter returns false.
func (g *Gate) Enter() (cell int, ok bool) {
	if g.closed.Load() { // after Close, no count that Close would wait out
		return 0, false
	}
	cell = Pin()
	g.cells[cell].n.Add(1)
	Unpin()
	// Counted first, checked second; Close writes first, reads the counts
	// second: either this sees the gate shut, or Close sees this inside.
	if g.closed.Load() {
		g.cells[cell].n.Add(-1)
		return 0, false
	}
	return cell, true
}

// Leave goes out through the cell Enter returned.
func (g *Gate) Leave(cell int) { g.cells[cell].n.Add(-1) }

// Close shuts the gate and waits until everyone who went in has left. It
// reports whether this call shut it (false: another had, and may still be
// waiting).
func (g *Gate) Close() bool {
	if g.closed.Swap(true) {
		return false
	}
	for i := range g.cells {
		// A count that is not zero is of users inside, or of ones
		// that raced the shutting and Enter is about to turn away:
		// both leave soon.
		for g.cells[i].n.Load() != 0 {
			runtime.Gosched()
		}
	}
	return true
}
