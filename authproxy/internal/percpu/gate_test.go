package percpu

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Close waits for those inside to leave, and no one goes in after it
// began: users that went in and saw no Close finish before it returns.
func TestGateCloseWaitsForThoseInside(t *testing.T) {
	g := NewGate()
	cell, ok := g.Enter()
	if !ok {
		t.Fatal("a new gate is shut")
	}
	closed := make(chan bool, 1)
	go func() { closed <- g.Close() }()
	for {
		if c, ok := g.Enter(); ok {
			g.Leave(c)
			time.Sleep(time.Millisecond)
			continue
		}
		break // Close has begun
	}
	select {
	case <-closed:
		t.Fatal("Close returned while a user was inside")
	case <-time.After(50 * time.Millisecond):
	}
	g.Leave(cell)
	select {
	case first := <-closed:
		if !first {
			t.Fatal("the first Close reported the gate shut already")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return once the last user left")
	}
	if g.Close() {
		t.Fatal("a second Close reported shutting the gate")
	}
	if _, ok := g.Enter(); ok {
		t.Fatal("went in after Close")
	}
}

// Users going in and out on every CPU while the gate shuts: none is
// inside once Close has returned.
func TestGateNoneInsideAfterClose(t *testing.T) {
	g := NewGate()
	var (
		inside atomic.Int64
		after  atomic.Bool // set once Close returned
		wg     sync.WaitGroup
		stop   atomic.Bool
	)
	for range 8 {
		wg.Go(func() {
			for !stop.Load() {
				c, ok := g.Enter()
				if !ok {
					continue
				}
				inside.Add(1)
				if after.Load() {
					t.Error("inside the gate after Close returned")
				}
				inside.Add(-1)
				g.Leave(c)
			}
		})
	}
	time.Sleep(10 * time.Millisecond)
	g.Close()
	after.Store(true)
	if n := inside.Load(); n != 0 {
		t.Errorf("%d inside once Close returned", n)
	}
	time.Sleep(10 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
}

// BenchmarkGate is a user's way in and out, on every CPU at once.
func BenchmarkGate(b *testing.B) {
	g := NewGate()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, _ := g.Enter()
			g.Leave(c)
		}
	})
}
