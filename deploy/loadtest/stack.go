package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tollgate-auth/tollgate/migrations/dbsetup"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/valyala/fasthttp"

	"github.com/tollgate-auth/tollgate/shared/identity"
)

// stack is the real system: coreapi + authproxy + PostgreSQL + NATS.
type stack struct {
	adminURL, dbName, dbURL string
	drop                    func() // drops the database
	pool                    *pgxpool.Pool
	coreAddr, coreAdmin     string
	core, proxy             *proc
	proxyAddr, proxyAdmin   string
	keys                    string // coreapi's signing keys directory
	owner                   session
	users                   []user // seeded members (role: member)
	minter                  *minter
}

type session struct {
	token, userID, tenantID string
}

func (s *stack) close() {
	if s.pool != nil {
		s.pool.Close()
	}
	if s.drop != nil {
		s.drop()
	}
}

func (h *harness) setupStack(ctx context.Context) (*stack, error) {
	s := &stack{adminURL: dbsetup.AdminURL()}
	h.stack = s
	var err error
	s.dbName, s.dbURL, s.drop, err = dbsetup.Create(ctx, s.adminURL, "bench")
	if err != nil {
		return nil, fmt.Errorf("set up the database (run through `make bench`, or use -skip-stack): %w", err)
	}
	if s.pool, err = pgxpool.New(ctx, s.dbURL); err != nil {
		return nil, err
	}

	keys := filepath.Join(h.work, "keys")
	s.keys = keys
	gen := exec.CommandContext(ctx, filepath.Join(h.bin, "coreapi"), "keys", "generate", "-dir", keys)
	if out, err := gen.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("coreapi keys generate: %w: %s", err, out)
	}
	if s.minter, err = minterFromDir(keys, issuer, audience); err != nil {
		return nil, err
	}
	if s.core, s.coreAddr, s.coreAdmin, err = h.startCore(ctx, "coreapi", filepath.Join(h.bin, "coreapi"), coreAppName); err != nil {
		return nil, err
	}
	if s.proxy, s.proxyAddr, s.proxyAdmin, err = h.startStackProxy(ctx, "authproxy-stack", s.coreAddr); err != nil {
		return nil, err
	}

	// The owner signs up through the proxy like a real client.
	body := fmt.Sprintf(`{"email":"owner-%s@example.com","password":"correct horse battery staple","tenant_name":"Bench Inc","display_name":"Owner"}`, randHex(4))
	status, resp, err := httpDo("POST", "http://"+s.proxyAddr+"/api/v1/auth/signup", "", []byte(body))
	if err != nil || status/100 != 2 {
		return nil, fmt.Errorf("signup: status %d err %v: %s", status, err, truncate(resp, 300))
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(resp, &tok); err != nil || tok.AccessToken == "" {
		return nil, fmt.Errorf("signup response: %s", truncate(resp, 300))
	}
	claims, err := jwtClaims(tok.AccessToken)
	if err != nil {
		return nil, err
	}
	s.owner = session{token: tok.AccessToken, userID: claims.Sub, tenantID: claims.Tid}

	// Members, inserted directly: a password login per member would only
	// measure argon2. The harness signs their tokens with coreapi's key.
	ids, err := seedMembers(ctx, s.pool, h.o.users, s.owner.tenantID, randHex(4))
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		s.users = append(s.users, user{id: id, tenant: s.owner.tenantID, session: uuid.NewString()})
	}
	return s, nil
}

// seedMembers inserts n users as members of tenant holding its member
// role, and returns their ids. Then it vacuums and analyzes, as autovacuum
// would soon after such an insert in a running system: each membership's
// first version is dead (the trigger that fills role_names updates it when
// its role is inserted), and without a vacuum every page of the member
// list would step over those dead versions (the test server runs without
// autovacuum).
func seedMembers(ctx context.Context, pool *pgxpool.Pool, n int, tenant, tag string) ([]string, error) {
	const q = `
WITH u AS (
    INSERT INTO users (email, display_name)
    SELECT 'bench-' || g || '-' || $3 || '@example.com', 'Bench User ' || g FROM generate_series(1, $1) g
    RETURNING id
), m AS (
    INSERT INTO memberships (tenant_id, user_id) SELECT $2, id FROM u RETURNING user_id
)
INSERT INTO membership_roles (tenant_id, user_id, role_id)
SELECT $2, m.user_id, r.id FROM m JOIN roles r ON r.tenant_id = $2 AND r.name = 'member'
RETURNING user_id`
	rows, err := pool.Query(ctx, q, n, tenant, tag)
	if err != nil {
		return nil, fmt.Errorf("seed members: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("seed members: %w", err)
	}
	if len(ids) != n {
		return nil, fmt.Errorf("seed members: %d rows, want %d (is the 'member' role missing?)", len(ids), n)
	}
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		return nil, fmt.Errorf("vacuum: %w", err)
	}
	return ids, nil
}

// coreAppName is the application_name of the stack's coreapi connections
// (how its PostgreSQL backends are found).
const coreAppName = "coreapi"

