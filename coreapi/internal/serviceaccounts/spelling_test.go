package serviceaccounts_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestIntrospectionTakesOneSpelling: introspection describes a token as
// coreapi wrote it, each segment unpadded base64url with its unused bits
// zero (RFC 7515 section 2), as the proxy accepts it. The JWS library
// decodes the payload and the signature in any base64 alphabet, padded or
// not, its unused bits ignored: the same token with "+" and "/" for "-"
// and "_", padded, or with another last character of the same bits was
// answered active.
func TestIntrospectionTakesOneSpelling(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "introspector")
	s := e.createSecret(t, owner, a.ID)
	c := claimsOf(t, e.clientToken(t, s, "").AccessToken)
	// A token whose payload and signature both end in a partial group
	// and each hold a "-" or "_", so that every respelling applies.
	var tok string
	for i := 0; ; i++ {
		c["pad"] = strings.Repeat("~", i%64) + strings.Repeat("?", i/64)
		payload, _ := json.Marshal(c)
		b, err := e.ring.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		tok = string(b)
		p := strings.Split(tok, ".")
		if len(p[1])%4 >= 2 && len(p[2])%4 >= 2 && strings.ContainsAny(p[1], "-_") && strings.ContainsAny(p[2], "-_") {
			break
		}
		if i > 4096 {
			t.Fatal("no token of the wanted shape signed")
		}
	}
	if got := e.introspect(t, s, tok); got["active"] != true {
		t.Fatalf("the token as signed: %v", got)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	respell := map[string]func(seg string) string{
		"padded":            func(seg string) string { return seg + strings.Repeat("=", (4-len(seg)%4)%4) },
		"standard alphabet": func(seg string) string { return strings.NewReplacer("-", "+", "_", "/").Replace(seg) },
		"unused bits set": func(seg string) string {
			return seg[:len(seg)-1] + string(alphabet[strings.IndexByte(alphabet, seg[len(seg)-1])^1])
		},
	}
	parts := strings.Split(tok, ".")
	for name, f := range respell {
		for i, part := range []string{"payload", "signature"} {
			p := append([]string(nil), parts...)
			p[i+1] = f(p[i+1])
			if got := e.introspect(t, s, strings.Join(p, ".")); got["active"] != false {
				t.Errorf("%s %s: %v", part, name, got)
			}
		}
	}
}
