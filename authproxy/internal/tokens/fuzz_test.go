package tokens

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/jwtclaims"
)

// FuzzBearer gives the verifier arbitrary bytes as a bearer: Ours and
// Verify must never panic, and Verify accepts only a compact JWS of three
// canonical base64url segments whose signature the key in the set made
// over the first two, as written (the seeds' signatures are broken or
// made by a key outside the set).
func FuzzBearer(f *testing.F) {
	fx := newFixture(f, 0)
	now := time.Now()
	other := testenv.NewKey(f, "k2", "EdDSA")
	good := string(fx.mint(f, "u"))
	for _, s := range []string{
		good + "x", good[:len(good)-2], strings.Replace(good, ".", "..", 1),
		testenv.Sign(f, other, testenv.DefaultClaims(now, "u", "t", "s"), nil),
		testenv.Sign(f, other, testenv.DefaultClaims(now, "u", "t", "s"), testenv.Header{"kid": "k1"}),
		testenv.Unsigned(f, testenv.Header{"alg": "none", "typ": "at+jwt", "kid": "k1"}, testenv.DefaultClaims(now, "u", "t", "s"), ""),
		"eyJhbGciOiJFZERTQSJ9", ".e30.sig", "!!!.e30.sig", "a.b.c", "..", "",
		"tg_0123456789abcdef_0123456789abcdef0123456789abcdef0123456",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, tok []byte) {
		in := slices.Clone(tok)
		if fx.v.Ours(tok) {
			// A JWS whose header is one of coreapi's, before its dot.
			head, _, ok := bytes.Cut(tok, []byte("."))
			if _, err := jwtclaims.ParseHeader(head); !ok || err != nil {
				t.Fatalf("Ours(%q): the header is none of coreapi's (%v)", tok, err)
			}
		}
		if c, err := fx.v.Verify(context.Background(), tok); err == nil && !signedBy(fx.key.Public.(ed25519.PublicKey), string(tok)) {
			t.Fatalf("Verify(%q) accepted a token the key did not sign: %+v", tok, c)
		}
		if !slices.Equal(in, tok) {
			t.Fatalf("the token was written to: %q became %q", in, tok)
		}
	})
}

// FuzzVerifySigned signs arbitrary header and payload segments with the
// key the verifier trusts ("$now" in the payload stands for the current
// unix time, so seeds stay valid): whatever the verifier accepts is a
// header it allows and claims within every bound it promises (Claims).
func FuzzVerifySigned(f *testing.F) {
	fx := newFixture(f, 0)
	priv := fx.key.Private.(ed25519.PrivateKey)
	const head = `{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}`
	for _, c := range [][2]string{
		{head, `{"iss":"` + testenv.Issuer + `","aud":"` + testenv.Audience + `","sub":"u","tid":"t","sid":"s","tv":0,"iat":$now,"nbf":$now,"exp":$now9,"jti":"j"}`},
		{head, `{"iss":"` + testenv.Issuer + `","aud":["x","` + testenv.Audience + `"],"sub":"u","tid":"t","tv":2,"iat":$now,"exp":$now9,"principal":"service","scope":"notes:read  notes:write"}`},
		{head, `{"iss":"` + testenv.Issuer + `","aud":"` + testenv.Audience + `","sub":"u","tid":"t","sid":"s","tv":1,"iat":$now.5,"exp":$now9,"amr":["pwd","otp"],"auth_time":$now}`},
		{head, `{"iss":"` + testenv.Issuer + `","aud":"` + testenv.Audience + `","sub":"u","tid":"t","sid":"s","tv":"1","iat":$now,"exp":$now9}`},
		{head, `{"iss":"` + testenv.Issuer + `","aud":"` + testenv.Audience + `","sub":"u","tid":"t","sid":"s","tv":0,"iat":$now,"exp":$now9} {}`},
		{`{"alg":"EdDSA","kid":"k1","typ":"JWT"}`, `{}`},
		{`{"alg":"ES256","kid":"k1","typ":"at+jwt"}`, `{}`},
		{`{"alg":"EdDSA","kid":"k1","typ":"at+jwt","crit":["exp"]}`, `{}`},
	} {
		f.Add(c[0], c[1])
	}
	enc := base64.RawURLEncoding.EncodeToString
	f.Fuzz(func(t *testing.T, hdr, payload string) {
		now := time.Now().Unix()
		payload = strings.ReplaceAll(strings.ReplaceAll(payload, "$now9", strconv.FormatInt(now+900, 10)), "$now", strconv.FormatInt(now, 10))
		input := enc([]byte(hdr)) + "." + enc([]byte(payload))
		tok := input + "." + enc(ed25519.Sign(priv, []byte(input)))
		c, err := fx.v.Verify(context.Background(), []byte(tok))
		if err != nil {
			return
		}
		var h struct{ Alg, Kid, Typ string }
		if json.Unmarshal([]byte(hdr), &h) != nil || h.Alg != "EdDSA" || h.Kid != "k1" ||
			!strings.EqualFold(h.Typ, "at+jwt") && !strings.EqualFold(h.Typ, "application/at+jwt") {
			t.Fatalf("accepted the header %q", hdr)
		}
		if !json.Valid([]byte(payload)) {
			t.Fatalf("accepted the payload %q: not JSON", payload)
		}
		switch {
		case !ValidID(c.Sub) || !ValidID(c.Tid):
			t.Fatalf("accepted %q: sub %q, tid %q", payload, c.Sub, c.Tid)
		case c.Principal == identity.PrincipalUser && !ValidID(c.Sid),
			c.Principal == identity.PrincipalService && c.Sid != "",
			c.Principal != identity.PrincipalUser && c.Principal != identity.PrincipalService:
			t.Fatalf("accepted %q: principal %q, sid %q", payload, c.Principal, c.Sid)
		case c.Iat <= 0 || c.Exp <= c.Iat || time.Duration(c.Exp-c.Iat)*time.Second > fx.v.opt.MaxLifetime || c.Nbf < 0:
			t.Fatalf("accepted %q: iat %d, exp %d, nbf %d", payload, c.Iat, c.Exp, c.Nbf)
		case c.TV < 0 || c.AuthTime < 0:
			t.Fatalf("accepted %q: tv %d, auth_time %d", payload, c.TV, c.AuthTime)
		case fx.v.checkTimes(time.Now(), c.Exp, c.Nbf, c.Iat) != nil && time.Now().Unix() < c.Exp-60:
			t.Fatalf("accepted %q outside its validity", payload)
		}
		for _, s := range c.Scope {
			if !validScope(s) {
				t.Fatalf("accepted %q: scope %q", payload, s)
			}
		}
		for _, m := range c.AMR {
			if !ValidID(m) {
				t.Fatalf("accepted %q: amr %q", payload, m)
			}
		}
	})
}

// signedBy reports whether tok is three canonical base64url segments, the
// third pub's signature of the first two as written.
func signedBy(pub ed25519.PublicKey, tok string) bool {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if b, err := base64.RawURLEncoding.Strict().DecodeString(p); err != nil || base64.RawURLEncoding.EncodeToString(b) != p {
			return false
		}
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	return ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig)
}
