package logging

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestRedact(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"plain", "dial tcp: connection refused", "dial tcp: connection refused"},
		{"bearer", "auth: Bearer eyJhbGciOi.x.y failed", "auth: Bearer [redacted] failed"},
		{"basic", "basic dXNlcjpwYXNz", "basic [redacted]"},
		{"api key", "key tg_abcd1234efgh5678_secretpart refused", "key tg_[redacted] refused"},
		{"quoted", `bad header "Authorization: Token abc"`, `bad header "[redacted]"`},
		{"quote cut at the end", `bad header "Token ab\`, `bad header "[redacted]"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Redact(tt.in); got != tt.want {
				t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	long := strings.Repeat("x", 10<<10)
	if got := Redact(long); got != long[:MaxRedactedBytes]+"..." {
		t.Errorf("long text cut to %d bytes, want %d and ...", len(got), MaxRedactedBytes)
	}
	// A rune across the limit is left out whole.
	got := Redact(strings.Repeat("é", MaxRedactedBytes))
	if len(got) > MaxRedactedBytes+3 || !utf8.ValidString(got) || !strings.HasSuffix(got, "...") {
		t.Errorf("cut to %d bytes, valid UTF-8 %v: %q", len(got), utf8.ValidString(got), got)
	}
}

func TestRedactAddresses(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"plain", "dial tcp: connection refused", "dial tcp: connection refused"},
		{"reply", `sending SMTP RCPT TO command: 550 "5.1.1 <ada.l+tag@example.com>: Recipient address rejected", affected recipient(s): <ada.l+tag@example.com>`,
			`sending SMTP RCPT TO command: 550 "5.1.1 <[address]>: Recipient address rejected", affected recipient(s): <[address]>`},
		{"bare", "452 4.2.2 josé@bücher.example over quota", "452 4.2.2 [address] over quota"},
		{"literal", "550 5.7.1 ada@[127.0.0.1] refused", "550 5.7.1 [address] refused"},
		{"api key", "key tg_abcd1234efgh5678_secretpart refused", "key tg_[redacted] refused"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := RedactAddresses(tt.in); got != tt.want {
				t.Errorf("RedactAddresses(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	long := strings.Repeat("x", 10<<10)
	if got := RedactAddresses(long); got != long[:MaxRedactedBytes]+"..." {
		t.Errorf("long text cut to %d bytes, want %d and ...", len(got), MaxRedactedBytes)
	}
}