// startCore starts a coreapi binary on the stack's database and keys, its
// connections named appName, and waits until it is ready.
func (h *harness) startCore(ctx context.Context, name, bin, appName string) (p *proc, addr, admin string, err error) {
	s := h.stack
	dbURL, err := withAppName(s.dbURL, appName)
	if err != nil {
		return nil, "", "", err
	}
	addr, admin = freeAddr(), freeAddr()
	env := []string{
		"COREAPI_LISTEN_ADDR=" + addr,
		"COREAPI_ADMIN_ADDR=" + admin,
		"DATABASE_URL=" + dbURL,
		"IDENTITY_HMAC_KEY=" + h.hmac,
		"NATS_URL=" + h.nats.ClientURL(),
		"SIGNING_KEYS_DIR=" + s.keys,
		"TOKEN_ISSUER=" + issuer,
		"TOKEN_AUDIENCE=" + audience,
		"LOG_LEVEL=warn",
		// No mail server (not one of the environment's either): the
		// stack's sign-up mail goes to the log.
		"SMTP_URL=",
		"MAIL_TO_LOG=true",
	}
	if p, err = h.start(name, env, bin, "serve"); err != nil {
		return nil, "", "", err
	}
	if err := waitHTTP(ctx, "http://"+admin+"/readyz", 30*time.Second); err != nil {
		return nil, "", "", fmt.Errorf("%s: %w (logs in %s)", name, err, h.work)
	}
	return p, addr, admin, nil
}

// startStackProxy starts an authproxy in front of the coreapi at core.
func (h *harness) startStackProxy(ctx context.Context, name, core string) (p *proc, addr, admin string, err error) {
	addr, admin = freeAddr(), freeAddr()
	// coreapi's relay writes outbox heartbeats: waited for as in
	// production (the later value of a variable wins).
	env := append(h.proxyEnv(addr, admin, core), "NATS_HEARTBEAT_TIMEOUT=10s")
	if p, err = h.start(name, env, filepath.Join(h.bin, "authproxy")); err != nil {
		return nil, "", "", err
	}
	if err := waitHTTP(ctx, "http://"+admin+"/readyz", 30*time.Second); err != nil {
		return nil, "", "", fmt.Errorf("%s: %w (logs in %s)", name, err, h.work)
	}
	return p, addr, admin, nil
}

// withAppName sets application_name in a PostgreSQL URL.
func withAppName(dbURL, appName string) (string, error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		return "", fmt.Errorf("database URL: %w", err)
	}
	q := u.Query()
	q.Set("application_name", appName)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func (h *harness) runStack(ctx context.Context, rep *report) error {
	s, err := h.setupStack(ctx)
	if err != nil {
		return err
	}
	tokens, err := s.minter.mintAll(s.users, len(s.users))
	if err != nil {
		return err
	}
	meReqs := render("stack", "/api/v1/users/me", tokens)
	listReqs := [][]byte{rawGET("stack", "/api/v1/users?limit=50", s.owner.token)}
	proxyMetrics, coreMetrics := "http://"+s.proxyAdmin+"/metrics", "http://"+s.coreAdmin+"/metrics"
	c := h.o.conns

	measureStack := func(name, addr string, conns int, req func(w, i int) []byte) row {
		sc := &scrapers{proxy: proxyMetrics, core: coreMetrics}
		r := h.measureWith(ctx, name, addr, conns, req, sc)
		if addr == s.proxyAddr {
			r.counters = proxyCounters(sc.before[0], sc.after[0], r.res.Requests)
		}
		r.counters = append(r.counters, coreCounters(sc.before[1], sc.after[1])...)
		return r
	}
	rep.add(measureStack(fmt.Sprintf("full stack GET /users/me (%d users)", len(s.users)), s.proxyAddr, c, cycle(meReqs, c)))
	rep.add(measureStack("full stack GET /users?limit=50 (roles joined)", s.proxyAddr, c, cycle(listReqs, c)))

	// coreapi alone, with identity headers signed by the harness the way
	// the proxy signs them (v2): what the proxy hop costs on top of the
	// core. coreapi refuses a signature it has seen, so every request gets
	// its own request id and is signed as it is sent.
	key, err := identity.ParseKey(h.hmac)
	if err != nil {
		return err
	}
	// The stack gives coreapi IDENTITY_HMAC_KEY, which is the key "core".
	signer, err := identity.NewKeySigner(identity.Key{ID: "core", Secret: key})
	if err != nil {
		return err
	}
	ids := make([]identity.Identity, len(s.users))
	for i, u := range s.users {
		ids[i] = identity.Identity{Principal: identity.PrincipalUser, UserID: u.id, TenantID: u.tenant, SessionID: u.session,
			Roles: []string{"member"}, Permissions: []string{"tenant:read"}}
	}
	var seq atomic.Uint64
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	n := len(s.users)
	direct := measureStack("coreapi direct GET /users/me (v2-signed headers)", s.coreAddr, c, func(w, i int) []byte {
		rid := "lt-" + run + "-" + strconv.FormatUint(seq.Add(1), 10)
		return rawSignedV2(signer, s.coreAddr, "/api/v1/users/me", rid, &ids[(w+i*c)%n])
	})
	rep.add(direct)
	rep.addTrend(measureStack(fmt.Sprintf("full stack GET /users/me (%d users)", len(s.users)), s.proxyAddr, h.o.highConns, cycle(meReqs, h.o.highConns)))

	rep.invalidation, err = h.invalidationTrials(ctx, s, tokens[0])
	return err
}

