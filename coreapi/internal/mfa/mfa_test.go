package mfa_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
)

func key(id string, fill byte) string {
	return id + ":" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{fill}, 32))
}

func TestParseKeysRejects(t *testing.T) {
	for name, text := range map[string]string{
		"empty":       " , ",
		"no colon":    "abc",
		"bad id":      "a/b:" + base64.StdEncoding.EncodeToString(make([]byte, 32)),
		"not base64":  "a:!!!",
		"short key":   "a:" + base64.StdEncoding.EncodeToString(make([]byte, 16)),
		"duplicate":   key("a", 1) + "," + key("a", 2),
		"empty id":    ":" + base64.StdEncoding.EncodeToString(make([]byte, 32)),
		"long secret": "a:" + base64.StdEncoding.EncodeToString(make([]byte, 33)),
	} {
		if _, err := mfa.ParseKeys(text); err == nil {
			t.Errorf("%s: ParseKeys(%q) accepted", name, text)
		}
	}
	ks, err := mfa.ParseKeys(key("new", 1) + "\n" + key("old", 2))
	if err != nil || len(ks) != 2 || ks[0].ID != "new" || ks[1].ID != "old" {
		t.Fatalf("ParseKeys = %+v, %v", ks, err)
	}
	if _, err := mfa.LoadKeys(key("a", 1), "/some/file"); err == nil {
		t.Error("LoadKeys accepted both a value and a file")
	}
	if ks, err := mfa.LoadKeys("", ""); ks != nil || err != nil {
		t.Errorf("LoadKeys of nothing = %v, %v; want nil, nil", ks, err)
	}
}

// TestParseKeysBase64Spellings: a key is read in either base64 alphabet,
// padded or not; standard unpadded and URL padded were refused, so such a
// MFA_ENCRYPTION_KEYS stopped coreapi at start. Another length than 32
// bytes is still refused in every spelling.
func TestParseKeysBase64Spellings(t *testing.T) {
	// 0xfb 0xff 0xbf is "+/+/" in the standard alphabet, "-_-_" in the
	// URL one; 32 bytes end in padding.
	secret := bytes.Repeat([]byte{0xfb, 0xff, 0xbf}, 11)[:32]
	encodings := map[string]*base64.Encoding{"standard padded": base64.StdEncoding, "standard unpadded": base64.RawStdEncoding,
		"URL padded": base64.URLEncoding, "URL unpadded": base64.RawURLEncoding}
	for name, enc := range encodings {
		ks, err := mfa.ParseKeys("k1:" + enc.EncodeToString(secret))
		if err != nil || len(ks) != 1 || !bytes.Equal(ks[0].Secret, secret) {
			t.Errorf("%s: ParseKeys = %+v, %v; want the secret", name, ks, err)
		}
		for _, n := range []int{31, 33, 16} {
			if ks, err := mfa.ParseKeys("k1:" + enc.EncodeToString(bytes.Repeat([]byte{0xfb}, n))); err == nil {
				t.Errorf("%s: a key of %d bytes accepted: %+v", name, n, ks)
			}
		}
	}
	for _, bad := range []string{"k1:" + base64.StdEncoding.EncodeToString(secret) + "=", "k1:" + strings.Replace(base64.StdEncoding.EncodeToString(secret), "+", "-", 1)} {
		if ks, err := mfa.ParseKeys(bad); err == nil {
			t.Errorf("ParseKeys(%q) = %+v, want an error", bad, ks)
		}
	}
}

