package e2e

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRemovedSigningKeyRefusedWithin1s: a signing key file removed from
// the directory both cores read makes every proxy refuse the tokens signed
// with it within a second, although both proxies had them verified and
// cached: each core notices the change (file watch), publishes
// auth.keys.changed through its outbox, and each proxy refetches the JWKS
// at once. Tokens of the remaining key keep working.
func TestRemovedSigningKeyRefusedWithin1s(t *testing.T) {
	owner := signup(t, sys.proxyA)
	tok := owner.Tokens.AccessToken
	oldKid := kidOf(t, tok)
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		me(t, p, tok)
	}
	// Another key first, so that one remains to sign.
	out, err := exec.Command(filepath.Join(sys.bin, "coreapi"), "keys", "generate", "-dir", sys.keysDir).CombinedOutput()
	if err != nil {
		t.Fatalf("keys generate: %v\n%s", err, out)
	}
	newKid := strings.TrimSpace(string(out))
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		if err := poll(5*time.Second, func() error {
			r, err := send("GET", p.url("/.well-known/jwks.json"), "", nil)
			if err != nil {
				return err
			}
			if r.Status != http.StatusOK || !strings.Contains(string(r.Body), newKid) {
				return fmt.Errorf("%s: %s lacks %s", p.name, r, newKid)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	removed := time.Now()
	if err := os.Remove(filepath.Join(sys.keysDir, oldKid+".pem")); err != nil {
		t.Fatal(err)
	}
	deadline := removed.Add(time.Second)
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		_, r, err := waitStatus("GET", p.url("/api/v1/users/me"), tok, http.StatusUnauthorized, time.Until(deadline), 0)
		if err != nil {
			t.Fatalf("%s: the token of the removed key %s: %v", p.name, oldKid, err)
		}
		expectProblem(t, r, http.StatusUnauthorized)
		t.Logf("%s refuses the removed key's token %s after the file was removed", p.name, time.Since(removed))
	}
	again := login(t, sys.proxyB, owner)
	if k := kidOf(t, again.AccessToken); k != newKid {
		t.Fatalf("new token signed by %s, want %s", k, newKid)
	}
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		me(t, p, again.AccessToken)
	}
}

// kidOf returns the kid of a token's header (not verified: the proxies do).
func kidOf(t testing.TB, tok string) string {
	t.Helper()
	h, _, _ := strings.Cut(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		t.Fatalf("token header: %v", err)
	}
	var hdr struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(raw, &hdr); err != nil || hdr.Kid == "" {
		t.Fatalf("token header %s: no kid (%v)", raw, err)
	}
	return hdr.Kid
}

// poll calls cond until it returns nil or d passes, and then returns its
// last error.
func poll(d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.Join(fmt.Errorf("not within %s", d), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
