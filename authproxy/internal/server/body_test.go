package server

import "testing"

// The body buffers' memory: holdBody counts only what fits within
// BODY_MEMORY_MB and refuses the rest, countBody (the allocator's rounding
// of a buffer already grown) counts whatever the bound, and the request
// gives back exactly what it was counted (observe reads st.bodyHeld).
func TestBodyMemoryCounts(t *testing.T) {
	s := &Server{o: Options{BodyMemory: 100}}
	st := &state{}
	if !s.holdBody(st, 90) {
		t.Fatal("90 of 100 refused")
	}
	if s.holdBody(st, 20) {
		t.Fatal("20 more past 100 held")
	}
	if got := s.bodyBytes.Load(); got != 90 {
		t.Fatalf("counted %d after a refusal, want 90", got)
	}
	s.countBody(st, 30) // rounding of a buffer already allocated
	if got := s.bodyBytes.Load(); got != 120 || st.bodyHeld != 120 {
		t.Fatalf("counted %d (request %d), want 120 and 120: the rounding counted past the bound", got, st.bodyHeld)
	}
	if s.holdBody(st, 1) {
		t.Fatal("a byte held past the bound")
	}
}
