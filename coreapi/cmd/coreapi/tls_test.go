package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/testca"
)

// With COREAPI_TLS_CERT_FILE and COREAPI_TLS_KEY_FILE the API listener
// serves TLS only, with that certificate (a client that trusts its CA
// gets through, one that does not and a plain-HTTP one do not); the admin
// listener stays plain HTTP.
func TestServeTLS(t *testing.T) {
	ca := testca.New(t, "coreapi test CA")
	leaf := ca.Issue(t, "127.0.0.1", "coreapi-internal")
	certFile, keyFile := leaf.Write(t, t.TempDir())
	var out testkit.LogBuffer
	env := serveEnv(t, dbtest.New(t).URL)
	env["COREAPI_TLS_CERT_FILE"], env["COREAPI_TLS_KEY_FILE"] = certFile, keyFile
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve"}, envOf(env), &out) }()
	addr := waitListening(t, &out, done)
	var admin string
	for _, line := range strings.Split(out.String(), "\n") {
		var l struct {
			Msg       string `json:"msg"`
			AdminAddr string `json:"admin_addr"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "listening" {
			admin = l.AdminAddr
		}
	}

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)
	trusting := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := trusting.Get("https://" + addr + "/openapi.json")
	if err != nil {
		t.Fatalf("https with the CA trusted: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"openapi"`) {
		t.Fatalf("openapi.json over TLS = %d", resp.StatusCode)
	}
	if got := resp.TLS.PeerCertificates[0].SerialNumber; got.Cmp(leaf.Cert.SerialNumber) != 0 || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("presented serial %s version %x, want %s, TLS 1.2 at least", got, resp.TLS.Version, leaf.Cert.SerialNumber)
	}

	// A client that trusts only the system's roots refuses the certificate.
	_, err = (&http.Client{Timeout: 10 * time.Second}).Get("https://" + addr + "/openapi.json")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("https without the CA: %v, want an unknown-authority error", err)
	}
	// Plain HTTP gets no answer from the API port.
	if resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/openapi.json"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), `"openapi"`) {
			t.Fatal("the TLS listener answered plain HTTP")
		}
	}
	// The admin listener is plain HTTP.
	resp, err = http.Get("http://" + admin + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("admin healthz over http: %v", err)
	}
	resp.Body.Close()
	// Its metrics say when the certificate served expires.
	resp, err = http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("admin metrics: %v", err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		fmt.Sprintf("coreapi_tls_cert_expiry_timestamp_seconds %g", float64(leaf.Cert.NotAfter.Unix())),
		"coreapi_tls_cert_reload_failures_total 0",
	} {
		if !strings.Contains(string(metrics), want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, grepLines(string(metrics), "coreapi_tls_"))
		}
	}
	if !strings.Contains(out.String(), `"msg":"serving TLS"`) || !strings.Contains(out.String(), `"tls":true`) {
		t.Errorf("the start log does not say TLS is served:\n%s", out.String())
	}
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

