package logging

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBudget(t *testing.T) {
	b := &Budget{PerSecond: 3}
	at := time.Unix(1000, 0)
	for i := range 3 {
		if ok, dropped := b.Take(at); !ok || dropped != 0 {
			t.Fatalf("line %d: %v, %d dropped", i, ok, dropped)
		}
	}
	for range 5 {
		if ok, _ := b.Take(at.Add(500 * time.Millisecond)); ok {
			t.Fatal("a line over the budget let through")
		}
	}
	if ok, dropped := b.Take(at.Add(time.Second)); !ok || dropped != 5 {
		t.Fatalf("next second: %v, %d dropped, want true, 5", ok, dropped)
	}
	if ok, dropped := b.Take(at.Add(3 * time.Second)); !ok || dropped != 0 {
		t.Fatalf("later: %v, %d dropped, want true, 0 (reported once)", ok, dropped)
	}
}

// reports collects what a Budget's Report is given.
func reports(b *Budget) <-chan int64 {
	ch := make(chan int64, 16)
	b.Report = func(dropped int64) { ch <- dropped }
	return ch
}

// wantReport waits for the next report and checks its count.
func wantReport(t *testing.T, ch <-chan int64, want int64) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("reported %d dropped, want %d", got, want)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("no report of %d dropped within 3 s", want)
	}
}

// TestBudgetReportsAfterBurst: a burst followed by silence was counted,
// and the count waited for a later line that might never come. Now the
// timer reports it, once: a later line gets nothing.
func TestBudgetReportsAfterBurst(t *testing.T) {
	b := &Budget{PerSecond: 3}
	ch := reports(b)
	at := time.Unix(1000, 0)
	for range 10 {
		b.Take(at)
	}
	wantReport(t, ch, 7)
	if ok, dropped := b.Take(at.Add(time.Second)); !ok || dropped != 0 {
		t.Fatalf("after the report: %v, %d dropped, want true, 0 (reported once)", ok, dropped)
	}
	select {
	case got := <-ch:
		t.Fatalf("reported again: %d", got)
	default:
	}
}

// TestBudgetTakeBeforeTimer: a count handed to a later line is not
// reported by the timer too; refusals after it are, alone.
func TestBudgetTakeBeforeTimer(t *testing.T) {
	b := &Budget{PerSecond: 3}
	ch := reports(b)
	at := time.Unix(1000, 0)
	for range 10 {
		b.Take(at)
	}
	if ok, dropped := b.Take(at.Add(time.Second)); !ok || dropped != 7 {
		t.Fatalf("next second: %v, %d dropped, want true, 7", ok, dropped)
	}
	for range 4 { // 2 more let through, 2 refused
		b.Take(at.Add(time.Second))
	}
	// The timer armed in the first second finds the count taken and the
	// next second's 2 pending: those, not the 7, are reported.
	wantReport(t, ch, 2)
	if ok, dropped := b.Take(at.Add(2 * time.Second)); !ok || dropped != 0 {
		t.Fatalf("after the report: %v, %d dropped, want true, 0", ok, dropped)
	}
}

// TestBudgetNoTimerWithoutRefusal: lines within the budget start no timer.
func TestBudgetNoTimerWithoutRefusal(t *testing.T) {
	b := &Budget{PerSecond: 3}
	reports(b)
	at := time.Unix(1000, 0)
	for i := range 9 {
		b.Take(at.Add(time.Duration(i/3) * time.Second))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.timer != nil || b.pending {
		t.Fatal("a timer was started with nothing refused")
	}
}

// TestBudgetConcurrentLosesNothing: lines let through, counts handed to
// Take and counts reported add up to the lines asked for, on the real
// clock over more than one second.
func TestBudgetConcurrentLosesNothing(t *testing.T) {
	b := &Budget{PerSecond: 50}
	var reported atomic.Int64
	b.Report = func(dropped int64) { reported.Add(dropped) }
	var asked, passed, taken atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(1200 * time.Millisecond)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				asked.Add(1)
				ok, dropped := b.Take(time.Now())
				if ok {
					passed.Add(1)
				}
				taken.Add(dropped)
				time.Sleep(10 * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(3 * time.Second)
	for passed.Load()+taken.Load()+reported.Load() != asked.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("%d let through + %d taken + %d reported, want the %d asked for",
				passed.Load(), taken.Load(), reported.Load(), asked.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if reported.Load() == 0 {
		t.Error("nothing reported after the burst")
	}
}

// BenchmarkBudgetTakeRefused: a refused line, the proxy's per-request
// cost while a client is refused.
func BenchmarkBudgetTakeRefused(b *testing.B) {
	bg := &Budget{PerSecond: 1, Report: func(int64) {}}
	at := time.Unix(1000, 0)
	b.ReportAllocs()
	for b.Loop() {
		bg.Take(at)
	}
}

// TestBudgetAllow: Allow hands a count the line takes to Report, before
// saying the line may be written, and reports it once.
func TestBudgetAllow(t *testing.T) {
	b := &Budget{PerSecond: 1}
	var got []int64
	b.Report = func(dropped int64) { got = append(got, dropped) }
	b.timer = time.AfterFunc(time.Hour, func() {}) // no report from the timer here
	at := time.Unix(2000, 0)
	if !b.Allow(at) {
		t.Fatal("first line refused")
	}
	for range 4 {
		if b.Allow(at) {
			t.Fatal("a line over the budget let through")
		}
	}
	if !b.Allow(at.Add(time.Second)) || len(got) != 1 || got[0] != 4 {
		t.Fatalf("next second: reports %v, want [4] before the line", got)
	}
	if !b.Allow(at.Add(2*time.Second)) || len(got) != 1 {
		t.Fatalf("later: reports %v, want the count reported once", got)
	}
	b.timer.Stop()
}
