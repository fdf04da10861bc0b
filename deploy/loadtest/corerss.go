package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/valyala/fasthttp"

	"github.com/tollgate-auth/tollgate/migrations/dbsetup"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// -core-rss: the memory a coreapi process needs under its worst cases at
// once, with the Kubernetes base's GOMEMLIMIT and GOMAXPROCS, on a real
// PostgreSQL. Against one coreapi, for -core-rss-for:
//
//   - a flood of password sign-ins (argon2id, 19 MiB each, GOMAXPROCS of
//     them at once, the rest waiting for a slot), each from another client
//     address and for an unknown account, so that no rate limit or lockout
//     refuses it before its hash;
//   - loops reading GET /users?limit=200 (the largest page), following the
//     cursor through the seeded members;
//   - uploads of bodies of MAX_BODY_BYTES (PATCH /users/me, padded);
//   - sign-ups (a hash, a verification mail, outbox events) and role
//     grants and revokes (invalidations), which keep the mail sender and
//     the outbox relay busy, the mails going to an SMTP sink here;
//   - -core-rss-conns keep-alive connections, each having served one
//     request, held open.
//
// It reports the peak RSS (VmHWM) and what each driver got.

// coreRSSOptions are -core-rss's knobs.
type coreRSSOptions struct {
	duration   time.Duration
	memLimit   string // coreapi's GOMEMLIMIT
	maxProcs   int    // coreapi's GOMAXPROCS
	signIns    int    // connections sending sign-ins
	listLoops  int    // connections reading the largest page
	bodyLoops  int    // connections uploading MAX_BODY_BYTES
	writeLoops int    // connections signing up, and as many granting roles
	conns      int    // idle keep-alive connections held
	members    int    // seeded members of the tenant the lists read
}

// coreMaxBody is coreapi's MAX_BODY_BYTES default (1 MiB), which the
// measurement leaves as is.
const coreMaxBody = 1 << 20

// coreCaller signs requests to one coreapi the way its proxy does (v2).
type coreCaller struct {
	addr   string
	signer *identity.KeySigner
	run    string
	seq    atomic.Uint64
}

// request renders a signed request of id from client ip (empty id: an
// anonymous caller).
func (c *coreCaller) request(method, pathQuery string, id identity.Identity, ip, ctype string, body []byte) []byte {
	if id.Principal == "" {
		id.Principal = identity.PrincipalAnonymous
	}
	rid := "rss-" + c.run + "-" + strconv.FormatUint(c.seq.Add(1), 10)
	r := identity.Request{Timestamp: time.Now().UnixMilli(), RequestID: rid, ClientIP: ip, Method: method,
		PathQuery: pathQuery, BodySHA256: sha256.Sum256(body)}
	b := make([]byte, 0, 1024+len(body))
	hdr := func(name, v string) {
		if v != "" {
			b = append(append(append(append(b, name...), ": "...), v...), "\r\n"...)
		}
	}
	b = append(b, method+" "+pathQuery+" HTTP/1.1\r\nHost: "+c.addr+"\r\n"...)
	identity.EachHeader(c.signer.KeyID(), &id, &r, hdr)
	b = append(b, identity.HeaderSignature+": "...)
	b = c.signer.AppendSignature(b, &id, &r)
	b = append(b, "\r\n"...)
	if len(body) > 0 || method == "POST" || method == "PATCH" || method == "PUT" {
		if ctype != "" {
			hdr("Content-Type", ctype)
		}
		hdr("Content-Length", strconv.Itoa(len(body)))
	}
	b = append(b, "\r\n"...)
	return append(b, body...)
}

// coreConn is one keep-alive connection to coreapi.
type coreConn struct {
	c    net.Conn
	br   *bufio.Reader
	resp fasthttp.Response
}

func dialCore(addr string) (*coreConn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	return &coreConn{c: c, br: bufio.NewReaderSize(c, 16<<10)}, nil
}

// do sends req and reads its answer: the status, or an error.
func (cc *coreConn) do(req []byte) (int, error) {
	_ = cc.c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := cc.c.Write(req); err != nil {
		return 0, err
	}
	cc.resp.Reset()
	if err := cc.resp.Read(cc.br); err != nil {
		return 0, err
	}
	return cc.resp.StatusCode(), nil
}

// driverStats counts one driver's answers by status.
type driverStats struct {
	name     string
	mu       sync.Mutex
	statuses map[int]int
	errs     int
	firstErr string
	lat      []time.Duration
}

func newDriver(name string) *driverStats { return &driverStats{name: name, statuses: map[int]int{}} }

