package mail_test

import (
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
)

// TestCanonicalBoundsItsWork: an address longer than MaxCanonicalInput
// once trimmed is handed back trimmed, not normalized (NFC and IDNA ran
// over the whole of it, up to 80 ms for one of a 1 MiB body, before any
// limit), so callers refuse it by its length; up to the bound, and with
// any white space around it, an address is normalized as before.
func TestCanonicalBoundsItsWork(t *testing.T) {
	// IDNA's mapping drops a soft hyphen (U+00AD) from a domain: this one
	// shrinks to ada@example.com when normalized.
	long := "ada@exam" + strings.Repeat("\u00ad", mail.MaxCanonicalInput) + "ple.com"
	if got := mail.Canonical(long); got != long {
		t.Errorf("Canonical(%d octets) = %q (%d octets), want it as it came", len(long), clip(got), len(got))
	}
	if got := mail.Canonical("  " + long + "\n"); got != long {
		t.Errorf("Canonical(%d octets with white space) = %d octets, want it trimmed only", len(long)+3, len(got))
	}
	// At the bound: normalized (full-width letters, 3 octets each, map to
	// ASCII ones).
	fw := "ada@" + strings.Repeat("\uff41", (mail.MaxCanonicalInput-4-8)/3) + ".example"
	if len(fw) > mail.MaxCanonicalInput {
		t.Fatalf("%d octets: over the bound", len(fw))
	}
	want := "ada@" + strings.Repeat("a", (mail.MaxCanonicalInput-4-8)/3) + ".example"
	if got := mail.Canonical(strings.Repeat(" ", 2000) + fw); got != want {
		t.Errorf("Canonical(full-width domain at the bound, behind white space) = %q, want %q", clip(got), clip(want))
	}
	if got := mail.Canonical("ada@exam\u00adple.com"); got != "ada@example.com" {
		t.Errorf("Canonical(soft hyphen) = %q, want ada@example.com", got)
	}
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
