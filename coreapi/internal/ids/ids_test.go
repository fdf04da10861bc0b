package ids_test

import (
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
)

func TestParse(t *testing.T) {
	const canon = "0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1c"
	for _, in := range []string{canon, "0B6F1C2E-6A1D-4F0E-9C3B-2D7E8F9A0B1C"} {
		got, ok := ids.Parse(in)
		if !ok || got != canon {
			t.Errorf("Parse(%q) = %q, %v; want %q, true", in, got, ok, canon)
		}
		if !ids.Valid(in) {
			t.Errorf("Valid(%q) = false", in)
		}
	}
	bad := []string{
		"",
		"not-a-uuid",
		"0b6f1c2e6a1d4f0e9c3b2d7e8f9a0b1c",       // bare hex: uuid.Parse takes it
		"{0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1c}", // braces: uuid.Parse takes it
		"urn:uuid:0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1c", // URN: uuid.Parse takes it
		"0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1",           // short
		"0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1cc",         // long
		"0b6f1c2e_6a1d-4f0e-9c3b-2d7e8f9a0b1c",          // wrong separator
		"0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1g",          // not hex
		"0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1\x00",       // NUL
	}
	for _, in := range bad {
		if got, ok := ids.Parse(in); ok || got != "" {
			t.Errorf("Parse(%q) = %q, %v; want refused", in, got, ok)
		}
		if ids.Valid(in) {
			t.Errorf("Valid(%q) = true", in)
		}
	}
}

// TestCanonical: a valid UUID in lower case only.
func TestCanonical(t *testing.T) {
	for in, want := range map[string]bool{
		"0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1c":   true,
		"0B6F1C2E-6A1D-4F0E-9C3B-2D7E8F9A0B1C":   false,
		"0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1C":   false,
		"0b6f1c2e6a1d4f0e9c3b2d7e8f9a0b1c":       false,
		"{0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1c}": false,
		"":                                       false,
	} {
		if got := ids.Canonical(in); got != want {
			t.Errorf("Canonical(%q) = %v, want %v", in, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { ids.Canonical("0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1c") }); n != 0 {
		t.Errorf("Canonical allocates %v times", n)
	}
}

func BenchmarkValid(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if !ids.Valid("0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1c") {
			b.Fatal("refused")
		}
	}
}