func (d *driverStats) add(status int, err error, took time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.errs++
		if d.firstErr == "" {
			d.firstErr = err.Error()
		}
		return
	}
	d.statuses[status]++
	d.lat = append(d.lat, took)
}

func (d *driverStats) String() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	codes := make([]int, 0, len(d.statuses))
	n := 0
	for c, k := range d.statuses {
		codes = append(codes, c)
		n += k
	}
	slices.Sort(codes)
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d×%d", d.statuses[c], c))
	}
	s := fmt.Sprintf("%s: %d answers (%s)", d.name, n, strings.Join(parts, ", "))
	if len(d.lat) > 0 {
		l := slices.Clone(d.lat)
		slices.Sort(l)
		s += fmt.Sprintf(", latency p50 %v p99 %v max %v", l[len(l)/2].Round(time.Millisecond),
			l[len(l)*99/100].Round(time.Millisecond), l[len(l)-1].Round(time.Millisecond))
	}
	if d.errs > 0 {
		s += fmt.Sprintf(", %d transport errors (first: %s)", d.errs, d.firstErr)
	}
	return s
}

// loop runs next on a connection of its own until stop, reconnecting
// after a transport error; seen (if not nil) is given each answer's
// status and body.
func (d *driverStats) loop(stop <-chan struct{}, addr string, next func(i int) []byte, seen func(status int, body []byte)) {
	var cc *coreConn
	defer func() {
		if cc != nil {
			cc.c.Close()
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		if cc == nil {
			var err error
			if cc, err = dialCore(addr); err != nil {
				d.add(0, err, 0)
				time.Sleep(100 * time.Millisecond)
				continue
			}
		}
		start := time.Now()
		st, err := cc.do(next(i))
		d.add(st, err, time.Since(start))
		if err == nil && seen != nil {
			seen(st, cc.resp.Body())
		}
		if err != nil || cc.resp.ConnectionClose() {
			cc.c.Close()
			cc = nil
			continue
		}
		// A client told to come back later does, as a well-behaved one
		// would: an immediate retry measures the generator, not coreapi.
		if ra, _ := strconv.Atoi(string(cc.resp.Header.Peek("Retry-After"))); ra > 0 && (st == 503 || st == 429) {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(ra) * time.Second):
			}
		}
	}
}

// randomIP is a client address of 10.0.0.0/8: every sign-in and sign-up
// its own client, so that the per-address budgets refuse none of them
// before their hash.
func randomIP() string {
	return fmt.Sprintf("10.%d.%d.%d", rand.IntN(256), rand.IntN(256), 1+rand.IntN(254))
}

// vmKB reads field (VmHWM, VmRSS) of a process's /proc status in KiB.
func vmKB(pid int, field string) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return -1
}

// smtpSink is a mail server that takes every mail and keeps none.
type smtpSink struct {
	ln    net.Listener
	mails atomic.Int64
}

func startSMTPSink() (*smtpSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &smtpSink{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s, nil
}

func (s *smtpSink) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	say := func(line string) bool { _, err := io.WriteString(c, line+"\r\n"); return err == nil }
	if !say("220 sink ESMTP") {
		return
	}
	for {
		_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			say("250-sink")
			say("250 8BITMIME")
		case strings.HasPrefix(cmd, "DATA"):
			say("354 go on")
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" || l == ".\n" {
					break
				}
			}
			s.mails.Add(1)
			say("250 taken")
		case strings.HasPrefix(cmd, "QUIT"):
			say("221 bye")
			return
		default: // HELO, MAIL, RCPT, RSET, NOOP
			say("250 ok")
		}
	}
}

