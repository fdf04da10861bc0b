package invalidation

import "testing"

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
