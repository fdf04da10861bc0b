package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	child "github.com/tollgate-auth/tollgate/deploy/internal/proc"

	"github.com/gofiber/fiber/v2"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/valyala/fasthttp"

	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/fasttransport"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// benchBody is what the upstream answers on every application route: a
// small JSON document, like a typical API read.
var benchBody = []byte(`{"id":"0b4f1f8e-1111-4c2a-9a53-7a1f7e0c0001","email":"user@example.com","display_name":"Bench User","roles":["member"]}`)

// serveUpstream runs the fasthttp upstream used by the direct, bare-proxy
// and authproxy rows. It also stands in for coreapi towards authproxy: it
// serves the JWKS of the harness's signing key and projections for every
// seeded user (checking the proxy's v2 core-key signature, as coreapi does).
func serveUpstream(ctx context.Context, addr, jwksFile, hmacKey string) error {
	jwksDoc, err := os.ReadFile(jwksFile)
	if err != nil {
		return fmt.Errorf("read jwks: %w", err)
	}
	key, err := identity.ParseKey(hmacKey)
	if err != nil {
		return err
	}
	// The proxy signs its projection calls with its first core key, here
	// IDENTITY_HMAC_KEY, which is the key "core": v2 (v1 from a proxy of
	// the previous release).
	verifier, err := identity.NewVerifier([]identity.Key{{ID: "core", Secret: key}}, 0)
	if err != nil {
		return err
	}
	v1, err := identity.NewSigner(key, 0)
	if err != nil {
		return err
	}
	projPrefix := []byte(identity.ProjectionPath + "/")
	handler := func(c *fasthttp.RequestCtx) {
		path := c.Path()
		switch {
		case bytes.Equal(path, []byte("/.well-known/jwks.json")):
			c.SetContentType("application/json")
			c.SetBody(jwksDoc)
		case bytes.HasPrefix(path, projPrefix):
			if !serviceSigned(c, verifier, v1) {
				c.Error("bad signature", fasthttp.StatusUnauthorized)
				return
			}
			uid := string(path[len(projPrefix):])
			tid := string(c.QueryArgs().Peek("tenant_id"))
			p := identity.Projection{
				UserID: uid, TenantID: tid, Email: "u@example.com",
				UserStatus: identity.StatusActive, MembershipStatus: identity.StatusActive, TenantStatus: identity.StatusActive,
				Roles: []string{"member"}, Permissions: []string{"tenant:read", "notes:read"},
			}
			b, _ := json.Marshal(p)
			c.SetContentType("application/json")
			c.SetBody(b)
		case bytes.Equal(path, []byte(apikey.ResolvePath)), bytes.Equal(path, []byte(apikey.UsedPath)):
			if !serviceSigned(c, verifier, v1) {
				c.Error("bad signature", fasthttp.StatusUnauthorized)
				return
			}
			if bytes.Equal(path, []byte(apikey.UsedPath)) {
				c.SetStatusCode(fasthttp.StatusNoContent)
				return
			}
			b, status := resolveAnyKey(c.Request.Body())
			c.SetStatusCode(status)
			c.SetContentType("application/json")
			c.SetBody(b)
		default:
			c.SetContentType("application/json")
			c.SetBody(benchBody)
		}
	}
	srv := &fasthttp.Server{Handler: handler, Name: "upstream", IdleTimeout: 120 * time.Second, Concurrency: 1 << 20}
	return serveUntil(ctx, srv, addr)
}

// serviceSigned reports whether a projection request carries the proxy's
// service signature: the anonymous, empty identity under a core key, as
// coreapi requires.
func serviceSigned(c *fasthttp.RequestCtx, verifier *identity.Verifier, v1 *identity.Signer) bool {
	get := func(name string) string { return string(c.Request.Header.Peek(name)) }
	sig := get(identity.HeaderSignature)
	if strings.HasPrefix(sig, identity.Version+"=") {
		return v1.Verify(time.Now(), get(identity.HeaderTimestamp), sig, string(c.Method()), string(c.RequestURI()), identity.Identity{}) == nil
	}
	body := identity.EmptyBodySHA256
	if b := c.Request.Body(); len(b) > 0 {
		body = sha256.Sum256(b)
	}
	id, err := verifier.Verify(time.Now(), get, string(c.Method()), string(c.RequestURI()), body)
	return err == nil && id.Principal == identity.PrincipalAnonymous && id.UserID == "" && id.TenantID == ""
}