func sealer(t *testing.T, text string) *mfa.Sealer {
	t.Helper()
	ks, err := mfa.ParseKeys(text)
	if err != nil {
		t.Fatal(err)
	}
	s, err := mfa.NewSealer(ks)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealerRotation(t *testing.T) {
	old := sealer(t, key("k1", 1))
	id, sealed, err := old.Seal([]byte("JBSWY3DPEHPK3PXP"), []byte("user-1"))
	if err != nil || id != "k1" {
		t.Fatalf("seal: %s %v", id, err)
	}
	if bytes.Contains(sealed, []byte("JBSWY3DPEHPK3PXP")) {
		t.Fatal("sealed secret contains the plain text")
	}
	// Rotation: a new first key, the old one kept for opening.
	rotated := sealer(t, key("k2", 2)+","+key("k1", 1))
	plain, err := rotated.Open(id, sealed, []byte("user-1"))
	if err != nil || string(plain) != "JBSWY3DPEHPK3PXP" {
		t.Fatalf("open under the rotated list: %q %v", plain, err)
	}
	if rotated.Current(id) || !rotated.Current("k2") {
		t.Error("Current does not name the first key")
	}
	id2, sealed2, err := rotated.Seal(plain, []byte("user-1"))
	if err != nil || id2 != "k2" {
		t.Fatalf("reseal: %s %v", id2, err)
	}
	if _, err := old.Open(id2, sealed2, []byte("user-1")); !errors.Is(err, mfa.ErrUnknownKey) {
		t.Errorf("old list opened a k2 secret: %v", err)
	}
	// Dropping the old key makes its secrets unreadable, never silently wrong.
	if _, err := sealer(t, key("k2", 2)).Open(id, sealed, []byte("user-1")); !errors.Is(err, mfa.ErrUnknownKey) {
		t.Errorf("open without k1: %v, want ErrUnknownKey", err)
	}
	// Another user's row, a tampered byte, a same-named wrong key: refused.
	if _, err := rotated.Open(id, sealed, []byte("user-2")); !errors.Is(err, mfa.ErrOpen) {
		t.Errorf("open with another owner: %v", err)
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	if _, err := rotated.Open(id, tampered, []byte("user-1")); !errors.Is(err, mfa.ErrOpen) {
		t.Errorf("open tampered: %v", err)
	}
	if _, err := sealer(t, key("k1", 9)).Open(id, sealed, []byte("user-1")); !errors.Is(err, mfa.ErrOpen) {
		t.Errorf("open with a different k1: %v", err)
	}
	if _, err := rotated.Open(id, sealed[:5], []byte("user-1")); !errors.Is(err, mfa.ErrOpen) {
		t.Errorf("open truncated: %v", err)
	}
}

func TestMatchSkewAndInput(t *testing.T) {
	secret, uri, err := mfa.NewSecret("Tollgate", "a@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(uri, "otpauth://totp/") || !strings.Contains(uri, "secret="+secret) {
		t.Errorf("uri = %s", uri)
	}
	now := time.Unix(1_700_000_015, 0)
	cur := mfa.Step(now)
	for d := int64(-3); d <= 3; d++ {
		at := time.Unix((cur+d)*mfa.Period+3, 0)
		code, err := mfa.Code(secret, at)
		if err != nil {
			t.Fatal(err)
		}
		step, ok := mfa.Match(secret, code, now)
		want := d >= -1 && d <= 1
		if ok != want || (ok && step != cur+d) {
			// Two steps can share a code by chance (1 in a million).
			if c2, _ := mfa.Code(secret, now); c2 != code {
				t.Errorf("step %+d: Match = %d %v, want ok=%v step %d", d, step, ok, want, cur+d)
			}
		}
	}
	code, _ := mfa.Code(secret, now)
	for _, bad := range []string{"", "12345", "1234567", "12345a", " " + code[1:], "１２３４５６"} {
		if _, ok := mfa.Match(secret, bad, now); ok {
			t.Errorf("Match(%q) accepted", bad)
		}
	}
	wrong := []byte(code)
	wrong[0] = '0' + (wrong[0]-'0'+1)%10
	if _, ok := mfa.Match(secret, string(wrong), now); ok {
		t.Errorf("wrong code %s accepted", wrong)
	}
}

func TestRecoveryCodes(t *testing.T) {
	codes, err := mfa.NewRecoveryCodes(mfa.RecoveryCodes)
	if err != nil || len(codes) != 10 {
		t.Fatalf("codes = %v, %v", codes, err)
	}
	seen := map[string]bool{}
	for _, c := range codes {
		if len(c) != 11 || c[5] != '-' || seen[c] {
			t.Errorf("code %q malformed or repeated", c)
		}
		seen[c] = true
		if !mfa.LooksLikeRecovery(c) {
			t.Errorf("%q does not look like a recovery code", c)
		}
		if !bytes.Equal(mfa.HashRecovery("u1", c), mfa.HashRecovery("u1", strings.ToUpper(strings.ReplaceAll(c, "-", " ")))) {
			t.Errorf("hash of %q depends on case or separators", c)
		}
	}
	if mfa.LooksLikeRecovery("123456") {
		t.Error("a TOTP code looks like a recovery code")
	}
	tok, h, err := mfa.NewToken()
	if err != nil || !bytes.Equal(h, mfa.HashToken(tok)) || !strings.HasPrefix(tok, "mfa_") {
		t.Errorf("token %q hash mismatch: %v", tok, err)
	}
}

// TestParseKeysErrorsNameNoText: an entry written backwards (the secret
// where the id goes, in the URL-safe alphabet without padding, which the
// id's characters allow) is refused naming its position, never its text:
// the message goes to the start-up log. So are a key of the wrong length
// and an id listed twice (a backwards entry's id is a secret).
func TestParseKeysErrorsNameNoText(t *testing.T) {
	secret := base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32))
	for name, text := range map[string]string{
		"backwards":    secret + ":app",
		"backwards x2": secret + ":" + secret + "," + secret + ":" + secret,
		"short, as id": secret + ":" + base64.StdEncoding.EncodeToString(make([]byte, 16)),
	} {
		_, err := mfa.ParseKeys(text)
		if err == nil {
			t.Fatalf("%s: accepted", name)
		}
		if strings.Contains(err.Error(), secret[:12]) {
			t.Errorf("%s: error %q quotes the secret", name, err)
		}
	}
}
