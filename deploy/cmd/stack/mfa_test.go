package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/deploy/internal/authenticator"

	"github.com/tollgate-auth/tollgate/shared/identity"
)

func TestEnsureMFAKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "mfa.keys")
	created, err := ensureMFAKey(path)
	if err != nil || !created {
		t.Fatalf("first ensureMFAKey = %v, %v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("stat = %v, %v; want mode 600", st, err)
	}
	first, _ := os.ReadFile(path)
	keys, err := identity.ParseKeys(string(first))
	if err != nil || len(keys) != 1 || keys[0].ID != mfaKeyID || len(keys[0].Secret) != 32 {
		t.Fatalf("ParseKeys(%q) = %+v, %v; want one 32-byte key %s", first, keys, err, mfaKeyID)
	}
	if created, err := ensureMFAKey(path); err != nil || created {
		t.Fatalf("second ensureMFAKey = %v, %v; want false, nil", created, err)
	}
	if again, _ := os.ReadFile(path); string(again) != string(first) {
		t.Error("second run changed the key")
	}
	other := filepath.Join(dir, "other.keys")
	if _, err := ensureMFAKey(other); err != nil {
		t.Fatal(err)
	}
	if k2, _ := os.ReadFile(other); string(k2) == string(first) {
		t.Error("two fresh keys are equal")
	}
	secret := strings.TrimPrefix(strings.TrimSpace(string(first)), mfaKeyID+":")
	for name, content := range map[string]string{
		"garbage":      "not a key list\n",
		"no id":        secret + "\n",
		"16 bytes":     "mfa1:MDEyMzQ1Njc4OWFiY2RlZg==\n",
		"48 bytes":     "mfa1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVm\n",
		"second short": "mfa1:" + secret + ",old:MDEyMzQ1Njc4OWFiY2RlZg==\n",
		"empty":        "",
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "k")
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := ensureMFAKey(p); err == nil || !strings.Contains(err.Error(), p) {
				t.Fatalf("ensureMFAKey(%s) = %v, want an error naming the file", name, err)
			}
			if got, _ := os.ReadFile(p); string(got) != content {
				t.Errorf("file changed to %q", got)
			}
		})
	}
}

// totpCode is the code an authenticator app shows for secret at time at.
func totpCode(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	code, err := authenticator.Code(secret, at)
	if err != nil {
		t.Fatalf("secret %q: %v", secret, err)
	}
	return code
}

// mfaUser is a user who enrolled TOTP in a first run of the stack.
type mfaUser struct {
	email, password, secret string
}

// enrolMFA signs a new user up through the proxy and enrols TOTP: 201 with
// a secret, then the confirmation with a code computed from it hands out
// the recovery codes. Without MFA_ENCRYPTION_KEYS coreapi answers 503.
func enrolMFA(t *testing.T, proxy string, run int) mfaUser {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := &apiClient{base: proxy, http: &http.Client{Timeout: 15 * time.Second}}
	u := mfaUser{email: fmt.Sprintf("mfa-%s@example.com", randHex(6)), password: "a long mfa test password"}
	var tok tokenResponse
	if err := c.do(ctx, http.MethodPost, "/api/v1/auth/signup", map[string]string{
		"email": u.email, "password": u.password, "tenant_name": "MFA", "display_name": "MFA User",
	}, &tok); err != nil {
		t.Fatalf("run #%d: signup: %v", run, err)
	}
	c.token = tok.AccessToken
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, proxy+"/api/v1/users/me/mfa/totp", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatalf("run #%d: enrol: %v", run, err)
	}
	var en struct {
		Secret string `json:"secret"`
	}
	err = json.NewDecoder(resp.Body).Decode(&en)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || err != nil || en.Secret == "" {
		t.Fatalf("run #%d: POST /api/v1/users/me/mfa/totp: %d, secret %q, %v; want 201 with a secret (is MFA_ENCRYPTION_KEYS_FILE set?)", run, resp.StatusCode, en.Secret, err)
	}
	u.secret = en.Secret
	var codes struct {
		RecoveryCodes []string `json:"recovery_codes"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/users/me/mfa/totp/confirm", map[string]string{"code": totpCode(t, u.secret, time.Now())}, &codes); err != nil {
		t.Fatalf("run #%d: confirm: %v", run, err)
	}
	if len(codes.RecoveryCodes) != 10 {
		t.Fatalf("run #%d: %d recovery codes, want 10", run, len(codes.RecoveryCodes))
	}
	return u
}

// signInWithTOTP signs u in through the proxy with the password and then a
// TOTP code: coreapi must open the secret it sealed in an earlier run, so
// the stack must have kept its MFA key.
func signInWithTOTP(t *testing.T, proxy string, u mfaUser, run int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := &apiClient{base: proxy, http: &http.Client{Timeout: 15 * time.Second}}
	err := c.do(ctx, http.MethodPost, "/api/v1/auth/token", map[string]string{
		"grant_type": "password", "email": u.email, "password": u.password}, nil)
	var ch struct {
		Code     string `json:"code"`
		MFAToken string `json:"mfa_token"`
	}
	if statusOf(err) != http.StatusUnauthorized {
		t.Fatalf("run #%d: password grant of an MFA user: %v, want 401 mfa_required", run, err)
	}
	var ae *apiError
	if !errors.As(err, &ae) || json.Unmarshal([]byte(ae.Body), &ch) != nil || ch.Code != "mfa_required" || ch.MFAToken == "" {
		t.Fatalf("run #%d: %v: want mfa_required with an mfa_token", run, err)
	}
	// The next step's code: never the step the confirmation used.
	var tok tokenResponse
	if err := c.do(ctx, http.MethodPost, "/api/v1/auth/token", map[string]string{
		"grant_type": "mfa_otp", "mfa_token": ch.MFAToken, "code": totpCode(t, u.secret, time.Now().Add(30*time.Second))}, &tok); err != nil {
		t.Fatalf("run #%d: mfa_otp grant with a TOTP code: %v", run, err)
	}
	if tok.AccessToken == "" {
		t.Fatalf("run #%d: mfa_otp grant without an access token", run)
	}
}
