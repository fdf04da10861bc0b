package e2e

import (
	"net/http"
	"sync"
	"testing"
)

// TestAccountDeletionRacingSignIns: password sign-ins of an account
// through proxy B while it deletes itself through proxy A each either
// succeed (before the deletion; their session goes with the account) or
// are refused as a sign-in of an unknown address is (400 invalid_grant),
// never as a disabled account or a former member would be, nor with a
// server error (or 429, once the refusals locked the address out).
// Afterwards no token any of them got is accepted by either proxy, and no
// refresh token either.
func TestAccountDeletionRacingSignIns(t *testing.T) {
	owner := signup(t, sys.proxyA)
	m := addMember(t, owner, sys.proxyA, "member")
	const n = 8
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		issued  []tokenResponse
		answers = map[int]int{}
		start   = make(chan struct{})
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, err := send("POST", sys.proxyB.url("/api/v1/auth/token"), "", map[string]string{
				"grant_type": "password", "email": m.Email, "password": m.Password, "tenant_id": m.TenantID})
			if err != nil {
				t.Errorf("sign-in: %v", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			answers[r.Status]++
			switch r.Status {
			case http.StatusOK:
				issued = append(issued, decode[tokenResponse](t, r))
				return
			case http.StatusBadRequest:
				if p := checkProblem(t, r); p.Code == "invalid_grant" {
					return
				}
			case http.StatusTooManyRequests: // the refusals count as failed guesses of the address
				return
			}
			t.Errorf("sign-in racing the deletion: %s, want 200, 400 invalid_grant or 429%s", r, logsOf(r))
		}()
	}
	close(start)
	expect(t, call(t, "DELETE", sys.proxyA.url("/api/v1/users/me/account"), m.Tokens.AccessToken, nil), http.StatusNoContent)
	wg.Wait()
	t.Logf("sign-ins racing the deletion: %v", answers)
	for _, px := range []*service{sys.proxyA, sys.proxyB} {
		for i, tk := range append(issued, m.Tokens) {
			mustWaitStatus(t, "GET", px.url("/api/v1/users/me"), tk.AccessToken, http.StatusUnauthorized, propagation)
			if px == sys.proxyA {
				r := call(t, "POST", sys.proxyA.url("/api/v1/auth/token"), "", map[string]string{"grant_type": "refresh_token", "refresh_token": tk.RefreshToken})
				if r.Status != http.StatusBadRequest && r.Status != http.StatusUnauthorized {
					t.Errorf("refresh %d after the deletion: %s, want 400 or 401", i, r)
				}
			}
		}
	}
}
