package audit

import "testing"

func TestMaskEmail(t *testing.T) {
	for in, want := range map[string]string{
		"ada@example.com":         "a***@example.com",
		"a@example.com":           "a***@example.com",
		"élodie@exemple.fr":       "é***@exemple.fr",
		`"a@b"@example.com`:       `"***@example.com`,
		"private.new@example.org": "p***@example.org",
		"no-at-sign":              "***",
		"@example.com":            "***",
		"":                        "***",
	} {
		if got := MaskEmail(in); got != want {
			t.Errorf("MaskEmail(%q) = %q, want %q", in, got, want)
		}
	}
}
