package mail_test

import (
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
)

// TestValidNewAddressRefusesLookAlikes: an address given for an account
// or an invitation is refused when its local part could pass for another
// address's: a character NFKC changes (a compatibility character), or
// letters of more than one script. Every such address is a plain one
// (ValidAddress), which is still mailed. One script other than Latin, a
// writing system of several (Japanese), accented Latin letters, digits and
// a subaddress are taken.
func TestValidNewAddressRefusesLookAlikes(t *testing.T) {
	for _, tt := range []struct {
		addr string
		want bool
	}{
		{"admin-x@example.com", true},
		{"jo+tag@example.com", true},
		{"jo.2024+news-1@example.com", true},
		{"o'hara@example.com", true},
		{"jos\u00e9@example.com", true},                // é
		{"m\u00fcller@example.com", true},              // ü
		{"\u0438\u0432\u0430\u043d@example.com", true}, // иван, all Cyrillic
		{"\u0438\u0432\u0430\u043d.42@example.com", true},
		{"\u03b1\u03bb\u03ad\u03be\u03b7\u03c2@example.gr", true}, // αλέξης, all Greek
		{"\u7530\u4e2d@example.jp", true},                         // 田中, Han
		{"\u3084\u307e\u3060\u592a\u90ce@example.jp", true},       // やまだ太郎, Hiragana + Han
		{"\u30e4\u30de\u30c0.\u592a\u90ce@example.jp", true},      // ヤマダ.太郎, Katakana + Han
		{"tanaka.\u592a\u90ce@example.jp", true},                  // Latin + Han (Japanese)
		{"\u0645\u062d\u0645\u062f@example.com", true},            // محمد, all Arabic
		{"jo@b\u00fccher.example", true},                          // the domain is IDNA's

		{"\uff41dmin-x@example.com", false},                   // ａdmin: full-width a
		{"\uff41\uff44\uff4d\uff49\uff4e@example.com", false}, // all full-width
		{"admin\uff11@example.com", false},                    // full-width digit
		{"of\ufb01ce@example.com", false},                     // ﬁ ligature
		{"jo\u00b2@example.com", false},                       // superscript two
		{"\u017fam@example.com", false},                       // ſ, long s
		{"\U0001d41admin@example.com", false},                 // 𝐚, mathematical bold a
		{"\u0430dmin-x@example.com", false},                   // аdmin: Cyrillic a
		{"p\u0430yp\u0430l@example.com", false},               // Cyrillic a twice
		{"p\u03b1ypal@example.com", false},                    // Greek alpha
		{"\u0438\u0432\u0430n@example.com", false},            // Cyrillic with a Latin n
		{"\u03b1\u0430@example.com", false},                   // Greek and Cyrillic, no Latin
		{"\u3084\ud55c@example.com", false},                   // Hiragana and Hangul
	} {
		if !mail.ValidAddress(tt.addr) {
			t.Errorf("ValidAddress(%+q) = false: every address here is a plain one", tt.addr)
		}
		if got := mail.ValidNewAddress(tt.addr); got != tt.want {
			t.Errorf("ValidNewAddress(%+q) = %t, want %t", tt.addr, got, tt.want)
		}
	}
	// What ValidAddress refuses stays refused.
	for _, s := range []string{"", "a@", "Jo <jo@example.com>", "ada@localhost", "x@a.b.invalid", "a\u200b@b.test"} {
		if mail.ValidNewAddress(s) {
			t.Errorf("ValidNewAddress(%+q) = true", s)
		}
	}
}
