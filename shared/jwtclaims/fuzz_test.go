package jwtclaims

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// FuzzParseHeader gives ParseHeader arbitrary bytes as a JWS header
// segment: it must never panic, and accept only the strict base64url of a
// JSON object whose typ is at+jwt and that carries none of the refused
// parameters.
func FuzzParseHeader(f *testing.F) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, s := range []string{
		`{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}`,
		`{"alg":"EdDSA","kid":"k1","typ":"application/AT+JWT"}`,
		`{"alg":"EdDSA","kid":"k1","typ":"JWT"}`,
		`{"alg":"EdDSA","typ":"at+jwt","crit":["exp"]}`,
		`{"alg":"EdDSA","typ":"at+jwt","x5c":[]}`,
		`{"alg":"EdDSA","typ":"at+jwt","jwk":null}`,
		`{"alg":"EdDSA","kid":"k1","typ":"at+jwt","ALG":"none"}`,
		`{"alg":"EdDSA","kid":"k1","typ":"at+jwt","kid":"k2"}`,
		`[1]`, `null`,
	} {
		f.Add(enc(s))
	}
	f.Add("eyJ==")
	f.Add("!!")
	f.Add("")
	f.Fuzz(func(t *testing.T, seg string) {
		h, err := ParseHeader([]byte(seg))
		if err != nil {
			return
		}
		raw, derr := base64.RawURLEncoding.Strict().DecodeString(seg)
		if derr != nil || enc(string(raw)) != seg {
			t.Fatalf("accepted %q, not canonical base64url (%v)", seg, derr)
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil {
			t.Fatalf("accepted %q (%q), not a JSON object: %v", seg, raw, err)
		}
		if !strings.EqualFold(h.Typ, "at+jwt") && !strings.EqualFold(h.Typ, "application/at+jwt") {
			t.Fatalf("accepted %q with typ %q", raw, h.Typ)
		}
		checkNames(t, raw, headerNames)
		for _, name := range []string{"crit", "b64", "jku", "jwk", "x5u", "x5c"} {
			if _, ok := obj[name]; ok {
				t.Fatalf("accepted %q carrying %s", raw, name)
			}
		}
	})
}

// FuzzDecodePayload gives DecodePayload arbitrary bytes as a verified
// payload: it must never panic, accept only one JSON object (nothing
// after it), and leave every number claim a JSON number literal.
// NumericDate, HasAudience and SplitScope then read what it decoded.
func FuzzDecodePayload(f *testing.F) {
	f.Add(`{"iss":"i","aud":["a"],"sub":"s","tid":"t","sid":"d","jti":"j","tv":3,"exp":1764608400.5,"iat":1764608000,"nbf":null,` +
		`"amr":["pwd","otp"],"auth_time":1764607000,"principal":"service","client_id":"c","scope":"x y"}`)
	f.Add(`{"aud":"a","exp":-1.5e3,"scope":"  a:b\tc:d  e:f "}`)
	f.Add(`{"exp":"1764608400"}`)
	f.Add(`{"tv":true}`)
	f.Add(`{"aud":[1,"a"]}`)
	f.Add(`{"exp":1e300}`)
	f.Add(`[]`)
	f.Add(`{"sub":`)
	f.Add(`{} {}`)
	f.Add(`{"sub":"a","\u0073ub":"b","x":{"sub":1,"sub":2},"y":"\"}"}`)
	f.Add(`{"SUB":"a"}`)
	f.Fuzz(func(t *testing.T, body string) {
		var p Payload
		if err := DecodePayload([]byte(body), &p); err != nil {
			return
		}
		if !json.Valid([]byte(body)) || bytes.TrimSpace([]byte(body))[0] != '{' {
			t.Fatalf("accepted %q: not one JSON object", body)
		}
		checkNames(t, []byte(body), payloadNames)
		for _, n := range []*Number{p.TV, p.Exp, p.Nbf, p.Iat, p.AuthTime} {
			if n == nil {
				continue
			}
			if s := string(*n); !json.Valid([]byte(s)) || s[0] != '-' && (s[0] < '0' || s[0] > '9') {
				t.Fatalf("number claim %q of %q: not a JSON number", s, body)
			}
			if d, ok := NumericDate(n); ok && (d <= 0 || d > 4*(1<<31-1)) {
				t.Fatalf("NumericDate(%q) = %d", *n, d)
			}
		}
		aud := HasAudience(p.Aud, "a")
		var one string
		var many []string
		want := json.Unmarshal(p.Aud, &one) == nil && one == "a" ||
			json.Unmarshal(p.Aud, &many) == nil && slices.Contains(many, "a")
		if aud != want {
			t.Fatalf("HasAudience(%s) = %v", p.Aud, aud)
		}
		if p.Scope != nil {
			checkSplitScope(t, *p.Scope)
		}
	})
}

// FuzzSplitScope: the tokens are the U+0020-separated non-empty runs of
// the input, in order, never nil, cut to length, and joining them with
// single spaces splits back to the same tokens.
func FuzzSplitScope(f *testing.F) {
	for _, s := range []string{"", "   ", "a:b", " a:b  c:d ", "a:b\tc:d", "a:b\u00a0c:d e:f", "a:b\nc:d"} {
		f.Add(s)
	}
	f.Fuzz(checkSplitScope)
}

func checkSplitScope(t *testing.T, s string) {
	got := SplitScope(s)
	if got == nil || cap(got) != len(got) {
		t.Fatalf("SplitScope(%q) = %q (nil %v, cap %d)", s, got, got == nil, cap(got))
	}
	var want []string
	start := -1
	for i := 0; i <= len(s); i++ {
		switch {
		case i < len(s) && s[i] != ' ':
			if start < 0 {
				start = i
			}
		case start >= 0:
			want = append(want, s[start:i])
			start = -1
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("SplitScope(%q) = %q, want %q", s, got, want)
	}
	if again := SplitScope(strings.Join(got, " ")); !slices.Equal(again, got) {
		t.Fatalf("SplitScope(%q) = %q, then %q", s, got, again)
	}
}

// checkNames fails t unless the top-level member names of the JSON object
// raw, as a JSON decoder reads them, are unique and each of known that
// they match in any letter case exactly.
func checkNames(t *testing.T, raw []byte, known []string) {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(raw))
	if _, err := d.Token(); err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	seen := map[string]bool{}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		name := tok.(string)
		if seen[name] {
			t.Fatalf("accepted %q naming %q twice", raw, name)
		}
		seen[name] = true
		for _, k := range known {
			if name != k && strings.EqualFold(name, k) {
				t.Fatalf("accepted %q naming %q as %q", raw, k, name)
			}
		}
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
	}
}

// FuzzCanonicalSegment: CanonicalSegment accepts exactly the strings that
// decode as unpadded base64url and encode back to themselves.
func FuzzCanonicalSegment(f *testing.F) {
	for _, s := range []string{"", "A", "AA", "AQ", "AB", "AAA", "AAE", "AAB", "AAAA", "ab-_", "ab+/", "AQ==", "AA\nAA", "eyJ9", "eyJ9="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, seg string) {
		raw, err := base64.RawURLEncoding.Strict().DecodeString(seg)
		want := err == nil && base64.RawURLEncoding.EncodeToString(raw) == seg
		if got := CanonicalSegment([]byte(seg)); got != want {
			t.Fatalf("CanonicalSegment(%q) = %v, want %v", seg, got, want)
		}
	})
}
