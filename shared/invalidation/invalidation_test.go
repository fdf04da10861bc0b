package invalidation

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		subject string
		kind    Kind
		id      string
	}{
		{UserSubject("u1"), KindUser, "u1"},
		{TenantSubject("t1"), KindTenant, "t1"},
		{SubjectAll, KindAll, ""},
		{APIKeySubject("abcdefgh01234567"), KindAPIKey, "abcdefgh01234567"},
		{"auth.invalidate.apikey.", KindUnknown, ""},
		{"auth.invalidate.apikey.a.b", KindUnknown, ""},
		{"auth.invalidate.user.", KindUnknown, ""},
		{"auth.invalidate.user.a.b", KindUnknown, ""},
		{"auth.invalidate.session.x", KindUnknown, ""},
		{"other.user.u1", KindUnknown, ""},
		// Key changes are their own subject, not an invalidation.
		{SubjectKeysChanged, KindUnknown, ""},
	}
	for _, tt := range tests {
		k, id := Parse(tt.subject)
		if k != tt.kind || id != tt.id {
			t.Errorf("Parse(%q) = (%v, %q), want (%v, %q)", tt.subject, k, id, tt.kind, tt.id)
		}
	}
}

func TestCheckSubject(t *testing.T) {
	long := strings.Repeat("a", MaxSubjectLen-len(UserSubject("")))
	for _, s := range []string{
		UserSubject("0b6f3c1e-8a2d-4f5e-9c7b-1d2e3f4a5b6c"), TenantSubject("t1"), APIKeySubject("abcdefgh01234567"),
		SubjectAll, SubjectKeysChanged, SubjectHeartbeat, UserSubject(long),
	} {
		if err := CheckSubject(s); err != nil {
			t.Errorf("CheckSubject(%q) = %v, want nil", s, err)
		}
	}
	for _, s := range []string{
		UserSubject(long + "a"),                // past MaxSubjectLen
		UserSubject(strings.Repeat("a", 5000)), // past NATS's control line
		UserSubject(""), TenantSubject(""),     // an empty token
		UserSubject("a.b"), "auth.invalidate..all", "auth..invalidate.user.u1",
		UserSubject("*"), UserSubject(">"), TenantSubject("t*"), // wildcards
		UserSubject("u 1"), UserSubject("u\t1"), UserSubject("u\n1"), UserSubject("u\x001"), UserSubject("u\x7f"),
		"", "auth.invalidate.session.x", SubjectRelay, SubjectWildcard, "auth.invalidate.user",
	} {
		if err := CheckSubject(s); !errors.Is(err, ErrInvalidSubject) {
			t.Errorf("CheckSubject(%q) = %v, want ErrInvalidSubject", s, err)
		}
	}
}
