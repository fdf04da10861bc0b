package identity

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

// FuzzParseKeys gives the key list parser an arbitrary text, as an
// operator may write IDENTITY_KEYS or its Secret: a bad list is an error,
// never a panic; a list accepted has unique, valid ids and secrets of at
// least MinKeyLen bytes, each what its text decodes to in one of the
// base64 forms accepted, and written back as "id:base64" entries it
// parses to the same keys.
func FuzzParseKeys(f *testing.F) {
	k32 := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	u33 := base64.RawURLEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef!"))
	for _, s := range []string{
		"core-2:" + k32 + ",core-1:" + k32 + "\n", "core:" + u33, " k1:" + k32 + "\r\n\tk2:" + u33 + " ,",
		"", "core", "core:c2hvcnQ=", "a b:" + k32, "bad/id:" + k32, "x:" + k32 + ",x:" + k32, ":" + k32,
		"k:" + k32[:20] + "\v" + k32[20:], "k:" + k32 + "\u00a0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		keys, err := ParseKeys(text)
		if err != nil {
			if keys != nil {
				t.Fatalf("ParseKeys(%q) = %v with the error %v", text, keys, err)
			}
			return
		}
		if len(keys) == 0 {
			t.Fatalf("ParseKeys(%q) accepted no key", text)
		}
		seen := map[string]bool{}
		var list []string
		for _, k := range keys {
			if !ValidKeyID(k.ID) || seen[k.ID] || len(k.Secret) < MinKeyLen {
				t.Fatalf("ParseKeys(%q): key %q (%d bytes), seen %v", text, k.ID, len(k.Secret), seen[k.ID])
			}
			seen[k.ID] = true
			if !strings.Contains(text, k.ID+":") {
				t.Fatalf("ParseKeys(%q): the id %q is not in the text", text, k.ID)
			}
			list = append(list, k.ID+":"+base64.StdEncoding.EncodeToString(k.Secret))
		}
		again, err := ParseKeys(strings.Join(list, ","))
		if err != nil || len(again) != len(keys) {
			t.Fatalf("ParseKeys(%q) = %v, written back %v, %v", text, keys, again, err)
		}
		for i := range keys {
			if again[i].ID != keys[i].ID || !bytes.Equal(again[i].Secret, keys[i].Secret) {
				t.Fatalf("ParseKeys(%q): key %d written back parses to %v", text, i, again[i])
			}
		}
	})
}
