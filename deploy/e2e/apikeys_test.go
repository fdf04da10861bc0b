package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/apikey"
)

type createdKey struct {
	ID          string   `json:"id"`
	PublicID    string   `json:"public_id"`
	Permissions []string `json:"permissions"`
	Secret      string   `json:"secret"`
}

// keyGet is a GET with the key in X-API-Key.
func keyGet(target, key string) (reply, error) {
	return sendWith("GET", target, "", nil, http.Header{"X-Api-Key": {key}})
}

// TestAPIKeyAcrossProxies: a key created through proxy A works through
// proxy B (the app and coreapi see principal api_key, the key's user and
// tenant); a key never creates a key; revoked through A, it is refused at
// both proxies. Over the trials, the time from the revocation's 2xx to the
// first 401 at each proxy is logged (p50/p99): the suite asserts only that
// it happens within the propagation bound (numbers belong to the load
// harness).
func TestAPIKeyAcrossProxies(t *testing.T) {
	const trials = 50
	owner := signup(t, sys.proxyA)
	create := func() createdKey {
		t.Helper()
		r := call(t, "POST", sys.proxyA.url("/api/v1/api-keys"), owner.Tokens.AccessToken,
			map[string]any{"name": "e2e " + randToken(4), "permissions": []string{"notes:read", "tenant:read"}})
		expect(t, r, http.StatusCreated)
		k := decode[createdKey](t, r)
		if _, ok := apikey.Parse([]byte(k.Secret)); !ok || k.Secret[3:19] != k.PublicID {
			t.Fatalf("secret %q is not a key", k.Secret)
		}
		return k
	}

	k := create()
	// Through proxy B, to the app and to coreapi.
	r, err := keyGet(sys.proxyB.url("/notes"), k.Secret)
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("GET /notes with the key through B: %v %v", r, err)
	}
	me := decode[struct {
		ID string `json:"id"`
	}](t, call(t, "GET", sys.proxyB.url("/api/v1/users/me"), k.Secret, nil))
	if me.ID != owner.UserID {
		t.Fatalf("/users/me with the key = %q, want the creator %q", me.ID, owner.UserID)
	}
	// The secret is never listed.
	list := call(t, "GET", sys.proxyB.url("/api/v1/api-keys"), owner.Tokens.AccessToken, nil)
	expect(t, list, http.StatusOK)
	if body := string(list.Body); !strings.Contains(body, k.PublicID) || strings.Contains(body, k.Secret[20:]) {
		t.Fatalf("list: %s", body)
	}
	// A key cannot create a key, at the proxy or at coreapi.
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		r := call(t, "POST", p.url("/api/v1/users/me/api-keys"), k.Secret, map[string]any{"name": "x", "permissions": []string{}})
		if pr := expectProblem(t, r, http.StatusForbidden); pr.Code != "principal_not_allowed" {
			t.Fatalf("a key creating a key: %s", r)
		}
	}
	// Over the limit of its permissions.
	expectProblem(t, call(t, "GET", sys.proxyB.url("/api/v1/users"), k.Secret, nil), http.StatusForbidden)
	// A key in the query string is refused.
	expectProblem(t, call(t, "GET", sys.proxyB.url("/notes?api_key="+k.Secret), "", nil), http.StatusBadRequest)

	var atA, atB []time.Duration
	for i := range trials {
		if i > 0 {
			k = create()
		}
		// Both proxies hold the key.
		for _, p := range []*service{sys.proxyA, sys.proxyB} {
			if r, err := keyGet(p.url("/notes"), k.Secret); err != nil || r.Status != http.StatusOK {
				t.Fatalf("trial %d: warm %s: %v %v", i, p.name, r, err)
			}
		}
		r := call(t, "DELETE", sys.proxyA.url("/api/v1/api-keys/"+k.ID), owner.Tokens.AccessToken, nil)
		if r.Status/100 != 2 {
			t.Fatalf("trial %d: revoke: %s", i, r)
		}
		revoked := time.Now()
		var wg sync.WaitGroup
		var dA, dB time.Duration
		var errA, errB error
		for _, x := range []struct {
			p   *service
			d   *time.Duration
			err *error
		}{{sys.proxyA, &dA, &errA}, {sys.proxyB, &dB, &errB}} {
			wg.Go(func() {
				for time.Since(revoked) < propagation {
					r, err := keyGet(x.p.url("/notes"), k.Secret)
					if err == nil && r.Status == http.StatusUnauthorized {
						*x.d = time.Since(revoked)
						return
					}
					time.Sleep(time.Millisecond)
				}
				*x.err = fmt.Errorf("%s: no 401 within %v", x.p.name, propagation)
			})
		}
		wg.Wait()
		if errA != nil || errB != nil {
			t.Fatalf("trial %d: %v %v", i, errA, errB)
		}
		atA, atB = append(atA, dA), append(atB, dB)
	}
	for name, lat := range map[string][]time.Duration{"proxy A (revoked through it)": atA, "proxy B": atB} {
		slices.Sort(lat)
		t.Logf("revoked API key refused (401) at %s after the revocation's 2xx, %d trials: min %v p50 %v p90 %v p99 %v max %v",
			name, len(lat), lat[0], percentile(lat, 50), percentile(lat, 90), percentile(lat, 99), lat[len(lat)-1])
	}
	// The revoked key's right secret, still presented, is audited.
	audit := call(t, "GET", sys.proxyA.url("/api/v1/audit-events?limit=200"), owner.Tokens.AccessToken, nil)
	expect(t, audit, http.StatusOK)
	if !strings.Contains(string(audit.Body), "api_key.used_after_revocation") || !strings.Contains(string(audit.Body), "api_key.revoked") {
		t.Fatalf("audit events lack the revocation or the use after it: %.600s", audit.Body)
	}
}

