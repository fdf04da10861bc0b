package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/problem"
)

// metricsClient reads the services' metrics. A test checks most figures
// once rather than polling, so its timeout is the API client's: the 2 s it
// had were passed by one scrape on a loaded machine.
var metricsClient = &http.Client{Timeout: 20 * time.Second}

// apiClient talks to the proxies like a client would, except that it never
// follows redirects (the OAuth test follows them step by step). Its timeout
// is far above the proxies' upstream timeout, so a hang shows up as a
// timeout error rather than as a slow success.
var apiClient = &http.Client{
	Timeout:       20 * time.Second,
	Transport:     &http.Transport{MaxIdleConnsPerHost: 32, IdleConnTimeout: 30 * time.Second},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// reply is a finished HTTP exchange.
type reply struct {
	Method, URL string
	Status      int
	Header      http.Header
	Body        []byte
	Elapsed     time.Duration
}

func (r reply) String() string {
	b := r.Body
	if len(b) > 400 {
		b = append(b[:400:400], "..."...)
	}
	return fmt.Sprintf("%s %s → %d %s", r.Method, r.URL, r.Status, b)
}

// send performs one request. body is nil, a string (sent as JSON), url.Values
// (sent form-encoded) or any other value (JSON-encoded).
func send(method, target, token string, body any) (reply, error) {
	return sendWith(method, target, token, body, nil)
}

// sendWith is send with extra request headers (a browser's cookies).
func sendWith(method, target, token string, body any, extra http.Header) (reply, error) {
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd, ctype = strings.NewReader(b), "application/json"
	case url.Values:
		rd, ctype = strings.NewReader(b.Encode()), "application/x-www-form-urlencoded"
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			return reply{}, err
		}
		rd, ctype = bytes.NewReader(enc), "application/json"
	}
	req, err := http.NewRequest(method, target, rd)
	if err != nil {
		return reply{}, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", "application/json")
	for k, vs := range extra {
		req.Header[k] = vs
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	start := time.Now()
	resp, err := apiClient.Do(req)
	if err != nil {
		return reply{Method: method, URL: target, Elapsed: time.Since(start)}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	r := reply{Method: method, URL: target, Status: resp.StatusCode, Header: resp.Header, Body: data, Elapsed: time.Since(start)}
	return r, err
}

// requestID is the id of the request r answered: the X-Request-Id the
// proxy set, else the request_id of a problem body ("" when neither).
func (r reply) requestID() string {
	if id := r.Header.Get("X-Request-Id"); id != "" {
		return id
	}
	var p struct {
		RequestID string `json:"request_id"`
	}
	if json.Unmarshal(r.Body, &p) == nil {
		return p.RequestID
	}
	return ""
}

// logsOf is what every service logged about the request r answered (the
// lines carrying its request id), for the message of a test that fails
// on r: the suite's logs hold every test's requests, and the tails
// printed when the run ends are long past a request of an earlier test,
// or of another core than the one that answered.
func logsOf(r reply) string {
	id := r.requestID()
	if id == "" || sys == nil {
		return "\n(no request id: no service logs)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nlogs of request %s:", id)
	for _, svc := range []*service{sys.proxyA, sys.proxyB, sys.coreA, sys.coreB, sys.notes} {
		if lines := requestLines(svc.logPath, id); lines != "" {
			fmt.Fprintf(&b, "\n---- %s\n%s", svc.name, lines)
		}
	}
	return b.String()
}

// call is send for tests: a transport error fails the test.
func call(t testing.TB, method, target, token string, body any) reply {
	t.Helper()
	r, err := send(method, target, token, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	return r
}

// expect fails the test unless the reply has the wanted status.
func expect(t testing.TB, r reply, want int) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("%s: status %d, want %d%s", r, r.Status, want, logsOf(r))
	}
}

func decode[T any](t testing.TB, r reply) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.Body, &v); err != nil {
		t.Fatalf("%s: decode body as %T: %v", r, v, err)
	}
	return v
}

// expectProblem checks that r is an RFC 9457 problem with the wanted status
// and a non-empty code, and returns it.
func expectProblem(t testing.TB, r reply, want int) problem.Problem {
	t.Helper()
	if r.Status != want {
		t.Fatalf("%s: status %d, want %d%s", r, r.Status, want, logsOf(r))
	}
	return checkProblem(t, r)
}

