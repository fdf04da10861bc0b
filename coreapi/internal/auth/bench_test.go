package auth_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
)

// post sends a JSON token request straight through the HTTP client (no
// OpenAPI validation in the measured loop).
func post(b *testing.B, e *env, body []byte) []byte {
	return postWant(b, e, body, http.StatusOK)
}

func postWant(b *testing.B, e *env, body []byte, want int) []byte {
	resp, err := e.Client.Post(e.URL+"/api/v1/auth/token", "application/json", bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		b.Fatalf("status %d: %s", resp.StatusCode, out)
	}
	return out
}

// BenchmarkTokenPasswordGrant is one password login over loopback HTTP with
// the production argon2id parameters (OWASP: m=19 MiB, t=2, p=1): account
// lookup, hash verification, session + refresh token insert, JWT signing.
func BenchmarkTokenPasswordGrant(b *testing.B) {
	e := start(b, password.OWASP())
	e.signup(b, "bench@example.com", "Bench")
	body, _ := json.Marshal(map[string]string{"grant_type": "password", "email": "bench@example.com", "password": pw})
	b.ReportAllocs()
	for b.Loop() {
		post(b, e, body)
	}
}

// BenchmarkTokenRefreshGrant is one refresh over loopback HTTP: token
// lookup, atomic rotation, JWT signing.
func BenchmarkTokenRefreshGrant(b *testing.B) {
	e := start(b, cheap)
	rt := e.signup(b, "bench@example.com", "Bench").RefreshToken
	b.ReportAllocs()
	for b.Loop() {
		body, _ := json.Marshal(map[string]string{"grant_type": "refresh_token", "refresh_token": rt})
		var tk tokens
		if err := json.Unmarshal(post(b, e, body), &tk); err != nil {
			b.Fatal(err)
		}
		rt = tk.RefreshToken
	}
}

// BenchmarkTokenUnknownAccount is a password login for an email with no
// account: it hashes against a dummy, so it costs what a real login's hash
// check costs (compare with BenchmarkTokenPasswordGrant). Each iteration
// uses another address, so the lockout (5 attempts per address and client)
// never answers instead.
func BenchmarkTokenUnknownAccount(b *testing.B) {
	e := start(b, password.OWASP())
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		body, _ := json.Marshal(map[string]string{"grant_type": "password", "email": "nobody" + strconv.Itoa(i) + "@example.com", "password": pw})
		postWant(b, e, body, http.StatusBadRequest)
	}
}