// TestAPIKeyNamedInTheAudit: a change made with an API key, through a
// proxy to coreapi, is audited with the key's id beside its creator's
// (api_key_id), so that the tenant's log tells which key made it; the
// creator's own change, with their token, names no key.
func TestAPIKeyNamedInTheAudit(t *testing.T) {
	owner := signup(t, sys.proxyA)
	r := call(t, "POST", sys.proxyA.url("/api/v1/api-keys"), owner.Tokens.AccessToken,
		map[string]any{"name": "e2e audit " + randToken(4), "permissions": []string{"roles:write", "audit:read"}})
	expect(t, r, http.StatusCreated)
	k := decode[createdKey](t, r)

	type role struct {
		ID string `json:"id"`
	}
	r = call(t, "POST", sys.proxyB.url("/api/v1/roles"), k.Secret, map[string]any{"name": "by-key-" + randToken(4), "permissions": []string{"audit:read"}})
	expect(t, r, http.StatusCreated)
	byKey := decode[role](t, r)
	r = call(t, "POST", sys.proxyA.url("/api/v1/roles"), owner.Tokens.AccessToken, map[string]any{"name": "by-hand-" + randToken(4), "permissions": []string{"audit:read"}})
	expect(t, r, http.StatusCreated)
	byHand := decode[role](t, r)

	r = call(t, "GET", sys.proxyB.url("/api/v1/audit-events"), k.Secret, nil)
	expect(t, r, http.StatusOK)
	events := decode[struct {
		Data []struct {
			ActorUserID *string `json:"actor_user_id"`
			APIKeyID    *string `json:"api_key_id"`
			Action      string  `json:"action"`
			TargetID    string  `json:"target_id"`
		} `json:"data"`
	}](t, r)
	str := func(p *string) string {
		if p == nil {
			return "null"
		}
		return *p
	}
	found := 0
	for _, ev := range events.Data {
		if ev.Action != "role.created" {
			continue
		}
		switch ev.TargetID {
		case byKey.ID:
			found++
			if str(ev.ActorUserID) != owner.UserID || str(ev.APIKeyID) != k.ID {
				t.Errorf("role created with the key: actor %s, key %s; want %s, %s", str(ev.ActorUserID), str(ev.APIKeyID), owner.UserID, k.ID)
			}
		case byHand.ID:
			found++
			if str(ev.ActorUserID) != owner.UserID || ev.APIKeyID != nil {
				t.Errorf("role created by hand: actor %s, key %s; want %s, null", str(ev.ActorUserID), str(ev.APIKeyID), owner.UserID)
			}
		}
	}
	if found != 2 {
		t.Fatalf("%d of the 2 role.created events listed: %s", found, r.Body)
	}
}
