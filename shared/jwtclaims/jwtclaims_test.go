package jwtclaims

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

func TestNumericDate(t *testing.T) {
	num := func(s string) *Number { n := Number(s); return &n }
	for _, tc := range []struct {
		in   *Number
		want int64
		ok   bool
	}{
		{nil, 0, false},
		{num("1764608400"), 1764608400, true},
		{num("1764608400.9"), 1764608400, true},
		{num("0"), 0, false},
		{num("-5"), 0, false},
		{num("1e300"), 0, false},
		{num("NaN"), 0, false},
		{num("x"), 0, false},
	} {
		got, ok := NumericDate(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("NumericDate(%v) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// TestNumberRefusesStrings: RFC 7519 makes a NumericDate a JSON number;
// json.Number also takes a string holding one ("exp":"1700000000"), which
// a Number refuses (ErrNotNumber), as any value but a number. null is
// absent.
func TestNumberRefusesStrings(t *testing.T) {
	type claims struct {
		Exp *Number `json:"exp"`
	}
	for _, tc := range []struct {
		in   string
		want string // "" when refused; "nil" when absent
	}{
		{`{"exp":1700000000}`, "1700000000"},
		{`{"exp":-1.5e3}`, "-1.5e3"},
		{`{"exp":null}`, "nil"},
		{`{}`, "nil"},
		{`{"exp":"1700000000"}`, ""},
		{`{"exp":""}`, ""},
		{`{"exp":true}`, ""},
		{`{"exp":[1]}`, ""},
		{`{"exp":{"a":1}}`, ""},
	} {
		var c claims
		err := json.Unmarshal([]byte(tc.in), &c)
		switch {
		case tc.want == "":
			if err == nil {
				t.Errorf("%s: accepted as %v", tc.in, *c.Exp)
			} else if !errors.Is(err, ErrNotNumber) {
				t.Errorf("%s: %v, want ErrNotNumber", tc.in, err)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.in, err)
		case tc.want == "nil":
			if c.Exp != nil {
				t.Errorf("%s: Exp = %q, want absent", tc.in, *c.Exp)
			}
		case c.Exp == nil || string(*c.Exp) != tc.want:
			t.Errorf("%s: Exp = %v, want %s", tc.in, c.Exp, tc.want)
		}
	}
}

// TestSplitScope: tokens are separated by U+0020 only, empty ones
// skipped; any other space stays in its token. Never nil, and cut to its
// length.
func TestSplitScope(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", []string{}},
		{"   ", []string{}},
		{"a:b", []string{"a:b"}},
		{" a:b  c:d ", []string{"a:b", "c:d"}},
		{"a:b\tc:d", []string{"a:b\tc:d"}},
		{"a:b\u00a0c:d e:f", []string{"a:b\u00a0c:d", "e:f"}},
		{"a:b\nc:d", []string{"a:b\nc:d"}},
	} {
		got := SplitScope(tc.in)
		if got == nil || !slices.Equal(got, tc.want) || cap(got) != len(got) {
			t.Errorf("SplitScope(%q) = %q (nil %v, cap %d), want %q", tc.in, got, got == nil, cap(got), tc.want)
		}
	}
}

func TestHasAudience(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want bool
	}{
		{`"tollgate"`, true},
		{`"other"`, false},
		{`["a","tollgate"]`, true},
		{`["a","b"]`, false},
		{`[]`, false},
		{`5`, false},
		{``, false},
		{`[1,"tollgate"]`, false},
	} {
		if got := HasAudience(json.RawMessage(tc.raw), "tollgate"); got != tc.want {
			t.Errorf("HasAudience(%s) = %v, want %v", tc.raw, got, tc.want)
		}
	}
}

func TestParseHeader(t *testing.T) {
	enc := func(s string) []byte { return []byte(base64.RawURLEncoding.EncodeToString([]byte(s))) }
	for _, tc := range []struct {
		seg  []byte
		want error
	}{
		{enc(`{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}`), nil},
		{enc(`{"alg":"EdDSA","kid":"k1","typ":"application/AT+JWT"}`), nil},
		{enc(`{"alg":"EdDSA","kid":"k1","typ":"JWT"}`), ErrType},
		{enc(`{"alg":"EdDSA","kid":"k1"}`), ErrType},
		{enc(`{"alg":"EdDSA","typ":"at+jwt","crit":["exp"]}`), ErrHeaderParam},
		{enc(`{"alg":"EdDSA","typ":"at+jwt","b64":false}`), ErrHeaderParam},
		{enc(`{"alg":"EdDSA","typ":"at+jwt","jku":"https://x"}`), ErrHeaderParam},
		{enc(`{"alg":"EdDSA","typ":"at+jwt","jwk":{}}`), ErrHeaderParam},
		{enc(`{"alg":"EdDSA","typ":"at+jwt","x5u":"https://x"}`), ErrHeaderParam},
		{enc(`{"alg":"EdDSA","typ":"at+jwt","x5c":[]}`), ErrHeaderParam},
		{enc(`[1]`), ErrMalformed},
		{[]byte("eyJ=="), ErrMalformed},
		{[]byte("!!"), ErrMalformed},
		// Line breaks, which the base64 decoder skips, are no base64url.
		{append(enc(`{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}`)[:4:4], append([]byte("\r\n"), enc(`{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}`)[4:]...)...), ErrMalformed},
		{append(enc(`{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}`), '\n'), ErrMalformed},
	} {
		h, err := ParseHeader(tc.seg)
		if err != tc.want {
			t.Errorf("ParseHeader(%s) = %v, want %v", tc.seg, err, tc.want)
		}
		if err == nil && (h.Alg != "EdDSA" || h.Kid != "k1") {
			t.Errorf("ParseHeader(%s) = %+v", tc.seg, h)
		}
	}
}

// TestDecodePayload: the claims both verifiers read, numbers as written,
// a NumericDate given as a string refused, null as absent.
func TestDecodePayload(t *testing.T) {
	var p Payload
	body := `{"iss":"i","aud":["a"],"sub":"s","tid":"t","sid":"d","jti":"j","tv":3,"exp":1764608400.5,"iat":1764608000,"nbf":null,` +
		`"amr":["pwd","otp"],"auth_time":1764607000,"principal":"service","client_id":"c","scope":"x y"}`
	if err := DecodePayload([]byte(body), &p); err != nil {
		t.Fatal(err)
	}
	if p.Iss != "i" || p.Sub != "s" || p.Tid != "t" || p.Sid != "d" || p.Jti != "j" || p.ClientID != "c" ||
		*p.Principal != "service" || *p.Scope != "x y" || !slices.Equal(p.AMR, []string{"pwd", "otp"}) || p.Nbf != nil {
		t.Fatalf("decoded %+v", p)
	}
	if exp, ok := NumericDate(p.Exp); !ok || exp != 1764608400 || string(*p.TV) != "3" || string(*p.AuthTime) != "1764607000" {
		t.Fatalf("numbers: exp %v %v, tv %v, auth_time %v", exp, ok, *p.TV, *p.AuthTime)
	}
	if !HasAudience(p.Aud, "a") {
		t.Fatal("aud")
	}
	// One JSON object: not null, and nothing may follow it (a second
	// object, stray bytes).
	for _, bad := range []string{`{"exp":"1764608400"}`, `{"tv":true}`, `[]`, `{"sub":`, `null`, ` null `, `"x"`, ``, `{} {}`, `{"sub":"s"}x`, `{"sub":"s"}]`, `{"sub":"s"} {"sub":"t"}`} {
		if err := DecodePayload([]byte(bad), new(Payload)); err == nil {
			t.Errorf("DecodePayload(%s) accepted", bad)
		}
	}
}
