package invalidation

import "testing"

func TestKeySetDigest(t *testing.T) {
	const (
		a  = `{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"a","alg":"EdDSA","use":"sig"}`
		aR = `{ "use":"sig", "alg":"EdDSA", "kid":"a", "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "crv":"Ed25519", "kty":"OKP" }`
		b  = `{"kty":"OKP","crv":"Ed25519","x":"0qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo1","kid":"b","alg":"EdDSA","use":"sig"}`
		// a's kid with b's key: a key file replaced under its name.
		aB = `{"kty":"OKP","crv":"Ed25519","x":"0qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo1","kid":"a","alg":"EdDSA","use":"sig"}`
	)
	digest := func(doc string) string {
		t.Helper()
		d, err := KeySetDigest([]byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		return d
	}
	ab := digest(`{"keys":[` + a + `,` + b + `]}`)
	if got := digest(`{"keys":[` + b + `,` + aR + `]}`); got != ab {
		t.Errorf("same keys in another order: digest %s, want %s", got, ab)
	}
	for _, other := range []string{`{"keys":[` + a + `]}`, `{"keys":[` + aB + `,` + b + `]}`, `{"keys":[]}`} {
		if digest(other) == ab {
			t.Errorf("%s: same digest as {a, b}", other)
		}
	}
	for _, bad := range []string{`{}`, `[]`, `{"keys":`} {
		if _, err := KeySetDigest([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
