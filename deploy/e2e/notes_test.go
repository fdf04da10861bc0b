package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// The example notes app runs once, behind both proxies: each proxy routes
// /notes to it (its own copy of the example's rules.yaml) and signs with
// the app's key; the cores load the example's permission catalog.

// note is the part of the app's note the suite checks.
type note struct {
	ID       string `json:"id"`
	Text     string `json:"text"`
	AuthorID string `json:"author_id"`
	TenantID string `json:"tenant_id"`
}

// createRole creates a custom role in owner's tenant through via.
func createRole(t *testing.T, owner account, via *service, perms ...string) string {
	t.Helper()
	name := "role-" + randToken(4)
	r := call(t, "POST", via.url("/api/v1/roles"), owner.Tokens.AccessToken, map[string]any{"name": name, "permissions": perms})
	expect(t, r, http.StatusCreated)
	return name
}

func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i-1, 0)]
}

// TestRoleChangesReachOtherProxy: a change of a custom role that changes
// what its holders may do, through proxy A, reaches the projection proxy B
// cached for a holder within the propagation bound, far inside the
// projection cache's TTL: taking a permission out of the role, and
// deleting the role (whose invalidation names the tenant: the holders'
// projections go with it).
func TestRoleChangesReachOtherProxy(t *testing.T) {
	owner := signup(t, sys.proxyA)
	m := addMember(t, owner, sys.proxyA, "member")
	role := createRole(t, owner, sys.proxyA, "notes:write")
	roleID := ""
	for _, r := range decode[struct {
		Data []struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"data"`
	}](t, call(t, "GET", sys.proxyA.url("/api/v1/roles?limit=100"), owner.Tokens.AccessToken, nil)).Data {
		if r.Name == role {
			roleID = r.ID
		}
	}
	if roleID == "" {
		t.Fatalf("role %s not listed", role)
	}
	expect(t, call(t, "PUT", sys.proxyA.url("/api/v1/users/"+m.UserID+"/roles/"+role), owner.Tokens.AccessToken, nil), http.StatusOK)
	notesB := sys.proxyB.url("/notes")
	roleURL := sys.proxyA.url("/api/v1/roles/" + roleID)
	write := func(want int) func() (bool, string) {
		return statusIs("POST", notesB, m.Tokens.AccessToken, `{"text":"role change"}`, want)
	}

	cached := func(what string, want int) {
		t.Helper()
		waitCached(t, sys.proxyB, what, "POST", notesB, m.Tokens.AccessToken, `{"text":"role change"}`, want)
	}

	cached("write through B from its cache after the grant", http.StatusCreated)
	expect(t, call(t, "PATCH", roleURL, owner.Tokens.AccessToken, map[string]any{"permissions": []string{}}), http.StatusOK)
	cached("write refused through B after the role lost notes:write", http.StatusForbidden)
	expect(t, call(t, "PATCH", roleURL, owner.Tokens.AccessToken, map[string]any{"permissions": []string{"notes:write"}}), http.StatusOK)
	cached("write through B after the role got notes:write back", http.StatusCreated)
	expect(t, call(t, "DELETE", roleURL, owner.Tokens.AccessToken, nil), http.StatusNoContent)
	if _, err := pollUntil("write refused through B after the role's deletion", propagation, time.Millisecond, write(http.StatusForbidden)); err != nil {
		t.Fatal(err)
	}
}

// TestNotesGrantAndRevokeReachOtherProxy grants a custom role holding
// notes:write through proxy A and measures how soon the member's write to
// the app through proxy B succeeds, then revokes it and measures how soon
// the write is refused again, over many trials.
func TestNotesGrantAndRevokeReachOtherProxy(t *testing.T) {
	const trials = 50
	owner := signup(t, sys.proxyA)
	m := addMember(t, owner, sys.proxyA, "member")
	role := createRole(t, owner, sys.proxyA, "notes:write")
	roleURL := sys.proxyA.url("/api/v1/users/" + m.UserID + "/roles/" + role)
	notesB := sys.proxyB.url("/notes")

	// The member reads (notes:read is a member default) but may not write.
	expect(t, call(t, "GET", notesB, m.Tokens.AccessToken, nil), http.StatusOK)
	if p := expectProblem(t, call(t, "POST", notesB, m.Tokens.AccessToken, `{"text":"before"}`), http.StatusForbidden); p.Code != problem.CodeInsufficientScope {
		t.Fatalf("write without notes:write: code %q, want %q", p.Code, problem.CodeInsufficientScope)
	}

	var grants, revokes []time.Duration
	for i := range trials {
		// Proxy B holds the member's projection (the last answer came from it).
		expect(t, call(t, "PUT", roleURL, owner.Tokens.AccessToken, nil), http.StatusOK)
		body := fmt.Sprintf(`{"text":"trial %d"}`, i)
		d, err := pollUntil("write through B after the grant through A", propagation, time.Millisecond,
			statusIs("POST", notesB, m.Tokens.AccessToken, body, http.StatusCreated))
		if err != nil {
			t.Fatalf("trial %d: %v", i, err)
		}
		grants = append(grants, d)

		r := call(t, "DELETE", roleURL, owner.Tokens.AccessToken, nil)
		if r.Status/100 != 2 {
			t.Fatalf("trial %d: revoke: %s", i, r)
		}
		d, err = pollUntil("write refused through B after the revoke through A", propagation, time.Millisecond,
			statusIs("POST", notesB, m.Tokens.AccessToken, `{"text":"refused"}`, http.StatusForbidden))
		if err != nil {
			t.Fatalf("trial %d: %v", i, err)
		}
		revokes = append(revokes, d)
	}

	// Every trial's write reached the app once, as the member, in the
	// tenant. (A probe of the revoke that still got through, before the
	// change reached proxy B, wrote a note "refused": that is the latency
	// measured.)
	got := decode[struct{ Data []note }](t, call(t, "GET", sys.proxyA.url("/notes"), m.Tokens.AccessToken, nil))
	seen := map[string]int{}
	for _, n := range got.Data {
		if n.AuthorID != m.UserID || n.TenantID != owner.TenantID {
			t.Fatalf("note %+v: want author %s tenant %s", n, m.UserID, owner.TenantID)
		}
		seen[n.Text]++
	}
	for i := range trials {
		if k := fmt.Sprintf("trial %d", i); seen[k] != 1 {
			t.Fatalf("%q written %d times, want once", k, seen[k])
		}
	}

	for name, lat := range map[string][]time.Duration{"grant → 201": grants, "revoke → 403": revokes} {
		slices.Sort(lat)
		p50, p99 := percentile(lat, 50), percentile(lat, 99)
		t.Logf("notes:write %s at proxy B after the change through A, %d trials: min %v p50 %v p90 %v p99 %v max %v",
			name, len(lat), lat[0], p50, percentile(lat, 90), p99, lat[len(lat)-1])
		// As TestRoleRevokeReachesOtherProxy: a generous bound on a shared
		// machine (the target is p99 < 50 ms; the log above reports it).
		if p50 > 100*time.Millisecond || p99 > time.Second {
			t.Errorf("%s: p50 %v p99 %v, want within 100ms and 1s", name, p50, p99)
		}
	}
}

// TestNotesClientIdentityHeadersNeverReachApp sends forged X-Auth-* headers
// with requests to the app route: the proxy drops them, so the app sees
// the token's identity only.
func TestNotesClientIdentityHeadersNeverReachApp(t *testing.T) {
	owner := signup(t, sys.proxyA)
	victim := signup(t, sys.proxyA)
	m := addMember(t, owner, sys.proxyA, "member")
	forged := http.Header{
		"X-Auth-User-Id":        {victim.UserID},
		"X-Auth-Tenant-Id":      {victim.TenantID},
		"X-Auth-Principal":      {"service"},
		"X-Auth-Roles":          {"owner"},
		"X-Auth-Permissions":    {"notes:read,notes:write"},
		"X-Auth-Key-Id":         {sys.notesKeys[0].ID},
		"X-Auth-Timestamp":      {strconv.FormatInt(time.Now().UnixMilli(), 10)},
		"X-Auth-Signature":      {"v2=AAAA"},
		"X-Auth-Email-Verified": {"true"},
	}
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		// Without a token: the protected route wants one; the headers do not count.
		r, err := sendWith("GET", p.url("/notes"), "", nil, forged)
		if err != nil {
			t.Fatal(err)
		}
		expectProblem(t, r, http.StatusUnauthorized)
		// The member's permissions are the projection's, not the header's.
		r, err = sendWith("POST", p.url("/notes"), m.Tokens.AccessToken, `{"text":"forged"}`, forged)
		if err != nil {
			t.Fatal(err)
		}
		expectProblem(t, r, http.StatusForbidden)
		// The owner's note is written as the owner, in the owner's tenant.
		r, err = sendWith("POST", p.url("/notes"), owner.Tokens.AccessToken, `{"text":"mine"}`, forged)
		if err != nil {
			t.Fatal(err)
		}
		expect(t, r, http.StatusCreated)
		n := decode[note](t, r)
		if n.AuthorID != owner.UserID || n.TenantID != owner.TenantID {
			t.Fatalf("%s: note written as user %s tenant %s, want the token's %s %s", p.name, n.AuthorID, n.TenantID, owner.UserID, owner.TenantID)
		}
		// Reading with the victim's tenant in a header lists the owner's notes only.
		r, err = sendWith("GET", p.url("/notes"), owner.Tokens.AccessToken, nil, forged)
		if err != nil {
			t.Fatal(err)
		}
		expect(t, r, http.StatusOK)
		for _, n := range decode[struct{ Data []note }](t, r).Data {
			if n.TenantID != owner.TenantID {
				t.Fatalf("%s: listed a note of tenant %s", p.name, n.TenantID)
			}
		}
	}
}

// TestNotesRouteCannotReachCoreInternals: nothing sent to the proxies,
// through the app's route or beside it, reaches coreapi's internal
// endpoints.
func TestNotesRouteCannotReachCoreInternals(t *testing.T) {
	owner := signup(t, sys.proxyA)
	projection := "/internal/v1/projections/" + owner.UserID
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		for _, path := range []string{
			projection,
			"/notes/.." + projection,
			"/notes/%2e%2e" + projection,
			"/notes/..%2f..%2finternal/v1/projections/" + owner.UserID,
			"/notes" + projection,
			"//internal/v1/projections/" + owner.UserID,
			"/INTERNAL/v1/projections/" + owner.UserID,
		} {
			r, err := send("GET", "http://"+p.addr+path, owner.Tokens.AccessToken, nil)
			if err != nil {
				t.Fatalf("%s %s: %v", p.name, path, err)
			}
			// A refusal, and never the projection (its token_version field).
			if r.Status/100 == 2 || bytes.Contains(r.Body, []byte(`"token_version"`)) {
				t.Errorf("%s %s reached further than it may: %s", p.name, path, r)
			}
		}
	}
}

// signedRequest is a request to target signed with key for id.
func signedRequest(t *testing.T, method, target string, key identity.Key, id identity.Identity, body string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r, err := http.NewRequest(method, target, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	s, err := identity.NewKeySigner(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify.Sign(r, s, id, time.Now()); err != nil {
		t.Fatal(err)
	}
	return r
}

// internalRequest is signedRequest as the proxy signs its own calls to
// coreapi's internal endpoints: no X-Auth-Client-Ip.
func internalRequest(t *testing.T, method, target string, key identity.Key, id identity.Identity, body string) *http.Request {
	t.Helper()
	r := signedRequest(t, method, target, key, id, body)
	s, err := identity.NewKeySigner(key)
	if err != nil {
		t.Fatal(err)
	}
	sum := identity.EmptyBodySHA256
	if body != "" {
		sum = sha256.Sum256([]byte(body))
	}
	ts, err := strconv.ParseInt(r.Header.Get(identity.HeaderTimestamp), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	req := identity.Request{Timestamp: ts, RequestID: r.Header.Get(identity.HeaderRequestID), Method: method,
		PathQuery: r.URL.RequestURI(), BodySHA256: sum}
	r.Header.Del(identity.HeaderClientIP)
	r.Header.Set(identity.HeaderSignature, s.Sign(&id, &req))
	return r
}

func do(t *testing.T, r *http.Request) reply {
	t.Helper()
	resp, err := apiClient.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", r.Method, r.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{Method: r.Method, URL: r.URL.String(), Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// TestKeysAreNotInterchangeable sends directly to the app's and to core A's
// ports: the app refuses a request signed with the core key (an id it does
// not hold), and coreapi refuses one signed with the app's key, for its
// API and its internal projection endpoint. The same requests signed with
// the right key pass, so the refusals are the keys'.
func TestKeysAreNotInterchangeable(t *testing.T) {
	owner := signup(t, sys.proxyA)
	coreSecret, err := base64.StdEncoding.DecodeString(sys.hmacKey)
	if err != nil {
		t.Fatal(err)
	}
	coreKey := identity.Key{ID: "core", Secret: coreSecret}
	appKey := sys.notesKeys[0]
	user := identity.Identity{Principal: identity.PrincipalUser, UserID: owner.UserID, TenantID: owner.TenantID,
		Roles: []string{"owner"}, Permissions: append([]string(nil), allPermissions...)}
	anon := identity.Identity{Principal: identity.PrincipalAnonymous}

	for _, tc := range []struct {
		name      string
		method    string
		target    string
		body      string
		id        identity.Identity
		good, bad identity.Key
		ok        int
		// internal: signed as the proxy signs its own calls (no client
		// IP), not as it forwards a client's request.
		internal bool
	}{
		{"app write", "POST", "http://" + sys.notes.addr + "/notes", `{"text":"direct"}`, user, appKey, coreKey, http.StatusCreated, false},
		{"app read", "GET", "http://" + sys.notes.addr + "/notes", "", user, appKey, coreKey, http.StatusOK, false},
		{"core api", "GET", sys.coreA.url("/api/v1/users/me"), "", user, coreKey, appKey, http.StatusOK, false},
		{"core internal", "GET", sys.coreA.url("/internal/v1/projections/" + owner.UserID + "?tenant_id=" + owner.TenantID), "", anon, coreKey, appKey, http.StatusOK, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sign := signedRequest
			if tc.internal {
				sign = internalRequest
			}
			expect(t, do(t, sign(t, tc.method, tc.target, tc.good, tc.id, tc.body)), tc.ok)
			r := do(t, sign(t, tc.method, tc.target, tc.bad, tc.id, tc.body))
			expectProblem(t, r, http.StatusUnauthorized)
			// The same key under the right id: the secret is what counts.
			forged := identity.Key{ID: tc.good.ID, Secret: tc.bad.Secret}
			expectProblem(t, do(t, sign(t, tc.method, tc.target, forged, tc.id, tc.body)), http.StatusUnauthorized)
			if tc.internal {
				// Signed with the right key, but naming a client, as the
				// proxy signs what it forwards: a client's request.
				expectProblem(t, do(t, signedRequest(t, tc.method, tc.target, tc.good, tc.id, tc.body)), http.StatusUnauthorized)
			}
		})
	}
}

// rulesGeneration reads authproxy_rules_generation from p's metrics.
func rulesGeneration(p *service) (int, error) {
	resp, err := metricsClient.Get("http://" + p.admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "authproxy_rules_generation "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int(f), err
		}
	}
	return 0, fmt.Errorf("no authproxy_rules_generation in %s's metrics", p.name)
}

// traffic sends requests through the proxies in service, as a load
// balancer would, until stopped, and counts the answers.
type traffic struct {
	// sending is held from picking a proxy until its answer is read, so
	// that setInService returns only once no request can still go to a
	// proxy taken out of service.
	sending  sync.Mutex
	mu       sync.Mutex
	inServ   []*service
	statuses map[int]int
	bad      []string // the first non-2xx answers and transport errors
	phase    atomic.Int64
	perPhase sync.Map // phase → *atomic.Int64 successes
	stop     chan struct{}
	done     chan struct{}
}

func startTraffic(owner account, proxies ...*service) *traffic {
	tr := &traffic{inServ: proxies, statuses: map[int]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(tr.done)
		for i := 0; ; i++ {
			select {
			case <-tr.stop:
				return
			default:
			}
			tr.sending.Lock()
			tr.mu.Lock()
			p := tr.inServ[i%len(tr.inServ)]
			tr.mu.Unlock()
			method, body, want := "GET", any(nil), http.StatusOK
			if i%4 == 0 { // a signed body too
				method, body, want = "POST", fmt.Sprintf(`{"text":"rotation %d"}`, i), http.StatusCreated
			}
			r, err := send(method, p.url("/notes"), owner.Tokens.AccessToken, body)
			tr.sending.Unlock()
			tr.mu.Lock()
			switch {
			case err != nil:
				tr.statuses[-1]++
				if len(tr.bad) < 10 {
					tr.bad = append(tr.bad, fmt.Sprintf("%s via %s: %v", method, p.name, err))
				}
			case r.Status != want:
				tr.statuses[r.Status]++
				if len(tr.bad) < 10 {
					tr.bad = append(tr.bad, p.name+": "+r.String())
				}
			default:
				tr.statuses[r.Status]++
				n, _ := tr.perPhase.LoadOrStore(tr.phase.Load(), new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
			tr.mu.Unlock()
		}
	}()
	return tr
}

// setInService changes the proxies the traffic goes to.
func (tr *traffic) setInService(proxies ...*service) {
	tr.sending.Lock()
	defer tr.sending.Unlock()
	tr.mu.Lock()
	tr.inServ = proxies
	tr.mu.Unlock()
}

// nextPhase starts counting successes for a new step, after making sure
// the previous one saw some.
func (tr *traffic) nextPhase(t *testing.T, step string) {
	t.Helper()
	ph := tr.phase.Load()
	if _, err := pollUntil("traffic during "+step, propagation, time.Millisecond, func() (bool, string) {
		n, ok := tr.perPhase.Load(ph)
		return ok && n.(*atomic.Int64).Load() >= 5, "fewer than 5 successful requests"
	}); err != nil {
		t.Fatal(err)
	}
	tr.phase.Add(1)
}

func (tr *traffic) finish() (map[int]int, []string) {
	close(tr.stop)
	<-tr.done
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.statuses, tr.bad
}

// TestAppKeyRotationUnderTraffic rotates the notes app's key as
// docs/operations.md ("Rotating an app's key") says, with requests flowing
// through both proxies all along, and sees every one of them succeed: no
// 401, nor anything else.
//
//  1. Generate app-notes-2.
//  2. Roll the app with [old, new]: a new notes process (the example keeps
//     notes in memory, so a roll starts empty) takes the proxies' upstream
//     by a rules-file change, which each proxy reloads by itself; then the
//     old process stops.
//  3. Roll the proxies one at a time with UPSTREAM_KEYS [new, old] and the
//     upstream's key_id app-notes-2; the other proxy serves meanwhile.
//  4. Roll the app with [new] only, then the proxies with UPSTREAM_KEYS
//     [new]. The old key is then refused.
//
// It runs last among the notes tests: it leaves the app on the new key.
// appKeyRotations counts the runs of TestAppKeyRotationUnderTraffic.
var appKeyRotations atomic.Int32

// drainGrace is how long an old app process keeps serving after both
// proxies reloaded to its successor: far longer than a request of the
// rotation's traffic takes from its route lookup to its upstream.
const drainGrace = 250 * time.Millisecond

func TestAppKeyRotationUnderTraffic(t *testing.T) {
	owner := signup(t, sys.proxyA)
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		expect(t, call(t, "GET", p.url("/notes"), owner.Tokens.AccessToken, nil), http.StatusOK)
	}
	// A new id each run: after a run the app and the proxies use the new
	// key, so a second run (-count) rotates away from it.
	oldKey, newKey := sys.notesKeys[0], newAppKey(fmt.Sprintf("app-notes-%d", appKeyRotations.Add(1)+1))
	ports, err := freePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	proxyKeys := []identity.Key{oldKey} // what the proxies run with
	tr := startTraffic(owner, sys.proxyA, sys.proxyB)
	defer func() {
		statuses, bad := tr.finish()
		t.Logf("answers during the rotation (status → count, -1 = transport error): %v", statuses)
		if statuses[http.StatusUnauthorized] > 0 || len(bad) > 0 {
			t.Errorf("%d × 401 and %d other failures during the rotation; first: %s",
				statuses[http.StatusUnauthorized], len(bad), strings.Join(bad, "\n  "))
		}
	}()

	// rollApp starts a notes process verifying with keys, moves both
	// proxies' upstream to it (rules reload), and stops the previous one.
	rollApp := func(n int, keys []identity.Key) {
		t.Helper()
		prev := sys.notes
		next := sys.newNotes(fmt.Sprintf("notes-%d", n), "127.0.0.1:"+strconv.Itoa(ports[2*n-2]), "127.0.0.1:"+strconv.Itoa(ports[2*n-1]), keys)
		if err := next.start(context.Background()); err != nil {
			t.Fatal(err)
		}
		sys.notes = next
		for _, p := range []*service{sys.proxyA, sys.proxyB} {
			gen, err := rulesGeneration(p)
			if err != nil {
				t.Fatal(err)
			}
			// The proxy's keys stay as they are until its restart.
			if err := sys.useNotes(p, next, proxyKeys); err != nil {
				t.Fatal(err)
			}
			if _, err := pollUntil(p.name+" reloads its rules", propagation, 10*time.Millisecond, func() (bool, string) {
				g, err := rulesGeneration(p)
				if err != nil {
					return false, err.Error()
				}
				return g > gen, fmt.Sprintf("generation %d, was %d", g, gen)
			}); err != nil {
				t.Fatal(err)
			}
		}
		// A request keeps the route table it started with to its end,
		// whatever a reload swaps in: one that took the old table just
		// before the reload may not have reached the old process yet. As
		// a rollout keeps the old pod serving past the switch, it is
		// stopped once such requests are through (one failed this way,
		// 503 upstream_unavailable, on a loaded 2-core host).
		time.Sleep(drainGrace)
		prev.stop()
	}
	// rollProxies restarts each proxy in turn, out of service meanwhile,
	// with keys as UPSTREAM_KEYS and the first of them signing.
	rollProxies := func(keys []identity.Key) {
		t.Helper()
		for _, p := range []*service{sys.proxyA, sys.proxyB} {
			other := sys.proxyB
			if p == sys.proxyB {
				other = sys.proxyA
			}
			tr.setInService(other)
			// Requests already sent to p finish during its graceful stop.
			p.stop()
			if err := sys.useNotes(p, sys.notes, keys); err != nil {
				t.Fatal(err)
			}
			if err := p.start(context.Background()); err != nil {
				t.Fatal(err)
			}
			tr.setInService(sys.proxyA, sys.proxyB)
		}
		proxyKeys = keys
	}

	tr.nextPhase(t, "the old key")
	rollApp(1, []identity.Key{oldKey, newKey})
	tr.nextPhase(t, "the app's roll to [old, new]")
	rollProxies([]identity.Key{newKey, oldKey})
	tr.nextPhase(t, "the proxies' roll to [new, old]")
	rollApp(2, []identity.Key{newKey})
	tr.nextPhase(t, "the app's roll to [new]")
	rollProxies([]identity.Key{newKey})
	tr.nextPhase(t, "the proxies' roll to [new]")
	sys.notesKeys = []identity.Key{newKey}

	// The retired key is refused at the app; the new one is accepted.
	user := identity.Identity{Principal: identity.PrincipalUser, UserID: owner.UserID, TenantID: owner.TenantID, Permissions: []string{"notes:read"}}
	expectProblem(t, do(t, signedRequest(t, "GET", sys.notes.url("/notes"), oldKey, user, "")), http.StatusUnauthorized)
	expect(t, do(t, signedRequest(t, "GET", sys.notes.url("/notes"), newKey, user, "")), http.StatusOK)
}
