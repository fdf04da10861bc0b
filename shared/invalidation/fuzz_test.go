package invalidation

import (
	"strings"
	"testing"
)

// FuzzParse: a subject Parse understands is the subject its kind's
// constructor writes for its id, so a parsed subject re-formats to the
// same string; one CheckSubject accepts has a kind, or is one of the
// subjects without an id, and its id is a single token NATS delivers as
// written.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		UserSubject("u1"), TenantSubject("t1"), SubjectAll, APIKeySubject("abcdefgh01234567"),
		"auth.invalidate.apikey.", "auth.invalidate.user.a.b", "auth.invalidate.session.x", "other.user.u1",
		SubjectKeysChanged, SubjectHeartbeat, SubjectRelay, SubjectWildcard, UserSubject("*"), UserSubject("u 1"),
		"auth.invalidate..all", "auth..invalidate.user.u1", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		kind, id := Parse(s)
		var again string
		switch kind {
		case KindUser:
			again = UserSubject(id)
		case KindTenant:
			again = TenantSubject(id)
		case KindAPIKey:
			again = APIKeySubject(id)
		case KindAll:
			again = SubjectAll
		case KindUnknown:
			if id != "" {
				t.Fatalf("Parse(%q) = unknown with id %q", s, id)
			}
		default:
			t.Fatalf("Parse(%q) = kind %d", s, kind)
		}
		if kind != KindUnknown && again != s {
			t.Fatalf("Parse(%q) = (%d, %q), which re-formats to %q", s, kind, id, again)
		}
		if kind != KindUnknown && kind != KindAll && (id == "" || strings.Contains(id, ".")) {
			t.Fatalf("Parse(%q) = (%d, %q): not one token", s, kind, id)
		}
		if CheckSubject(s) != nil {
			return
		}
		switch s {
		case SubjectAll, SubjectKeysChanged, SubjectHeartbeat:
			return
		}
		if kind == KindUnknown || len(s) > MaxSubjectLen || strings.ContainsAny(id, "*> \t\r\n\x00\x7f") {
			t.Fatalf("CheckSubject(%q) accepted (kind %d, id %q)", s, kind, id)
		}
		for i := 0; i < len(id); i++ {
			if id[i] <= ' ' || id[i] == 0x7f {
				t.Fatalf("CheckSubject(%q) accepted the id byte %q", s, id[i])
			}
		}
	})
}
