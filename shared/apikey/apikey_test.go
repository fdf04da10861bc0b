package apikey

import (
	"bytes"
	"strings"
	"testing"
)

func TestNewParses(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		k, id := New()
		if len(k) != Len {
			t.Fatalf("len %d, want %d", len(k), Len)
		}
		got, ok := Parse([]byte(k))
		if !ok || string(got) != id || !ValidPublicID(id) {
			t.Fatalf("Parse(%q) = %q %v, want %q", k, got, ok, id)
		}
		if seen[k] || seen[id] {
			t.Fatalf("repeated %q", k)
		}
		seen[k], seen[id] = true, true
	}
}

// TestSecretUniform: every character of the set shows up in the secret
// part and none outside it (rejection sampling, no modulo bias visible at
// this size).
func TestSecretUniform(t *testing.T) {
	counts := map[byte]int{}
	for range 2000 {
		k, _ := New()
		for _, c := range []byte(k[Len-SecretLen:]) {
			counts[c]++
		}
	}
	if len(counts) != len(alphanum) {
		t.Fatalf("%d distinct characters, want %d", len(counts), len(alphanum))
	}
	want := 2000 * SecretLen / len(alphanum) // ≈ 1387
	for c, n := range counts {
		if !strings.ContainsRune(alphanum, rune(c)) || n < want*7/10 || n > want*13/10 {
			t.Errorf("character %q drawn %d times, want about %d", c, n, want)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	good, _ := New()
	bad := map[string]string{
		"empty":          "",
		"prefix only":    "tg_",
		"short":          good[:Len-1],
		"long":           good + "a",
		"upper in id":    "tg_" + strings.ToUpper(good[3:19]) + good[19:],
		"no separator":   good[:19] + "-" + good[20:],
		"symbol":         good[:Len-1] + "-",
		"other prefix":   "tt_" + good[3:],
		"jwt":            "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln",
		"10 KB":          "tg_" + strings.Repeat("a", 10<<10),
		"space":          good[:30] + " " + good[31:],
		"nul":            good[:30] + "\x00" + good[31:],
		"utf8 lookalike": good[:Len-2] + "é",
	}
	for name, k := range bad {
		if id, ok := Parse([]byte(k)); ok {
			t.Errorf("%s: Parse(%q) = %q, accepted", name, k, id)
		}
	}
	if !HasPrefix([]byte(good)) || HasPrefix([]byte("Tg_x")) || HasPrefix([]byte("tg")) {
		t.Error("HasPrefix")
	}
	if !bytes.Equal([]byte(good[3:19]), func() []byte { id, _ := Parse([]byte(good)); return id }()) {
		t.Error("public id")
	}
}

func FuzzParse(f *testing.F) {
	k, _ := New()
	f.Add(k)
	f.Add("tg_")
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := Parse([]byte(s))
		if ok && (len(s) != Len || !ValidPublicID(string(id))) {
			t.Fatalf("accepted %q", s)
		}
	})
}

// TestHasHead: a key's head is "tg_", a public id and "_"; a value that
// only starts with "tg_" (a base64url token now and then) has none.
func TestHasHead(t *testing.T) {
	good, _ := New()
	for _, v := range []string{good, good[:HeadLen], good[:HeadLen] + "cut", good + "more"} {
		if !HasHead([]byte(v)) {
			t.Errorf("HasHead(%q) = false", v)
		}
	}
	for _, v := range []string{"", "tg_", good[:HeadLen-1], "tg_Y7nFsAUqc2OCGTkHQhooiBBDu7KqWtNSBCbYmNnw",
		"tg_" + strings.ToUpper(good[3:19]) + good[19:], good[:19] + "-" + good[20:], "Tg" + good[2:]} {
		if HasHead([]byte(v)) {
			t.Errorf("HasHead(%q) = true", v)
		}
	}
}