// measureCoreRSS runs -core-rss and prints what it measured.
func (h *harness) measureCoreRSS(ctx context.Context, o coreRSSOptions, out io.Writer) error {
	sink, err := startSMTPSink()
	if err != nil {
		return err
	}
	defer sink.ln.Close()
	s := &stack{adminURL: dbsetup.AdminURL()}
	h.stack = s
	if s.dbName, s.dbURL, s.drop, err = dbsetup.Create(ctx, s.adminURL, "corerss"); err != nil {
		return fmt.Errorf("set up the database (run through scripts/with-postgres.sh): %w", err)
	}
	s.keys = filepath.Join(h.work, "keys")
	if b, err := exec.CommandContext(ctx, filepath.Join(h.bin, "coreapi"), "keys", "generate", "-dir", s.keys).CombinedOutput(); err != nil {
		return fmt.Errorf("coreapi keys generate: %w: %s", err, b)
	}
	addr, admin := freeAddr(), freeAddr()
	env := []string{
		"COREAPI_LISTEN_ADDR=" + addr,
		"COREAPI_ADMIN_ADDR=" + admin,
		"DATABASE_URL=" + s.dbURL,
		"IDENTITY_HMAC_KEY=" + h.hmac,
		"NATS_URL=" + h.nats.ClientURL(),
		"SIGNING_KEYS_DIR=" + s.keys,
		"TOKEN_ISSUER=" + issuer,
		"TOKEN_AUDIENCE=" + audience,
		"PUBLIC_BASE_URL=" + issuer,
		"LOG_LEVEL=warn",
		"SMTP_URL=smtp://" + sink.ln.Addr().String() + "?starttls=off",
		"GOMEMLIMIT=" + o.memLimit,
		"GOMAXPROCS=" + strconv.Itoa(o.maxProcs),
	}
	core, err := h.start("coreapi-rss", env, filepath.Join(h.bin, "coreapi"), "serve")
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+admin+"/readyz", 30*time.Second); err != nil {
		return fmt.Errorf("coreapi: %w (logs in %s)", err, h.work)
	}
	pid := core.pid()
	key, err := identity.ParseKey(h.hmac)
	if err != nil {
		return err
	}
	signer, err := identity.NewKeySigner(identity.Key{ID: "core", Secret: key})
	if err != nil {
		return err
	}
	cl := &coreCaller{addr: addr, signer: signer, run: strconv.FormatInt(time.Now().UnixNano(), 36)}

	// The owner signs up; the members are inserted directly.
	cc, err := dialCore(addr)
	if err != nil {
		return err
	}
	defer cc.c.Close()
	signup := func(tag string) []byte {
		return []byte(fmt.Sprintf(`{"email":"owner-%s@example.com","password":"correct horse battery staple","tenant_name":"RSS %s","display_name":"Owner"}`, tag, tag))
	}
	st, err := cc.do(cl.request("POST", "/api/v1/auth/signup", identity.Identity{}, randomIP(), "application/json", signup(randHex(6))))
	if err != nil || st/100 != 2 {
		return fmt.Errorf("signup: status %d, %v: %s", st, err, truncate(cc.resp.Body(), 300))
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(cc.resp.Body(), &tok); err != nil {
		return fmt.Errorf("signup answer: %w", err)
	}
	claims, err := jwtClaims(tok.AccessToken)
	if err != nil {
		return err
	}
	owner := identity.Identity{Principal: identity.PrincipalUser, UserID: claims.Sub, TenantID: claims.Tid, SessionID: claims.Sid,
		Roles: []string{"owner"}, EmailVerified: true, AMR: []string{"pwd"}, AuthTime: time.Now().Unix(),
		Permissions: []string{"tenant:read", "tenant:write", "users:read", "users:write", "roles:read", "roles:write", "audit:read", "api-keys:write"}}
	h.logf("seeding %d members", o.members)
	pool, err := pgxpool.New(ctx, s.dbURL)
	if err != nil {
		return err
	}
	s.pool = pool
	members, err := seedMembers(ctx, pool, o.members, claims.Tid, randHex(4))
	if err != nil {
		return err
	}
	ready := vmKB(pid, "VmRSS")

	// Count what the relay publishes.
	nc, err := nats.Connect(h.nats.ClientURL())
	if err != nil {
		return err
	}
	defer nc.Close()
	var published atomic.Int64
	if _, err := nc.Subscribe("auth.>", func(*nats.Msg) { published.Add(1) }); err != nil {
		return err
	}

	// The held connections come first: they are open while everything
	// else runs.
	h.logf("opening %d keep-alive connections", o.conns)
	held := make([]*coreConn, 0, o.conns)
	defer func() {
		for _, c := range held {
			c.c.Close()
		}
	}()
	for i := 0; i < o.conns && ctx.Err() == nil; i++ {
		c, err := dialCore(addr)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		held = append(held, c)
		if st, err := c.do(cl.request("GET", "/api/v1/users/me", owner, randomIP(), "", nil)); err != nil || st != 200 {
			return fmt.Errorf("connection %d: status %d, %v: %s", i, st, err, truncate(c.resp.Body(), 300))
		}
	}
	withConns := vmKB(pid, "VmRSS")

	var (
		signIns = newDriver("sign-ins (unknown account, wrong password)")
		lists   = newDriver("GET /users?limit=200")
		bodies  = newDriver(fmt.Sprintf("PATCH /users/me, %d-byte body", coreMaxBody))
		signups = newDriver("sign-ups")
		grants  = newDriver("role grants and revokes")
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	spawn := func(n int, d *driverStats, next func(w int) func(i int) []byte) {
		for w := range n {
			wg.Add(1)
			go func() { defer wg.Done(); d.loop(stop, addr, next(w), nil) }()
		}
	}
	spawn(o.signIns, signIns, func(int) func(int) []byte {
		return func(int) []byte {
			form := url.Values{"grant_type": {"password"}, "username": {"nobody-" + randHex(6) + "@example.com"}, "password": {"not the password " + randHex(4)}}
			return cl.request("POST", "/api/v1/auth/token", identity.Identity{}, randomIP(), "application/x-www-form-urlencoded", []byte(form.Encode()))
		}
	})
	// Each reader pages through the members, the cursor taken from the
	// answer, and starts again at the end.
	for range o.listLoops {
		cursor := ""
		next := func(int) []byte {
			pq := "/api/v1/users?limit=200"
			if cursor != "" {
				pq += "&cursor=" + url.QueryEscape(cursor)
			}
			return cl.request("GET", pq, owner, "192.0.2.1", "", nil)
		}
		seen := func(st int, b []byte) {
			var page struct {
				Next *string `json:"next_cursor"`
			}
			cursor = ""
			if st == 200 && json.Unmarshal(b, &page) == nil && page.Next != nil {
				cursor = *page.Next
			}
		}
		wg.Add(1)
		go func() { defer wg.Done(); lists.loop(stop, addr, next, seen) }()
	}
	body := []byte(`{"display_name":"Owner"}`)
	body = append(body, strings.Repeat(" ", coreMaxBody-len(body))...)
	spawn(o.bodyLoops, bodies, func(int) func(int) []byte {
		return func(int) []byte {
			return cl.request("PATCH", "/api/v1/users/me", owner, "192.0.2.1", "application/json", body)
		}
	})
	spawn(o.writeLoops, signups, func(int) func(int) []byte {
		return func(int) []byte {
			return cl.request("POST", "/api/v1/auth/signup", identity.Identity{}, randomIP(), "application/json", signup(randHex(6)))
		}
	})
	spawn(o.writeLoops, grants, func(w int) func(int) []byte {
		return func(i int) []byte {
			m := members[(w+i/2*o.writeLoops)%len(members)]
			method := "PUT"
			if i%2 == 1 {
				method = "DELETE"
			}
			return cl.request(method, "/api/v1/users/"+m+"/roles/admin", owner, "192.0.2.1", "", nil)
		}
	})

	h.logf("loading coreapi for %s", o.duration)
	var peakRSS int64
	tick := time.NewTicker(500 * time.Millisecond)
	deadline := time.After(o.duration)
	start := time.Now()
sample:
	for {
		select {
		case <-ctx.Done():
			break sample
		case <-deadline:
			break sample
		case <-tick.C:
			peakRSS = max(peakRSS, vmKB(pid, "VmRSS"))
		}
	}
	tick.Stop()
	hwm := vmKB(pid, "VmHWM")
	m := scrape("http://" + admin + "/metrics")
	close(stop)
	h.logf("stopping the drivers (waiting for the sign-ins in flight)")
	wg.Wait()
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if vmKB(pid, "VmRSS") < 0 {
		return fmt.Errorf("coreapi exited during the load (logs in %s)", h.work)
	}

	mib := func(kb int64) float64 { return float64(kb) / 1024 }
	fmt.Fprintf(out, "coreapi under its worst memory cases at once for %s (GOMEMLIMIT=%s, GOMAXPROCS=%d, MAX_BODY_BYTES=%d, %d members)\n",
		elapsed.Round(time.Second), o.memLimit, o.maxProcs, coreMaxBody, o.members)
	fmt.Fprintf(out, "| state | RSS |\n|---|---|\n")
	fmt.Fprintf(out, "| ready, members seeded | %.0f MiB |\n", mib(ready))
	fmt.Fprintf(out, "| + %d idle keep-alive connections | %.0f MiB |\n", len(held), mib(withConns))
	fmt.Fprintf(out, "| under load, highest sample (VmRSS) | %.0f MiB |\n", mib(peakRSS))
	fmt.Fprintf(out, "| **peak (VmHWM)** | **%.0f MiB** |\n", mib(hwm))
	fmt.Fprintf(out, "connections: %d held + %d sign-ins + %d list readers + %d uploaders + %d sign-up and %d role writers\n",
		len(held), o.signIns, o.listLoops, o.bodyLoops, o.writeLoops, o.writeLoops)
	for _, d := range []*driverStats{signIns, lists, bodies, signups, grants} {
		fmt.Fprintln(out, d)
	}
	fmt.Fprintf(out, "mails taken by the SMTP sink: %d; events the relay published: %d\n", sink.mails.Load(), published.Load())
	fmt.Fprintf(out, "Go heap in use at the end of the load: %.0f MiB, goroutines %.0f\n", m["go_memstats_heap_inuse_bytes"]/(1<<20), m["go_goroutines"])
	return nil
}
