package logging

import (
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
