package app

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// tlsRules routes to the app upstream, which serves https here.
const tlsRules = notesRules + "  - {prefix: /app, methods: [GET], upstream: notes, access: public, stream_timeout: 5s}\n"

// An https:// app upstream is reached over TLS, its certificate verified
// against UPSTREAM_CA_FILE (besides the system's roots): requests, and
// streams, which dial on their own.
func TestHTTPSUpstream(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: tlsRules, tlsApp: true, prepare: func(e *env, vars map[string]string) {
		p := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(p, e.upCA, 0o600); err != nil {
			t.Fatal(err)
		}
		vars["UPSTREAM_CA_FILE"] = p
	}})
	if !strings.HasPrefix(e.up.URL(), "https://") {
		t.Fatalf("app URL %s", e.up.URL())
	}
	e.core.SetProjection(notesProjection())
	e.wantStatus(e.do("GET", "/notes/1", e.token(nil), nil), 200)
	e.wantSignedAt(e.up, testenv.AppKey.ID)
	e.wantStatus(e.do("GET", "/notes/public/1", "", nil), 200)
	e.wantAnonymousAt(e.up, testenv.AppKey.ID)

	resp, err := e.client.Get("http://" + e.addr + "/app/stream")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(body) != 2*testenv.StreamChunk {
		t.Fatalf("stream over TLS: %d, %d bytes, %v", resp.StatusCode, len(body), err)
	}
}

// An https:// upstream whose certificate the proxy does not trust is never
// sent a request: the handshake fails, and the client gets 503, as for an
// upstream that is down, counted as upstream errors labelled tls.
func TestHTTPSUpstreamUntrusted(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: tlsRules, tlsApp: true})
	e.core.SetProjection(notesProjection())
	for _, path := range []string{"/notes/public/1", "/app/stream"} {
		e.wantProblem(e.do("GET", path, "", nil), 503, problem.CodeUpstreamDown)
	}
	e.wantProblem(e.do("GET", "/notes/1", e.token(nil), nil), 503, problem.CodeUpstreamDown)
	if got := e.up.Received(); len(got) != 0 {
		t.Fatalf("the untrusted upstream received %d requests", len(got))
	}
	for kind, want := range map[string]float64{"forward": 2, "stream": 1} {
		if n := testutil.ToFloat64(e.app.Metrics.UpstreamErrors.WithLabelValues(kind, "tls")); n != want {
			t.Errorf("upstream errors (%s, tls) = %v, want %v", kind, n, want)
		}
	}
}