// serveBareProxy is the baseline: a Fiber app forwarding every request
// over a fasthttp HostClient, doing nothing else, configured exactly like
// authproxy with its defaults (server limits, timeouts and read buffer;
// client connection limits, timeouts, verbatim paths, streamed responses
// and the same transport), so that the difference between the two is the
// auth work.
func serveBareProxy(ctx context.Context, addr, upstream string) error {
	hc := &fasthttp.HostClient{
		Addr:                     upstream,
		NoDefaultUserAgentHeader: true,
		MaxConns:                 1024,             // UPSTREAM_MAX_CONNS
		MaxConnWaitTimeout:       2 * time.Second,  // UPSTREAM_MAX_CONN_WAIT
		MaxIdleConnDuration:      5 * time.Second,  // UPSTREAM_IDLE_TIMEOUT
		ReadTimeout:              30 * time.Second, // UPSTREAM_TIMEOUT
		WriteTimeout:             30 * time.Second,
		DisablePathNormalizing:   true,
		StreamResponseBody:       true,
		ReadBufferSize:           16 << 10, // forward.ResponseHeaderBytes
		SecureErrorLogMessage:    true,
		// authproxy's forwarded requests are never retried by fasthttp.
		RetryIfErr: func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
	}
	hc.Transport = fasttransport.New(hc, nil) // as authproxy's forward.NewHostClient
	app := fiber.New(fiber.Config{
		DisableStartupMessage:        true,
		BodyLimit:                    1 << 20, // MAX_BODY_BYTES
		ReadTimeout:                  30 * time.Second,
		WriteTimeout:                 30 * time.Second,
		IdleTimeout:                  60 * time.Second,
		ReadBufferSize:               16 << 10,
		Network:                      fiber.NetworkTCP,
		DisablePreParseMultipartForm: true,
		StreamRequestBody:            true,
	})
	app.Server().SecureErrorLogMessage = true
	app.All("/*", func(c *fiber.Ctx) error {
		req := c.Request()
		req.Header.Del(fiber.HeaderConnection)
		req.SetHost(upstream)
		if err := hc.Do(req, c.Response()); err != nil {
			return fiber.NewError(fiber.StatusBadGateway, err.Error())
		}
		c.Response().Header.Del(fiber.HeaderConnection)
		return nil
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); _ = app.Shutdown() }()
	return app.Listener(ln)
}

func serveUntil(ctx context.Context, srv *fasthttp.Server, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); _ = srv.Shutdown() }()
	return srv.Serve(ln)
}

// proc is a child process of the harness (a target server), its output in
// logDir/name.log.
type proc struct {
	*child.Child
	logPath string
}

func startProc(name, logDir string, env []string, bin string, args ...string) (*proc, error) {
	logPath := logDir + "/" + name + ".log"
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = lf
	cmd.Stderr = lf
	c, err := child.Start(name, cmd, func() { lf.Close() })
	if err != nil {
		return nil, err
	}
	return &proc{c, logPath}, nil
}

func (p *proc) pid() int { return p.Pid() }

func (p *proc) stop() {
	if p == nil {
		return
	}
	_ = p.Stop(os.Interrupt, 10*time.Second)
}

// rssKB reads a process's resident set size from /proc.
func rssKB(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return -1
}

// waitHTTP polls url until it answers 200 or the deadline passes.
func waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	return child.WaitReady(ctx, url, timeout, nil)
}

// freeAddr returns a free loopback address.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err) // loopback listen failing means nothing here can work
	}
	defer ln.Close()
	return ln.Addr().String()
}

// jwksOf renders the public JWKS of a private jwk.Key.
func jwksOf(priv jwk.Key) ([]byte, error) {
	pub, err := priv.PublicKey()
	if err != nil {
		return nil, err
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, err
	}
	return json.Marshal(set)
}

// keyTenant is the tenant of every API key the stand-in resolves.
const keyTenant = "0b4f1f8e-2222-4c2a-9a53-7a1f7e0c0002"

// resolveAnyKey stands in for coreapi's key resolution: every well-formed
// key is valid (checking the secret is coreapi's work, done once per key
// and not what the warm row measures), acting as a user named after its
// public id in keyTenant.
func resolveAnyKey(body []byte) ([]byte, int) {
	var req apikey.ResolveRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, fasthttp.StatusBadRequest
	}
	pid, ok := apikey.Parse([]byte(req.Key))
	if !ok {
		return []byte(`{"status":404,"code":"api_key_unknown"}`), fasthttp.StatusNotFound
	}
	p := apikey.Projection{KeyID: "0b4f1f8e-3333-4c2a-9a53-7a1f7e0c0003", PublicID: string(pid), Kind: "tenant",
		Projection: identity.Projection{UserID: string(pid), TenantID: keyTenant, Email: "k@example.com",
			UserStatus: "active", MembershipStatus: "active", TenantStatus: "active",
			Roles: []string{}, Permissions: []string{"tenant:read", "notes:read"}}}
	b, _ := json.Marshal(p)
	return b, fasthttp.StatusOK
}