// A client that does not trust the certificate, and one that sends plain
// HTTP to the TLS port, fail the TLS handshake before any request is read:
// coreapi writes no access line and no "request failed" error for them,
// counts no request (they were an "unmatched" 500 each), and instead
// counts them in coreapi_tls_handshake_failures_total with a warning
// naming the peer and the handshake's error.
func TestServeTLSHandshakeFailures(t *testing.T) {
	ca := testca.New(t, "coreapi test CA")
	leaf := ca.Issue(t, "127.0.0.1", "coreapi-internal")
	certFile, keyFile := leaf.Write(t, t.TempDir())
	var out testkit.LogBuffer
	env := serveEnv(t, dbtest.New(t).URL)
	env["COREAPI_TLS_CERT_FILE"], env["COREAPI_TLS_KEY_FILE"] = certFile, keyFile
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve"}, envOf(env), &out) }()
	addr := waitListening(t, &out, done)

	// A client that trusts another CA refuses the certificate (and tells
	// the server with an alert).
	other := x509.NewCertPool()
	other.AppendCertsFromPEM(testca.New(t, "another CA").PEM)
	if _, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: other, ServerName: "127.0.0.1"}); err == nil {
		t.Fatal("a client trusting another CA completed the handshake")
	}
	// Plain HTTP to the TLS port.
	plainHTTP := func() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, "GET /openapi.json HTTP/1.1\r\nHost: coreapi\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.ReadAll(c)
		c.Close()
	}
	plainHTTP()
	// waitCount returns the metrics page once the counter reads n.
	waitCount := func(n int) string {
		want := fmt.Sprintf("coreapi_tls_handshake_failures_total %d\n", n)
		metrics := waitMetric(t, out.String(), "coreapi_tls_handshake_failures_total")
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(metrics, want) && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
			metrics = waitMetric(t, out.String(), "coreapi_tls_handshake_failures_total")
		}
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q:\n%s", want, grepLines(metrics, "coreapi_tls_"))
		}
		return metrics
	}

	metrics := waitCount(2)
	if got := grepLines(metrics, `route="unmatched"`); got != "" {
		t.Errorf("the failed handshakes were counted as requests:\n%s", got)
	}
	var warned []string
	for _, line := range strings.Split(out.String(), "\n") {
		var l struct {
			Level, Msg, Peer, Err, Route string
		}
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		if l.Msg == "request failed" || l.Route == "unmatched" {
			t.Errorf("a failed handshake logged as a request: %s", line)
		}
		if l.Msg == "TLS handshake failed" {
			if l.Level != "WARN" || !strings.HasPrefix(l.Peer, "127.0.0.1:") || !strings.Contains(l.Err, "tls: ") {
				t.Errorf("handshake line without its level, peer or error: %s", line)
			}
			warned = append(warned, l.Err)
		}
	}
	if len(warned) != 2 || !strings.Contains(strings.Join(warned, "\n"), "first record does not look like a TLS handshake") {
		t.Errorf("handshake warnings = %q, want two, one for plain HTTP", warned)
	}

	// A client retrying as fast as it can gets at most
	// HandshakeLogsPerSecond warnings a second; the others are counted in
	// "TLS handshake failures not logged" lines, the last at the stop.
	const burst = 40
	for range burst {
		plainHTTP()
	}
	waitCount(2 + burst)
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("run after cancel = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	var lines, dropped int64
	for _, line := range strings.Split(out.String(), "\n") {
		var l struct {
			Msg   string
			Count int64
		}
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		switch l.Msg {
		case "TLS handshake failed":
			lines++
		case "TLS handshake failures not logged":
			dropped += l.Count
		}
	}
	if dropped == 0 || lines+dropped != 2+burst {
		t.Errorf("%d handshake warnings and %d counted as not logged, want some not logged and %d in all", lines, dropped, 2+burst)
	}
}

// One of the two TLS files without the other, or a pair that does not
// load, stops the start with a message naming the missing or bad one;
// nothing listens.
func TestServeTLSRefusesHalfAPair(t *testing.T) {
	ca := testca.New(t, "coreapi test CA")
	dir := t.TempDir()
	certFile, keyFile := ca.Issue(t, "127.0.0.1").Write(t, dir)
	other := filepath.Join(dir, "other.key")
	if err := os.WriteFile(other, ca.Issue(t, "127.0.0.1").KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name        string
		cert, key   string
		want, want2 string
	}{
		{"certificate only", certFile, "", "COREAPI_TLS_CERT_FILE: set without COREAPI_TLS_KEY_FILE", ""},
		{"key only", "", keyFile, "COREAPI_TLS_KEY_FILE: set without COREAPI_TLS_CERT_FILE", ""},
		{"a key of another certificate", certFile, other, "COREAPI_TLS_CERT_FILE", "private key does not match"},
		{"a missing key file", certFile, filepath.Join(dir, "none.key"), "COREAPI_TLS_CERT_FILE", "none.key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := serveEnv(t, "postgres://nobody@127.0.0.1:1/none")
			env["COREAPI_TLS_CERT_FILE"], env["COREAPI_TLS_KEY_FILE"] = tc.cert, tc.key
			var out testkit.LogBuffer
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := run(ctx, []string{"serve"}, envOf(env), &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.want2) {
				t.Fatalf("serve = %v, want an error containing %q and %q", err, tc.want, tc.want2)
			}
			if strings.Contains(out.String(), `"msg":"listening"`) {
				t.Error("serve listened before refusing")
			}
		})
	}
}

// grepLines is the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