func checkProblem(t testing.TB, r reply) problem.Problem {
	t.Helper()
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != problem.ContentType {
		t.Fatalf("%s: Content-Type %q, want %s", r, r.Header.Get("Content-Type"), problem.ContentType)
	}
	var p problem.Problem
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatalf("%s: problem body: %v", r, err)
	}
	if p.Status != r.Status {
		t.Errorf("%s: problem status %d, HTTP status %d", r, p.Status, r.Status)
	}
	if p.Code == "" {
		t.Errorf("%s: problem has no code", r)
	}
	return p
}

// tokenResponse is the OAuth2-shaped body of signup, token and switch-tenant.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	TenantID     string `json:"tenant_id"`
}

func (tr tokenResponse) check(t testing.TB, r reply) {
	t.Helper()
	if tr.AccessToken == "" || tr.RefreshToken == "" || !strings.EqualFold(tr.TokenType, "Bearer") || tr.ExpiresIn <= 0 || tr.TenantID == "" {
		t.Fatalf("%s: incomplete token response %+v", r, tr)
	}
}

// account is a user known to the suite, with its current tokens.
type account struct {
	Email, Password string
	UserID          string
	TenantID        string
	Tokens          tokenResponse
}

const testPassword = "correct horse battery staple 42"

// signup creates a tenant and its owner through the given proxy.
func signup(t testing.TB, via *service) account {
	t.Helper()
	email := "owner-" + randToken(5) + "@example.com"
	r := call(t, "POST", via.url("/api/v1/auth/signup"), "", map[string]string{
		"email": email, "password": testPassword, "tenant_name": "E2E " + randToken(3), "display_name": "Owner",
	})
	if r.Status != http.StatusCreated && r.Status != http.StatusOK {
		t.Fatalf("%s: signup status %d, want 201", r, r.Status)
	}
	tr := decode[tokenResponse](t, r)
	tr.check(t, r)
	c := claimsOf(t, tr.AccessToken)
	if c.Tid != tr.TenantID {
		t.Fatalf("signup: token tid %q, response tenant_id %q", c.Tid, tr.TenantID)
	}
	return account{Email: email, Password: testPassword, UserID: c.Sub, TenantID: tr.TenantID, Tokens: tr}
}

// login runs the password grant through the given proxy.
func login(t testing.TB, via *service, a account) tokenResponse {
	t.Helper()
	body := map[string]string{"grant_type": "password", "email": a.Email, "password": a.Password}
	if a.TenantID != "" {
		body["tenant_id"] = a.TenantID
	}
	r := call(t, "POST", via.url("/api/v1/auth/token"), "", body)
	expect(t, r, http.StatusOK)
	tr := decode[tokenResponse](t, r)
	tr.check(t, r)
	return tr
}

// addMember creates a user in owner's tenant with the given roles and signs
// them in through via.
func addMember(t testing.TB, owner account, via *service, roles ...string) account {
	t.Helper()
	email := "member-" + randToken(5) + "@example.com"
	r := call(t, "POST", via.url("/api/v1/users"), owner.Tokens.AccessToken, map[string]any{
		"email": email, "password": testPassword, "display_name": "Member", "roles": roles,
	})
	if r.Status != http.StatusCreated && r.Status != http.StatusOK {
		t.Fatalf("%s: add member status %d, want 201", r, r.Status)
	}
	m := account{Email: email, Password: testPassword, TenantID: owner.TenantID}
	m.Tokens = login(t, via, m)
	m.UserID = claimsOf(t, m.Tokens.AccessToken).Sub
	return m
}

// meBody is the part of GET /users/me the suite checks.
type meBody struct {
	ID          string   `json:"id"`
	Email       string   `json:"email"`
	DisplayName string   `json:"display_name"`
	TenantID    string   `json:"tenant_id"`
	Roles       []string `json:"roles"`
	Permissions []string `json:"permissions"`
}

