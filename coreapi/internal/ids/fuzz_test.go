package ids_test

import (
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
)

// FuzzParse: an id accepted is the text given, up to letter case, and
// its canonical form is 36 characters of lower-case hex and hyphens in
// the 8-4-4-4-12 layout, which Parse returns as it is.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1c", "0B6F1C2E-6A1D-4F0E-9C3B-2D7E8F9A0B1C", "",
		"0b6f1c2e6a1d4f0e9c3b2d7e8f9a0b1c", "{0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1c}",
		"urn:uuid:0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1c", "0b6f1c2e_6a1d-4f0e-9c3b-2d7e8f9a0b1c",
		"0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := ids.Parse(s)
		if ok != ids.Valid(s) {
			t.Fatalf("Parse(%q) ok %v, Valid %v", s, ok, ids.Valid(s))
		}
		if !ok {
			if got != "" {
				t.Fatalf("Parse(%q) = %q, false", s, got)
			}
			return
		}
		if !strings.EqualFold(got, s) || len(got) != 36 {
			t.Fatalf("Parse(%q) = %q", s, got)
		}
		for i := 0; i < len(got); i++ {
			c := got[i]
			hyphen := i == 8 || i == 13 || i == 18 || i == 23
			if hyphen != (c == '-') || !hyphen && !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				t.Fatalf("Parse(%q) = %q: byte %d", s, got, i)
			}
		}
		if again, ok := ids.Parse(got); !ok || again != got {
			t.Fatalf("Parse(%q) = %q, %v", got, again, ok)
		}
	})
}
