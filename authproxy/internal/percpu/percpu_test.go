package percpu

import (
	"sync"
	"sync/atomic"
	"testing"
)

// Numbers taken from many goroutines at once are all distinct, and dense:
// none is above what the cells handed out could reach.
func TestSequenceDistinct(t *testing.T) {
	s := NewSequence()
	const goroutines, each = 16, 20_000
	got := make([][]uint64, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for range each {
				got[g] = append(got[g], s.Next())
			}
		})
	}
	wg.Wait()
	seen := make(map[uint64]bool, goroutines*each)
	for _, ns := range got {
		for _, n := range ns {
			if seen[n] {
				t.Fatalf("%d handed out twice", n)
			}
			seen[n] = true
			if n >= uint64(goroutines*each*Cells) {
				t.Fatalf("%d: beyond %d numbers from %d cells", n, goroutines*each, Cells)
			}
		}
	}
}

func TestCells(t *testing.T) {
	if Cells < 1 || Cells > 64 || Cells&(Cells-1) != 0 || CellMask != Cells-1 {
		t.Fatalf("Cells %d, CellMask %d", Cells, CellMask)
	}
	if c := Pin(); c < 0 || c >= Cells {
		Unpin()
		t.Fatalf("Pin gave cell %d of %d", c, Cells)
	}
	Unpin()
}

// BenchmarkSequence compares Next with one shared counter, on every CPU at
// once (the request-id case).
func BenchmarkSequence(b *testing.B) {
	b.Run("percpu", func(b *testing.B) {
		s := NewSequence()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				s.Next()
			}
		})
	})
	b.Run("shared", func(b *testing.B) {
		var n atomic.Uint64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				n.Add(1)
			}
		})
	})
}
