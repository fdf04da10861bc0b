package app

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestOneSpellingPerToken: a token is accepted only as coreapi writes it,
// each segment in unpadded base64url with its unused bits zero (RFC 7515
// section 2). The JWS library decodes the payload and the signature in
// any base64 alphabet, padded or not, its unused bits ignored, and checks
// the signature over the payload encoded again: a valid token spelled
// with padding, with "+" and "/" for "-" and "_", or with another last
// character of the same bits was accepted as well, each spelling a
// token of its own to the cache (verified again, and held beside the
// others) and to every other verifier (an app's JWT library refuses
// them).
func TestOneSpellingPerToken(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	// A token whose payload and signature both end in a partial group
	// and each hold a "-" or "_", so that every respelling applies.
	var tok string
	for i := 0; ; i++ {
		tok = e.token(func(c testenv.Claims) { c["pad"] = strings.Repeat("~", i%64) + strings.Repeat("?", i/64) })
		p := strings.Split(tok, ".")
		if len(p[1])%4 >= 2 && strings.ContainsAny(p[1], "-_") && strings.ContainsAny(p[2], "-_") {
			break
		}
		if i > 4096 {
			t.Fatal("no token of the wanted shape minted")
		}
	}
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	parts := strings.Split(tok, ".")
	respell := map[string]func(seg string) string{
		"padded": func(seg string) string { return seg + strings.Repeat("=", (4-len(seg)%4)%4) },
		"standard alphabet": func(seg string) string {
			return strings.NewReplacer("-", "+", "_", "/").Replace(seg)
		},
		"unused bits set": func(seg string) string {
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
			last := strings.IndexByte(alphabet, seg[len(seg)-1])
			return seg[:len(seg)-1] + string(alphabet[last^1])
		},
	}
	for name, f := range respell {
		for i, part := range []string{"payload", "signature"} {
			t.Run(part+" "+name, func(t *testing.T) {
				p := append([]string(nil), parts...)
				p[i+1] = f(p[i+1])
				if p[i+1] == parts[i+1] {
					t.Fatal("respelling changed nothing")
				}
				if _, err := base64.RawURLEncoding.Strict().DecodeString(p[i+1]); err == nil {
					t.Fatalf("%s is still canonical", p[i+1])
				}
				e := e.with(t)
				e.reset()
				e.wantProblem(e.do("GET", "/api/v1/users/me", strings.Join(p, "."), nil), 401, problem.CodeInvalidToken)
				e.wantNothingForwarded()
			})
		}
	}
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
}
