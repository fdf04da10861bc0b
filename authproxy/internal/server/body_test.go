package server

import (
	"log/slog"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
)

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

// A server built without a linger (as the command builds it) reads a
// connection answered 413 for 5 s before closing it.
func TestLingerDefault(t *testing.T) {
	s := New(Deps{Log: slog.New(slog.DiscardHandler), Metrics: metrics.New()}, Options{})
	if s.o.Linger != 5*time.Second {
		t.Fatalf("linger %v, want 5s", s.o.Linger)
	}
}
