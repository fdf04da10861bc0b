package mfa_test

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
)

// FuzzParseKeys gives MFA_ENCRYPTION_KEYS an arbitrary text: a bad list
// is an error, never a panic; a list accepted has unique ids and 32-byte
// secrets, and written back as "id:base64" entries parses to the same
// keys, which seal and open.
func FuzzParseKeys(f *testing.F) {
	for _, s := range []string{
		key("new", 1) + "\n" + key("old", 2), " , ", "abc", "a:!!!", key("a", 1) + "," + key("a", 2),
		"a:" + base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)),
		"a:" + base64.StdEncoding.EncodeToString(make([]byte, 33)), key("k", 3) + "\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		keys, err := mfa.ParseKeys(text)
		if err != nil {
			if keys != nil {
				t.Fatalf("ParseKeys(%q) = %v with the error %v", text, keys, err)
			}
			return
		}
		seen := map[string]bool{}
		var list []string
		for _, k := range keys {
			if k.ID == "" || len(k.ID) > 64 || strings.ContainsAny(k.ID, ":, \r\n\t") || seen[k.ID] || len(k.Secret) != 32 {
				t.Fatalf("ParseKeys(%q): key %q (%d bytes)", text, k.ID, len(k.Secret))
			}
			seen[k.ID] = true
			list = append(list, k.ID+":"+base64.StdEncoding.EncodeToString(k.Secret))
		}
		again, err := mfa.ParseKeys(strings.Join(list, ","))
		if err != nil || len(again) != len(keys) {
			t.Fatalf("ParseKeys(%q) = %v, written back %v, %v", text, keys, again, err)
		}
		for i := range keys {
			if again[i].ID != keys[i].ID || !bytes.Equal(again[i].Secret, keys[i].Secret) {
				t.Fatalf("ParseKeys(%q): key %d written back parses to %v", text, i, again[i])
			}
		}
		s, err := mfa.NewSealer(keys)
		if err != nil {
			t.Fatalf("NewSealer: %v", err)
		}
		id, sealed, err := s.Seal([]byte("JBSWY3DPEHPK3PXP"), []byte("user-1"))
		if err != nil || id != keys[0].ID {
			t.Fatalf("Seal: %q, %v", id, err)
		}
		if plain, err := s.Open(id, sealed, []byte("user-1")); err != nil || string(plain) != "JBSWY3DPEHPK3PXP" {
			t.Fatalf("Open: %q, %v", plain, err)
		}
	})
}