// me fetches GET /users/me and checks that the answer is about the token's
// own user and tenant: an answer meant for another request would show here.
func me(t testing.TB, via *service, token string) meBody {
	t.Helper()
	r := call(t, "GET", via.url("/api/v1/users/me"), token, nil)
	expect(t, r, http.StatusOK)
	m := decode[meBody](t, r)
	if c := claimsOf(t, token); m.ID != c.Sub || m.TenantID != c.Tid {
		t.Fatalf("%s via %s: /users/me answered for user %s tenant %s, the token is user %s tenant %s (request id %s)",
			r, via.name, m.ID, m.TenantID, c.Sub, c.Tid, r.Header.Get("X-Request-Id"))
	}
	return m
}

// claims are the access-token claims the suite reads. The token is not
// verified here: the proxies do that; the suite only needs the ids.
type claims struct {
	Sub string `json:"sub"`
	Tid string `json:"tid"`
	Sid string `json:"sid"`
	Tv  int    `json:"tv"`
	Jti string `json:"jti"`
}

func claimsOf(t testing.TB, tok string) claims {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("access token is not a compact JWS: %q", tok)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("access token payload: %v", err)
	}
	var c claims
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatalf("access token claims: %v", err)
	}
	if c.Sub == "" || c.Tid == "" || c.Sid == "" {
		t.Fatalf("access token lacks sub/tid/sid: %s", raw)
	}
	return c
}

// waitStatus repeats a request, every interval, until it answers want or
// timeout passes. It returns the time from the call to the first matching
// reply (so with interval 0 it measures when a change became visible, to
// within one request).
func waitStatus(method, target, token string, want int, timeout, interval time.Duration) (time.Duration, reply, error) {
	start := time.Now()
	var last reply
	var lastErr error
	for time.Since(start) < timeout {
		r, err := send(method, target, token, nil)
		if err == nil && r.Status == want {
			return time.Since(start), r, nil
		}
		last, lastErr = r, err
		if interval > 0 {
			time.Sleep(interval)
		}
	}
	if lastErr != nil {
		return 0, last, fmt.Errorf("%s %s: no %d within %s; last error: %v", method, target, want, timeout, lastErr)
	}
	return 0, last, fmt.Errorf("no %d within %s; last %s", want, timeout, last)
}

// mustWaitStatus is waitStatus failing the test on timeout.
func mustWaitStatus(t testing.TB, method, target, token string, want int, timeout time.Duration) (time.Duration, reply) {
	t.Helper()
	d, r, err := waitStatus(method, target, token, want, timeout, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return d, r
}

func hasAll(have []string, want ...string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// pollUntil calls try every interval until it reports done or timeout
// passes; the error then names what was awaited and try's last answer. It
// returns the time from the call to the first done.
func pollUntil(what string, timeout, interval time.Duration, try func() (done bool, last string)) (time.Duration, error) {
	start := time.Now()
	last := "no attempt"
	for time.Since(start) < timeout {
		done, l := try()
		if done {
			return time.Since(start), nil
		}
		last = l
		if interval > 0 {
			time.Sleep(interval)
		}
	}
	return 0, fmt.Errorf("%s: not within %s; last: %s", what, timeout, last)
}

// statusIs is a pollUntil probe: one request, done when it answers want.
func statusIs(method, target, token string, body any, want int) func() (bool, string) {
	return func() (bool, string) {
		r, err := send(method, target, token, body)
		if err != nil {
			return false, err.Error()
		}
		return r.Status == want, r.String()
	}
}

// waitCached polls until px answers the request with want from its
// projection cache (the request counted a hit): what follows then has to
// drop px's entry, not find none (a fill is stored asynchronously, so the
// requests right after one may fetch afresh).
func waitCached(t testing.TB, px *service, what, method, target, token string, body any, want int) {
	t.Helper()
	const hits = `authproxy_cache_hits_total{cache="projection"}`
	_, err := pollUntil(what, propagation, time.Millisecond, func() (bool, string) {
		before, _, err := proxyMetric(px, hits)
		if err != nil {
			return false, err.Error()
		}
		if done, last := statusIs(method, target, token, body, want)(); !done {
			return false, last
		}
		after, _, err := proxyMetric(px, hits)
		if err != nil {
			return false, err.Error()
		}
		return after > before, fmt.Sprintf("%s: projection cache hits %v, then %v", px.name, before, after)
	})
	if err != nil {
		t.Fatal(err)
	}
}
