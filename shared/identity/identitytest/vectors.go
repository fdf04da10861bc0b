// Package identitytest runs the identity-header test vectors
// (shared/identity/testdata/v2_vectors.json, docs/identity-headers.md
// "Test vectors") through a verifier mounted as an app mounts it, for the
// tests of the middlewares in shared/identity.
package identitytest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
)

// Vector is an entry of the vectors file, as every verifier's test reads
// (and the Node example's writes) it; shared/identity's own test, which
// generates the file, has its own copy of the type (an in-package test
// cannot import this package) and documents each field.
type Vector struct {
	Name      string            `json:"name"`
	KeyID     string            `json:"key_id"`
	KeySecret string            `json:"key_secret_base64"`
	Method    string            `json:"method"`
	PathQuery string            `json:"path_query"`
	Body      string            `json:"body"`
	Headers   map[string]string `json:"headers"`
	NowMs     int64             `json:"now_ms"`
	Canonical string            `json:"canonical"`
	Signature string            `json:"signature"`
	Valid     bool              `json:"valid"`
	Error     string            `json:"error,omitempty"`
}

// Request is the vector's request as a server receives it: its method,
// target, headers, signature and body.
func (v Vector) Request() *http.Request {
	var body io.Reader
	if v.Body != "" {
		body = strings.NewReader(v.Body)
	}
	r := httptest.NewRequest(v.Method, v.PathQuery, body)
	for name, value := range v.Headers {
		r.Header.Set(name, value)
	}
	r.Header.Set(identity.HeaderSignature, v.Signature)
	return r
}

// Load reads the vectors file.
func Load(t testing.TB) []Vector {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(here), "..", "testdata", "v2_vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vs []Vector
	if err := json.Unmarshal(b, &vs); err != nil || len(vs) == 0 {
		t.Fatalf("no vectors: %v", err)
	}
	return vs
}

// Run passes every vector, in order, through one verify.Verifier holding
// the vectors' key, its clock at each case's time, mounted by mount as an
// app mounts it; send delivers a request to it and answers the HTTP
// status. Each case must get its verdict (200, or 401 with the reason the
// verifier logs); each valid one with its body changed is refused
// (signature), and sent again as it was, is a replay.
func Run(t *testing.T, mount func(v *verify.Verifier) (send func(r *http.Request) int)) {
	t.Helper()
	vs := Load(t)
	secret, err := base64.StdEncoding.DecodeString(vs[0].KeySecret)
	if err != nil {
		t.Fatal(err)
	}
	var now time.Time
	var logged bytes.Buffer
	v, err := verify.New(verify.Config{Keys: []identity.Key{{ID: vs[0].KeyID, Secret: secret}}, Now: func() time.Time { return now },
		Logger: slog.New(slog.NewJSONHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	send := mount(v)
	// judge answers "valid" or the reason the verifier logged.
	judge := func(vec Vector) string {
		logged.Reset()
		code := send(vec.Request())
		if code == http.StatusOK {
			return "valid"
		}
		var line struct{ Reason string }
		if err := json.Unmarshal(logged.Bytes(), &line); err != nil || code != http.StatusUnauthorized {
			t.Fatalf("%s: %d, log %q", vec.Name, code, logged.String())
		}
		return line.Reason
	}
	for _, vec := range vs {
		if vec.KeyID != vs[0].KeyID || vec.KeySecret != vs[0].KeySecret {
			t.Fatalf("%s: another key than the first case's", vec.Name)
		}
		now = time.UnixMilli(vec.NowMs)
		want := vec.Error
		if vec.Valid {
			want = "valid"
		}
		if got := judge(vec); got != want {
			t.Errorf("%s: %s, want %s", vec.Name, got, want)
		}
		if vec.Valid {
			// The body is field 17: another one is another request,
			// which the signature does not cover (and which, refused,
			// is not remembered: the vector is still a replay next).
			changed := vec
			changed.Body += " "
			if got := judge(changed); got != "signature" {
				t.Errorf("%s, body changed: %s, want signature", vec.Name, got)
			}
			if got := judge(vec); got != "replay" {
				t.Errorf("%s, sent again: %s, want replay", vec.Name, got)
			}
		}
	}
}
