package lockout

import (
	"bytes"
	"testing"
)

// TestEmailKeySpellings: every spelling of one address (letter case,
// surrounding space, precomposed or decomposed letters) counts against one
// key, and another address against another.
func TestEmailKeySpellings(t *testing.T) {
	want := EmailKey("jos\u00e9@example.com")
	for _, s := range []string{"Jos\u00e9@Example.com", " jose\u0301@example.com\t", "JOSE\u0301@EXAMPLE.COM"} {
		if !bytes.Equal(EmailKey(s), want) {
			t.Errorf("EmailKey(%+q) differs from EmailKey(%+q)", s, "jos\u00e9@example.com")
		}
	}
	if bytes.Equal(EmailKey("jose@example.com"), want) {
		t.Error("EmailKey confuses jose@ with jos\u00e9@")
	}
}
