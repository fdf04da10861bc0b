package identity

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func newSigner(t testing.TB) *Signer {
	t.Helper()
	s, err := NewSigner(testKey, 0)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sampleIdentity() Identity {
	return Identity{
		UserID:      "0b4f1f8e-1111-4c2a-9a53-7a1f7e0c0001",
		TenantID:    "0b4f1f8e-2222-4c2a-9a53-7a1f7e0c0002",
		SessionID:   "0b4f1f8e-3333-4c2a-9a53-7a1f7e0c0003",
		Roles:       []string{"admin", "member"},
		Permissions: []string{"users:read", "users:write"},
	}
}

func TestSignVerify(t *testing.T) {
	s := newSigner(t)
	now := time.UnixMilli(1_800_000_000_000)
	id := sampleIdentity()
	ts := now.UnixMilli()
	sig := s.Sign(ts, "GET", "/api/v1/users?limit=5", id)
	if !strings.HasPrefix(sig, "v1=") {
		t.Fatalf("signature %q lacks v1= prefix", sig)
	}
	tsStr := strconv.FormatInt(ts, 10)

	other := sampleIdentity()
	other.Roles = []string{"owner"}
	otherKey, _ := NewSigner([]byte("ffffffffffffffffffffffffffffffff"), 0)

	tests := []struct {
		name    string
		now     time.Time
		ts, sig string
		method  string
		path    string
		id      Identity
		wantErr error
	}{
		{"valid", now, tsStr, sig, "GET", "/api/v1/users?limit=5", id, nil},
		{"valid at window edge", now.Add(30 * time.Second), tsStr, sig, "GET", "/api/v1/users?limit=5", id, nil},
		{"stale", now.Add(31 * time.Second), tsStr, sig, "GET", "/api/v1/users?limit=5", id, ErrExpired},
		{"future", now.Add(-31 * time.Second), tsStr, sig, "GET", "/api/v1/users?limit=5", id, ErrExpired},
		{"other method", now, tsStr, sig, "DELETE", "/api/v1/users?limit=5", id, ErrSignature},
		{"other path", now, tsStr, sig, "GET", "/api/v1/users?limit=6", id, ErrSignature},
		{"other roles", now, tsStr, sig, "GET", "/api/v1/users?limit=5", other, ErrSignature},
		{"other timestamp", now, strconv.FormatInt(ts+1, 10), sig, "GET", "/api/v1/users?limit=5", id, ErrSignature},
		{"other key", now, tsStr, otherKey.Sign(ts, "GET", "/api/v1/users?limit=5", id), "GET", "/api/v1/users?limit=5", id, ErrSignature},
		{"missing signature", now, tsStr, "", "GET", "/", id, ErrMissing},
		{"missing timestamp", now, "", sig, "GET", "/", id, ErrMissing},
		{"bad timestamp", now, "12x", sig, "GET", "/", id, ErrMalformed},
		{"negative timestamp", now, "-5", sig, "GET", "/", id, ErrMalformed},
		{"no version", now, tsStr, strings.TrimPrefix(sig, "v1="), "GET", "/api/v1/users?limit=5", id, ErrMalformed},
		{"v2", now, tsStr, "v2=" + strings.TrimPrefix(sig, "v1="), "GET", "/api/v1/users?limit=5", id, ErrMalformed},
		{"bad base64", now, tsStr, "v1=!!!!", "GET", "/", id, ErrMalformed},
		{"short mac", now, tsStr, "v1=AAAA", "GET", "/", id, ErrMalformed},
		{"newline injection", now, tsStr, sig, "GET", "/api/v1/users?limit=5", Identity{UserID: id.UserID + "\n" + id.TenantID}, ErrMalformed},
		{"comma in role", now, tsStr, sig, "GET", "/api/v1/users?limit=5", Identity{Roles: []string{"a,b"}}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Verify(tt.now, tt.ts, tt.sig, tt.method, tt.path, tt.id)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify() = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestListsAreNotAmbiguous(t *testing.T) {
	// ["a","b"] and ["a,b"] must not produce the same verifiable signature.
	s := newSigner(t)
	now := time.Now()
	ts := now.UnixMilli()
	sig := s.Sign(ts, "GET", "/", Identity{Roles: []string{"a", "b"}})
	err := s.Verify(now, strconv.FormatInt(ts, 10), sig, "GET", "/", Identity{Roles: []string{"a,b"}})
	if err == nil {
		t.Fatal("a role containing a comma verified against a split list")
	}
	// Moving a value between fields changes the signature.
	sig = s.Sign(ts, "GET", "/", Identity{UserID: "u", TenantID: ""})
	if err := s.Verify(now, strconv.FormatInt(ts, 10), sig, "GET", "/", Identity{UserID: "", TenantID: "u"}); err == nil {
		t.Fatal("user id verified as tenant id")
	}
}

func TestNewSignerShortKey(t *testing.T) {
	if _, err := NewSigner([]byte("short"), 0); !errors.Is(err, ErrShortKey) {
		t.Fatalf("NewSigner(short) = %v, want ErrShortKey", err)
	}
}

func TestIsIdentityHeader(t *testing.T) {
	tests := map[string]bool{
		"X-Auth-User-Id":  true,
		"x-auth-user-id":  true,
		"X_Auth_User_Id":  true,
		"x_AUTH-anything": true,
		"X-Auth-":         true,
		"X-Auth":          false,
		"X-Authorization": false,
		"Authorization":   false,
		"X-Request-Id":    false,
		"":                false,
	}
	for name, want := range tests {
		if got := IsIdentityHeader(name); got != want {
			t.Errorf("IsIdentityHeader(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestSplitJoin(t *testing.T) {
	if got := SplitList(""); got != nil {
		t.Fatalf("SplitList(\"\") = %v, want nil", got)
	}
	if got := SplitList(JoinList([]string{"a", "b"})); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("round trip = %v", got)
	}
}

func FuzzVerify(f *testing.F) {
	s := newSigner(f)
	now := time.UnixMilli(1_800_000_000_000)
	ts := now.UnixMilli()
	id := sampleIdentity()
	good := s.Sign(ts, "GET", "/api/v1/users", id)
	f.Add(strconv.FormatInt(ts, 10), good, "GET", "/api/v1/users", id.UserID, id.TenantID, "admin,member")
	f.Add("0", "v1=", "", "", "", "", "")
	f.Add("99999999999999999999", "v1=AAAA", "POST", "/x\n", "a\nb", "", ",")
	f.Fuzz(func(t *testing.T, tsS, sig, method, path, user, tenant, roles string) {
		cand := Identity{UserID: user, TenantID: tenant, Roles: SplitList(roles), Permissions: id.Permissions, SessionID: id.SessionID}
		err := s.Verify(now, tsS, sig, method, path, cand)
		if err != nil {
			return
		}
		// Anything that verifies must be exactly what was signed.
		if tsS != strconv.FormatInt(ts, 10) || sig != good || method != "GET" || path != "/api/v1/users" ||
			user != id.UserID || tenant != id.TenantID || roles != "admin,member" {
			t.Fatalf("forged input verified: ts=%q sig=%q method=%q path=%q user=%q tenant=%q roles=%q",
				tsS, sig, method, path, user, tenant, roles)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	s := newSigner(b)
	id := sampleIdentity()
	now := time.Now()
	ts := now.UnixMilli()
	sig := s.Sign(ts, "GET", "/api/v1/users/me", id)
	tsS := strconv.FormatInt(ts, 10)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Verify(now, tsS, sig, "GET", "/api/v1/users/me", id); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendSignature(b *testing.B) {
	s := newSigner(b)
	id := sampleIdentity()
	ts := time.Now().UnixMilli()
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = s.AppendSignature(buf[:0], ts, "GET", "/api/v1/users/me", id)
	}
}

// AppendList renders a list exactly as JoinList does (a proxy shares the
// values of its lists with the header lines it builds with it), and
// AppendHeaderLine writes one HTTP/1.1 header line.
func TestAppendListAndHeaderLine(t *testing.T) {
	for _, list := range [][]string{nil, {}, {"a"}, {"notes:read", "notes:write", "users:read"}} {
		if got := string(AppendList([]byte("x"), list)); got != "x"+JoinList(list) {
			t.Errorf("AppendList(%q) = %q, want %q", list, got, "x"+JoinList(list))
		}
	}
	if got := string(AppendHeaderLine([]byte("A: b\r\n"), HeaderRoles, "admin,member")); got != "A: b\r\nX-Auth-Roles: admin,member\r\n" {
		t.Errorf("AppendHeaderLine = %q", got)
	}
	if got := string(AppendHeaderLine(nil, HeaderAMR, "")); got != "X-Auth-Amr: \r\n" {
		t.Errorf("AppendHeaderLine with an empty value = %q", got)
	}
}
