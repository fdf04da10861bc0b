package verify_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
)

// vector is an entry of shared/identity/testdata/v2_vectors.json (see
// docs/identity-headers.md, "Test vectors").
type vector struct {
	Name      string            `json:"name"`
	KeyID     string            `json:"key_id"`
	KeySecret string            `json:"key_secret_base64"`
	Method    string            `json:"method"`
	PathQuery string            `json:"path_query"`
	Body      string            `json:"body"`
	Headers   map[string]string `json:"headers"`
	NowMs     int64             `json:"now_ms"`
	Signature string            `json:"signature"`
	Valid     bool              `json:"valid"`
	Error     string            `json:"error"`
}

// TestMiddlewareVectors runs the test vectors through the middleware as
// requests, in order and through one Verifier, as the page says a verifier
// passes them: every case gets its verdict and the reason it logs, and each
// valid one sent again is a replay.
func TestMiddlewareVectors(t *testing.T) {
	b, err := os.ReadFile("../testdata/v2_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil || len(vs) == 0 {
		t.Fatalf("no vectors: %v", err)
	}
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
	h := v.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	// judge answers "valid" or the reason the middleware logged.
	judge := func(v vector) string {
		var body io.Reader
		if v.Body != "" {
			body = strings.NewReader(v.Body)
		}
		r := httptest.NewRequest(v.Method, v.PathQuery, body)
		for name, value := range v.Headers {
			r.Header.Set(name, value)
		}
		r.Header.Set(identity.HeaderSignature, v.Signature)
		logged.Reset()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code == http.StatusOK {
			return "valid"
		}
		var line struct{ Reason string }
		if err := json.Unmarshal(logged.Bytes(), &line); err != nil || rec.Code != http.StatusUnauthorized {
			t.Fatalf("%s: %d %s, log %q", v.Name, rec.Code, rec.Body, logged.String())
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
			if got := judge(vec); got != "replay" {
				t.Errorf("%s, sent again: %s, want replay", vec.Name, got)
			}
		}
	}
}