// coreQueries is coreapi's histogram of database round trips per request
// (labelled by route; the sample sums every route).
const coreQueries = "coreapi_db_queries_per_request"

// coreCounters reports DB round trips per request from coreapi's
// coreapi_db_queries_per_request histogram.
func coreCounters(before, after sample) []counter {
	sum, count := coreQueries+"_sum", coreQueries+"_count"
	if _, ok := after[count]; !ok {
		return []counter{{label: "DB queries / request (coreapi)", metric: "(metric not found: " + coreQueries + ")", value: -1}}
	}
	n := delta(before, after, count)
	if n == 0 {
		return nil
	}
	return []counter{{label: "DB queries / request (coreapi)", metric: coreQueries, value: delta(before, after, sum) / n}}
}

// invalidationTrials measures, trials times, the time from the 2xx of a
// role revoke (through the proxy) to the first 403 of that user's next
// requests at the proxy.
func (h *harness) invalidationTrials(ctx context.Context, s *stack, memberToken string) (*latencies, error) {
	target := s.users[0].id
	base := "http://" + s.proxyAddr
	roleURL := base + "/api/v1/users/" + target + "/roles/admin"
	probe := base + "/api/v1/users?limit=1" // needs users:read, which only the admin role grants here
	res := &latencies{}
	h.logf("invalidation: %d trials", h.o.trials)
	for i := 0; i < h.o.trials; i++ {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if st, b, err := httpDo("PUT", roleURL, s.owner.token, nil); err != nil || st/100 != 2 {
			return nil, fmt.Errorf("grant admin: status %d err %v: %s", st, err, truncate(b, 300))
		}
		if _, err := pollStatus(probe, memberToken, 200, 5*time.Second); err != nil {
			return nil, fmt.Errorf("after grant: %w", err)
		}
		st, b, err := httpDo("DELETE", roleURL, s.owner.token, nil)
		if err != nil || st/100 != 2 {
			return nil, fmt.Errorf("revoke admin: status %d err %v: %s", st, err, truncate(b, 300))
		}
		d, err := pollStatus(probe, memberToken, 403, 5*time.Second)
		if err != nil {
			res.timeouts++
			continue
		}
		res.values = append(res.values, d)
	}
	slices.Sort(res.values)
	return res, nil
}

// pollStatus sends GET url until it answers want, returning how long that took.
func pollStatus(url, token string, want int, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	last := 0
	for time.Since(start) < timeout {
		st, _, err := httpDo("GET", url, token, nil)
		if err == nil && st == want {
			return time.Since(start), nil
		}
		last = st
	}
	return 0, fmt.Errorf("GET %s: still %d after %s, want %d", url, last, timeout, want)
}

var client = &fasthttp.Client{MaxConnsPerHost: 64, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}

func httpDo(method, url, token string, body []byte) (int, []byte, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI(url)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.SetContentType("application/json")
		req.SetBody(body)
	}
	if err := client.Do(req, resp); err != nil {
		return 0, nil, err
	}
	return resp.StatusCode(), bytes.Clone(resp.Body()), nil
}

type jwtClaimSet struct {
	Sub string `json:"sub"`
	Tid string `json:"tid"`
	Sid string `json:"sid"`
}

// jwtClaims reads (does not verify) a token's payload: the harness only
// needs the ids coreapi put there.
func jwtClaims(tok string) (jwtClaimSet, error) {
	var c jwtClaimSet
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return c, fmt.Errorf("not a JWS compact token")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return c, err
	}
	return c, json.Unmarshal(b, &c)
}

// rawSignedV2 is a GET of path on host carrying the v2 identity headers
// of id, signed now under request id rid.
func rawSignedV2(signer *identity.KeySigner, host, path, rid string, id *identity.Identity) []byte {
	const clientIP = "192.0.2.1"
	r := identity.Request{Timestamp: time.Now().UnixMilli(), RequestID: rid, ClientIP: clientIP, Method: "GET",
		PathQuery: path, BodySHA256: identity.EmptyBodySHA256}
	b := make([]byte, 0, 1024)
	hdr := func(name, v string) {
		if v != "" {
			b = append(append(append(append(b, name...), ": "...), v...), "\r\n"...)
		}
	}
	b = append(b, "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\n"...)
	identity.EachHeader(signer.KeyID(), id, &r, hdr)
	b = append(b, identity.HeaderSignature+": "...)
	b = signer.AppendSignature(b, id, &r)
	return append(b, "\r\n\r\n"...)
}
