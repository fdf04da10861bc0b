package jwtclaims

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
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
		{num("0.10"), 0, false}, // would be read as 0: no time at all
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

// benchPayload is an access token's payload as coreapi signs a user's.
const benchPayload = `{"iss":"https://auth.example.com","aud":"tollgate","sub":"0192f0e4-5b6a-7c3d-8e9f-0a1b2c3d4e5f",` +
	`"tid":"0192f0e4-5b6a-7c3d-8e9f-0a1b2c3d4e60","sid":"0192f0e4-5b6a-7c3d-8e9f-0a1b2c3d4e61","tv":3,` +
	`"iat":1764608000,"nbf":1764608000,"exp":1764608900,"jti":"b3JkZXJlZC1yYW5kb20tYnl0ZXM","amr":["pwd","otp"],"acr":"mfa","auth_time":1764607000}`

// BenchmarkDecodePayload is the claims' share of the proxy's cold path
// (a token not seen before).
func BenchmarkDecodePayload(b *testing.B) {
	body := []byte(benchPayload)
	b.ReportAllocs()
	for b.Loop() {
		var p Payload
		if err := DecodePayload(body, &p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseHeader is the header's share of the proxy's cold path.
func BenchmarkParseHeader(b *testing.B) {
	seg := []byte(base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"EdDSA","kid":"k-2025-12-01T00-00-00Z","typ":"at+jwt"}`)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseHeader(seg); err != nil {
			b.Fatal(err)
		}
	}
}

// TestMemberNamesExact: a claim or header parameter is read by its exact
// name, once. encoding/json matched names in any letter case ("SUB",
// "ſub" for sub) and let the last of a repeated name win, where another
// verifier (the JWS library beside ParseHeader, an app's JWT library)
// reads the exact name or the first: the two read different tokens from
// the same bytes. Both are refused, an escaped spelling of a name
// ("\u0073ub") included; a name no verifier here reads may appear once in
// any case.
func TestMemberNamesExact(t *testing.T) {
	for _, bad := range []string{
		`{"iss":"i","SUB":"s"}`,
		`{"iss":"i","Sub":"s"}`,
		`{"iss":"i","ſub":"s"}`,      // U+017F folds to s
		`{"iss":"i","\u0053ub":"s"}`, // "Sub", escaped
		`{"sub":"a","sub":"b"}`,      // last would win
		`{"sub":"a","\u0073ub":"b"}`, // the same name, escaped
		`{"tv":1,"exp":5,"TV":2}`,    // a Number claim
		`{"x":{"sub":1},"x":2}`,      // a name nothing reads, repeated
		`{"aud":["a"],"sub":"s","aud":"b"}`,
	} {
		if err := DecodePayload([]byte(bad), new(Payload)); !errors.Is(err, ErrMemberName) {
			t.Errorf("DecodePayload(%s) = %v, want ErrMemberName", bad, err)
		}
	}
	for _, good := range []string{
		`{"sub":"s","acr":"mfa","ACR2":1,"x":{"sub":1,"sub":2},"y":["sub","sub"],"z":"\"sub\":"}`,
		` { "sub" : "s" , "iss" : "i" } `,
		`{}`,
	} {
		var p Payload
		if err := DecodePayload([]byte(good), &p); err != nil {
			t.Errorf("DecodePayload(%s) = %v", good, err)
		}
	}
	enc := func(s string) []byte { return []byte(base64.RawURLEncoding.EncodeToString([]byte(s))) }
	for _, bad := range []string{
		`{"alg":"EdDSA","kid":"k1","typ":"at+jwt","ALG":"HS256"}`,
		`{"alg":"EdDSA","kid":"k1","typ":"at+jwt","alg":"HS256"}`,
		`{"alg":"EdDSA","Kid":"k1","typ":"at+jwt"}`,
		`{"alg":"EdDSA","kid":"k1","kid":"k2","typ":"at+jwt"}`,
		`{"alg":"EdDSA","kid":"k1","typ":"JWT","\u0074yp":"at+jwt"}`,
		`{"alg":"EdDSA","kid":"k1","Typ":"at+jwt"}`,
		`{"alg":"EdDSA","kid":"k1","typ":"at+jwt","JWK":{}}`,
		`{"alg":"EdDSA","kid":"k1","typ":"at+jwt","x":1,"x":1}`,
	} {
		if _, err := ParseHeader(enc(bad)); err != ErrMalformed && err != ErrHeaderParam {
			t.Errorf("ParseHeader(%s) = %v, want ErrMalformed", bad, err)
		}
	}
	if h, err := ParseHeader(enc(`{"alg":"EdDSA","kid":"k1","typ":"at+jwt","cty":"x","Cty":"y"}`)); err != nil || h.Kid != "k1" {
		t.Errorf("ParseHeader with names nobody reads: %+v, %v", h, err)
	}
}

// TestMemberListsMatchTags: checkMembers knows every name Payload and
// Header read.
func TestMemberListsMatchTags(t *testing.T) {
	for _, tc := range []struct {
		v     any
		names []string
	}{{Payload{}, payloadNames}, {Header{}, headerNames}} {
		typ := reflect.TypeOf(tc.v)
		var tags []string
		for i := range typ.NumField() {
			tags = append(tags, strings.Split(typ.Field(i).Tag.Get("json"), ",")[0])
		}
		if !slices.Equal(tags, tc.names) {
			t.Errorf("%s: tags %q, checked names %q", typ.Name(), tags, tc.names)
		}
	}
}

// TestCheckMemberNames: the check of DecodePayload for names of the
// caller's choosing (an ID token's claims), which may be at most
// MaxKnownNames.
func TestCheckMemberNames(t *testing.T) {
	known := []string{"email", "email_verified"}
	for _, bad := range []string{
		`{"email":"a@example.com","Email_Verified":true}`,
		`{"email_verified":false,"email_verified":true}`,
		`{"email_verified":false,"email\u005fverified":true}`,
		`{"EMAIL":"b@example.com"}`,
	} {
		if err := CheckMemberNames([]byte(bad), known); !errors.Is(err, ErrMemberName) {
			t.Errorf("CheckMemberNames(%s) = %v, want ErrMemberName", bad, err)
		}
	}
	if err := CheckMemberNames([]byte(`{"email":"a@example.com","SUB":"s","Groups":[]}`), known); err != nil {
		t.Errorf("names nobody reads: %v", err)
	}
	many := make([]string, MaxKnownNames+1)
	for i := range many {
		many[i] = "n" + strconv.Itoa(i)
	}
	if err := CheckMemberNames([]byte(`{}`), many); err == nil {
		t.Errorf("%d known names: no error", len(many))
	}
}
