package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/metricslint"
)

// TestSignInWiring runs the real serve command with an in-process NATS:
// signup and sign-in over HTTP, the JWKS, and a global logout whose outbox
// row reaches NATS through the relay.
func TestSignInWiring(t *testing.T) {
	db := dbtest.New(t)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	events := make(chan *nats.Msg, 16)
	if _, err := nc.ChanSubscribe(invalidation.SubjectWildcard, events); err != nil {
		t.Fatal(err)
	}

	keysDir := t.TempDir()
	var out testkit.LogBuffer
	if err := run(context.Background(), []string{"keys", "generate", "-dir", keysDir, "-alg", "ES256"}, envOf(nil), &out); err != nil {
		t.Fatalf("keys generate: %v", err)
	}
	env := map[string]string{
		"DATABASE_URL":        db.URL,
		"IDENTITY_HMAC_KEY":   testKey,
		"SIGNING_KEYS_DIR":    keysDir,
		"SIGNING_ALG":         "ES256",
		"NATS_URL":            ns.ClientURL(),
		"COREAPI_LISTEN_ADDR": "127.0.0.1:0",
		"COREAPI_ADMIN_ADDR":  "127.0.0.1:0",
		"SHUTDOWN_TIMEOUT":    "5s",
		// Checked below: the second invitation of the hour is refused.
		"TENANT_MAILS_PER_HOUR": "1",
		// Read below: the sign-up's verification mail.
		"MAIL_TO_LOG": "true",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve"}, envOf(env), &out) }()
	addr := waitListening(t, &out, done)
	base := "http://" + addr

	post := func(path, body string, hdr http.Header) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	code, body := post("/api/v1/auth/signup", `{"email":"w@example.com","password":"a long password","tenant_name":"W"}`, nil)
	if code != http.StatusCreated {
		t.Fatalf("signup: %d %s", code, body)
	}
	var su struct {
		AccessToken string `json:"access_token"`
		TenantID    string `json:"tenant_id"`
		User        struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	_ = json.Unmarshal(body, &su)
	if code, body := post("/api/v1/auth/token", `{"grant_type":"password","email":"w@example.com","password":"a long password"}`, nil); code != http.StatusOK {
		t.Fatalf("password grant: %d %s", code, body)
	}
	resp, err := http.Get(base + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(jwks, []byte(`"ES256"`)) {
		t.Errorf("jwks: %d %s", resp.StatusCode, jwks)
	}

	key, err := identity.ParseKey(testKey)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := identity.NewSigner(key, identity.DefaultWindow)
	if err != nil {
		t.Fatal(err)
	}
	id := identity.Identity{UserID: su.User.ID, TenantID: su.TenantID}
	signed := func(path string) http.Header {
		ts := time.Now().UnixMilli()
		hdr := http.Header{}
		hdr.Set(identity.HeaderUserID, id.UserID)
		hdr.Set(identity.HeaderTenantID, id.TenantID)
		hdr.Set(identity.HeaderTimestamp, strconv.FormatInt(ts, 10))
		hdr.Set(identity.HeaderSignature, signer.Sign(ts, http.MethodPost, path, id))
		return hdr
	}
	// TENANT_MAILS_PER_HOUR reaches the invitations: one mail this hour.
	v2, err := identity.NewKeySigner(identity.Key{ID: "core", Secret: key})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{http.StatusCreated, http.StatusTooManyRequests} {
		body := `{"email":"invitee` + strconv.Itoa(i) + `@example.com"}`
		owner := identity.Identity{Principal: identity.PrincipalUser, UserID: id.UserID, TenantID: id.TenantID,
			Roles: []string{"owner"}, Permissions: permissions.Builtin().Names()}
		r := identity.Request{Timestamp: time.Now().UnixMilli(), RequestID: "invite-" + strconv.Itoa(i), ClientIP: "127.0.0.1",
			Method: http.MethodPost, PathQuery: "/api/v1/invitations", BodySHA256: sha256.Sum256([]byte(body))}
		hdr := http.Header{}
		identity.EachHeader(v2.KeyID(), &owner, &r, func(name, v string) {
			if v != "" {
				hdr.Set(name, v)
			}
		})
		hdr.Set(identity.HeaderSignature, v2.Sign(&owner, &r))
		if code, b := post("/api/v1/invitations", body, hdr); code != want {
			t.Fatalf("invitation %d: %d %s, want %d", i, code, b, want)
		}
	}
	path := "/api/v1/auth/logout?scope=global"
	hdr := signed(path)
	req, _ := http.NewRequest(http.MethodPost, base+path, nil)
	req.Header = hdr
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout global: %d", resp.StatusCode)
	}

	want := invalidation.UserSubject(su.User.ID)
	deadline := time.After(20 * time.Second)
	for got := false; !got; {
		select {
		case m := <-events:
			var ev invalidation.Event
			_ = json.Unmarshal(m.Data, &ev)
			got = m.Subject == want && ev.Reason == invalidation.ReasonUserLogoutGlobal
		case <-deadline:
			t.Fatalf("no user.logout_global event on %s", want)
		}
	}

	waitMetric(t, out.String(), "coreapi_outbox_published_total")
	// The sign-up's verification mail (to the log: MAIL_TO_LOG=true).
	metrics := waitMetric(t, out.String(), "coreapi_mail_sent_total")
	if !strings.Contains(metrics, "coreapi_nats_connected 1") {
		t.Errorf("metrics lack coreapi_nats_connected 1")
	}
	if !strings.Contains(metrics, "coreapi_signing_key_present 1") {
		t.Errorf("metrics lack coreapi_signing_key_present 1")
	}
	// The whole registry of `serve` (runtime, pool, relay, HTTP) passes
	// promlint and the naming conventions.
	metricslint.LintMetrics(t, metrics, "coreapi_")
	if doc, err := os.ReadFile("../../../docs/operations.md"); err != nil {
		t.Fatal(err)
	} else if missing, err := metricslint.Undocumented(metrics, string(doc), "coreapi_"); err != nil || len(missing) > 0 {
		t.Errorf("metrics not documented in docs/operations.md: %v %v", missing, err)
	}
	metricslint.CheckAlwaysZero(t, metrics, "coreapi_", "../..", apitest.MetricsAllowedZero)

	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("run after cancel = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

// waitListening reads the server's address from its "listening" log line.
func waitListening(t *testing.T, out *testkit.LogBuffer, done chan error) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		sc := bufio.NewScanner(strings.NewReader(out.String()))
		for sc.Scan() {
			var l struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "listening" {
				return l.Addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no listening line in the log:\n%s", out.String())
		}
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\n%s", err, out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitMetric polls the admin /metrics until name has a non-zero value and
// returns the page.
func waitMetric(t *testing.T, log, name string) string {
	t.Helper()
	var admin string
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		var l struct {
			Msg       string `json:"msg"`
			AdminAddr string `json:"admin_addr"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "listening" {
			admin = l.AdminAddr
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok && v != "0" {
				return string(b)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s stays 0:\n%s", name, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
