package e2e

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// Sign up, sign in, refresh, use the bearer at both proxies and an app,
// send a forged bearer, reset the password: no process's log holds any of
// the passwords, tokens, refresh tokens or the reset token used; every
// access log line of both services has duration_ms as a number; the
// configuration printed at start has durations as strings.
func TestLogsHoldNoSecrets(t *testing.T) {
	a := signup(t, sys.proxyA)
	secrets := map[string]string{"password": a.Password, "signup access token": a.Tokens.AccessToken,
		"signup refresh token": a.Tokens.RefreshToken}
	onB := login(t, sys.proxyB, a)
	secrets["access token"], secrets["refresh token"] = onB.AccessToken, onB.RefreshToken
	r := call(t, "POST", sys.proxyB.url("/api/v1/auth/token"), "", map[string]string{"grant_type": "refresh_token", "refresh_token": onB.RefreshToken})
	expect(t, r, http.StatusOK)
	refreshed := decode[tokenResponse](t, r)
	secrets["refreshed access token"], secrets["rotated refresh token"] = refreshed.AccessToken, refreshed.RefreshToken
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		me(t, p, refreshed.AccessToken)
		expect(t, call(t, "GET", p.url("/notes"), refreshed.AccessToken, nil), http.StatusOK)
	}
	// A bearer that is no token of ours: refused, and its reason logged.
	forged := "tg_" + randToken(16) + "_" + randToken(43)
	secrets["forged bearer"] = forged
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		expect(t, call(t, "GET", p.url("/api/v1/users/me"), forged, nil), http.StatusUnauthorized)
	}
	// A wrong password, then the reset.
	wrong := "wrong passphrase " + randToken(8)
	secrets["wrong password"] = wrong
	bad := call(t, "POST", sys.proxyA.url("/api/v1/auth/token"), "", map[string]string{"grant_type": "password", "email": a.Email, "password": wrong})
	if bad.Status != http.StatusUnauthorized && bad.Status != http.StatusBadRequest {
		t.Fatalf("wrong password: %s", bad)
	}
	expect(t, call(t, "POST", sys.proxyA.url("/api/v1/auth/password/forgot"), "", map[string]string{"email": a.Email}), http.StatusAccepted)
	_, resetTok := linkParts(t, sys.mail.link(t, a.Email, "Reset your password"))
	secrets["reset token"] = resetTok
	newPassword := "a fresh passphrase " + randToken(8)
	secrets["new password"] = newPassword
	expect(t, call(t, "POST", sys.proxyA.url("/api/v1/auth/password/reset"), "", map[string]string{"token": resetTok, "new_password": newPassword}), http.StatusNoContent)
	a.Password = newPassword
	after := login(t, sys.proxyA, a)
	secrets["access token after reset"], secrets["refresh token after reset"] = after.AccessToken, after.RefreshToken
	me(t, sys.proxyA, after.AccessToken)

	// A token's signature alone (its last part) is as secret as the token.
	for name, s := range secrets {
		if i := strings.LastIndexByte(s, '.'); i > 0 && len(s)-i > 20 {
			secrets[name+" (signature)"] = s[i+1:]
		}
	}
	for _, svc := range []*service{sys.proxyA, sys.proxyB, sys.coreA, sys.coreB, sys.notes} {
		b, err := os.ReadFile(svc.logPath)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		for name, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s's log holds the %s", svc.name, name)
			}
		}
	}
	if b, err := os.ReadFile(sys.pg.logPath); err == nil {
		for name, s := range secrets {
			if strings.Contains(string(b), s) {
				t.Errorf("PostgreSQL's log holds the %s", name)
			}
		}
	}

	for _, svc := range []*service{sys.proxyA, sys.proxyB, sys.coreA, sys.coreB} {
		n := 0
		for _, l := range logLines(t, svc) {
			if l["msg"] != "request" {
				continue
			}
			n++
			if _, ok := l["duration_ms"].(float64); !ok {
				t.Fatalf("%s: access line without a numeric duration_ms: %v", svc.name, l)
			}
			if _, ok := l["duration_us"]; ok {
				t.Fatalf("%s: access line with duration_us: %v", svc.name, l)
			}
			for _, k := range []string{"principal", "user_id", "tenant_id", "request_id"} {
				if _, ok := l[k]; !ok {
					t.Fatalf("%s: access line without %s: %v", svc.name, k, l)
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no access log lines", svc.name)
		}
	}
	// Durations in the printed configuration are strings.
	for svc, key := range map[*service]string{sys.coreA: "shutdown_timeout", sys.proxyA: "token_cache_max_ttl"} {
		starting := linesWith(t, svc, "msg", "starting")
		if len(starting) == 0 {
			t.Fatalf("%s: no starting line", svc.name)
		}
		cfg, _ := starting[0]["config"].(map[string]any)
		if v, ok := cfg[key].(string); !ok || !strings.HasSuffix(v, "s") {
			t.Errorf("%s: config %s = %v, want a duration string", svc.name, key, cfg[key])
		}
	}
	// The user's access lines name the user.
	found := false
	for _, l := range linesWith(t, sys.proxyB, "user_id", a.UserID) {
		if l["msg"] == "request" && l["tenant_id"] == a.TenantID && l["principal"] == "user" {
			found = true
		}
	}
	if !found {
		t.Error("proxy B has no access line naming the user, tenant and principal")
	}
}

// A test that fails on a reply prints what the services logged about
// that request (logsOf): the lines carrying its request id, from the
// proxy that took it and the core that answered, and none of another
// request's.
func TestFailedReplyCarriesItsLogLines(t *testing.T) {
	a := signup(t, sys.proxyA)
	r := call(t, "POST", sys.proxyB.url("/api/v1/auth/token"), "", map[string]string{
		"grant_type": "password", "email": a.Email, "password": "not the password " + randToken(4)})
	expectProblem(t, r, http.StatusBadRequest)
	other := call(t, "GET", sys.proxyB.url("/api/v1/users/me"), a.Tokens.AccessToken, nil)
	expect(t, other, http.StatusOK)
	id := r.requestID()
	if id == "" || id == other.requestID() {
		t.Fatalf("request ids %q and %q, want two distinct ones", id, other.requestID())
	}
	// Each service writes its access line once it has answered: polled.
	var got string
	_, err := pollUntil("logs of the refused sign-in", propagation, 10*time.Millisecond, func() (bool, string) {
		got = logsOf(r)
		for _, want := range []string{"---- " + sys.proxyB.name, "---- " + sys.coreB.name, `"status":400`} {
			if !strings.Contains(got, want) {
				return false, fmt.Sprintf("no %q in:%s", want, got)
			}
		}
		return true, ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got, "---- "+sys.coreA.name) {
		t.Errorf("logs of a request core B answered name core A:%s", got)
	}
	for line := range strings.Lines(got) {
		if strings.HasPrefix(line, "{") && !strings.Contains(line, `"`+id+`"`) {
			t.Errorf("a line of another request: %s", line)
		}
	}
}
