package jwtclaims

import (
	"encoding/base64"
	"encoding/json"
	"testing"
)

func TestNumericDate(t *testing.T) {
	num := func(s string) *json.Number { n := json.Number(s); return &n }
	for _, tc := range []struct {
		in   *json.Number
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
