package main

import (
	"context"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/keys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
)

// TestKeysGenerateFollowsSigningAlg: `keys generate` makes a key of
// SIGNING_ALG unless -alg says otherwise. An EdDSA key made for an ES256
// deployment is published but never signs, so the rotation never switches
// keys, and removing the old key leaves none to sign with.
func TestKeysGenerateFollowsSigningAlg(t *testing.T) {
	for _, tt := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"SIGNING_ALG": "ES256"}, nil, keys.AlgES256},
		{map[string]string{"SIGNING_ALG": "ES256\n"}, nil, keys.AlgES256},
		{map[string]string{"SIGNING_ALG": "RS256"}, []string{"-alg", "EdDSA"}, keys.AlgEdDSA},
		{nil, nil, keys.AlgEdDSA},
	} {
		t.Run(tt.want+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			dir := t.TempDir()
			env := map[string]string{"SIGNING_KEYS_DIR": dir}
			for k, v := range tt.env {
				env[k] = v
			}
			var out testkit.LogBuffer
			if err := run(context.Background(), append([]string{"keys", "generate"}, tt.args...), envOf(env), &out); err != nil {
				t.Fatalf("keys generate: %v", err)
			}
			r, err := keys.Load(dir, tt.want)
			if err != nil {
				t.Fatalf("no %s key generated (SIGNING_ALG %q, args %v): %v", tt.want, tt.env["SIGNING_ALG"], tt.args, err)
			}
			if got := r.SigningKeyID(); got != strings.TrimSpace(out.String()) {
				t.Errorf("signing kid %s, printed %q", got, out.String())
			}
		})
	}
}
