package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/refused"
)

func verifyWith(t *testing.T, jwks []byte, token []byte) error {
	t.Helper()
	set, err := jwk.Parse(jwks)
	if err != nil {
		t.Fatalf("parse jwks: %v", err)
	}
	_, err = jws.Verify(token, jws.WithKeySet(set, jws.WithRequireKid(true)))
	return err
}

func TestGenerateLoadSign(t *testing.T) {
	for _, alg := range []string{AlgEdDSA, AlgES256, AlgRS256} {
		t.Run(alg, func(t *testing.T) {
			dir := t.TempDir()
			kid, err := Generate(dir, alg, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			if !regexp.MustCompile(`^20260102T030405Z-[0-9a-f]{8}$`).MatchString(kid) {
				t.Errorf("kid = %q, want <yyyymmddThhmmssZ>-<8 hex>", kid)
			}
			fi, err := os.Stat(filepath.Join(dir, kid+".pem"))
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != 0o600 {
				t.Errorf("key file mode = %v, want 0600", got)
			}
			r, err := Load(dir, alg)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			tok, err := r.Sign([]byte(`{"sub":"u1"}`))
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			msg, err := jws.Parse(tok)
			if err != nil {
				t.Fatal(err)
			}
			h := msg.Signatures()[0].ProtectedHeaders()
			if h.KeyID() != kid || h.Type() != TokenType || string(h.Algorithm()) != alg {
				t.Errorf("header kid=%q typ=%q alg=%q, want %q %q %q", h.KeyID(), h.Type(), h.Algorithm(), kid, TokenType, alg)
			}
			if err := verifyWith(t, r.JWKS(), tok); err != nil {
				t.Errorf("token does not verify with the JWKS: %v", err)
			}
			assertPublicOnly(t, r.JWKS(), alg)
		})
	}
}

// assertPublicOnly fails if any key of the document carries a private
// member (RFC 7518 §6: d, p, q, dp, dq, qi, oth, k).
func assertPublicOnly(t *testing.T, doc []byte, alg string) {
	t.Helper()
	var v struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(doc, &v); err != nil {
		t.Fatalf("jwks is not JSON: %v", err)
	}
	if len(v.Keys) == 0 {
		t.Fatal("jwks has no keys")
	}
	for _, k := range v.Keys {
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"} {
			if _, ok := k[private]; ok {
				t.Errorf("jwks key %v carries private member %q", k["kid"], private)
			}
		}
		if k["use"] != "sig" || k["kid"] == nil || k["alg"] == nil {
			t.Errorf("jwks key = %v, want kid, alg and use=sig", k)
		}
	}
	if alg != "" && v.Keys[len(v.Keys)-1]["alg"] != alg {
		t.Errorf("alg = %v, want %s", v.Keys[len(v.Keys)-1]["alg"], alg)
	}
}

func TestRotation(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	oldKid, err := Generate(dir, AlgEdDSA, t0)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Load(dir, AlgEdDSA)
	if err != nil {
		t.Fatal(err)
	}
	oldTok, err := r.Sign([]byte(`{"sub":"old"}`))
	if err != nil {
		t.Fatal(err)
	}

	newKid, err := Generate(dir, AlgEdDSA, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := r.SigningKeyID(); got != newKid {
		t.Errorf("signing kid after adding a key = %q, want the newest %q", got, newKid)
	}
	if got := r.KeyIDs(); len(got) != 2 {
		t.Errorf("published kids = %v, want both", got)
	}
	if err := verifyWith(t, r.JWKS(), oldTok); err != nil {
		t.Errorf("token of the old key no longer verifies after a key was added: %v", err)
	}
	newTok, err := r.Sign([]byte(`{"sub":"new"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyWith(t, r.JWKS(), newTok); err != nil {
		t.Errorf("token of the new key: %v", err)
	}

	if err := os.Remove(filepath.Join(dir, oldKid+".pem")); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := verifyWith(t, r.JWKS(), oldTok); err == nil {
		t.Error("token of a removed key still verifies with the JWKS")
	}
	if err := verifyWith(t, r.JWKS(), newTok); err != nil {
		t.Errorf("token of the remaining key: %v", err)
	}
}

func TestSigningKeyFollowsAlg(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ed, _ := Generate(dir, AlgEdDSA, t0)
	if _, err := Generate(dir, AlgES256, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	r, err := Load(dir, AlgEdDSA)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.SigningKeyID(); got != ed {
		t.Errorf("signing kid = %q, want the EdDSA key %q", got, ed)
	}
	if got := len(r.KeyIDs()); got != 2 {
		t.Errorf("published %d keys, want 2", got)
	}
}

func TestLoadErrors(t *testing.T) {
	write := func(t *testing.T, name, body string) string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	tests := []struct {
		name string
		dir  func(t *testing.T) string
		alg  string
		want string
	}{
		{"empty dir", func(t *testing.T) string { return t.TempDir() }, AlgEdDSA, "no signing key"},
		{"missing dir", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, AlgEdDSA, "no signing key"},
		{"not pem", func(t *testing.T) string { return write(t, "k.pem", "hello") }, AlgEdDSA, "PKCS#8"},
		{"bad der", func(t *testing.T) string {
			return write(t, "k.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
		}, AlgEdDSA, "parse pkcs8"},
		{"bad kid", func(t *testing.T) string {
			dir := t.TempDir()
			kid, _ := Generate(dir, AlgEdDSA, time.Now())
			_ = os.Rename(filepath.Join(dir, kid+".pem"), filepath.Join(dir, "a b.pem"))
			return dir
		}, AlgEdDSA, "file name"},
		{"kid .", func(t *testing.T) string {
			dir := t.TempDir()
			kid, _ := Generate(dir, AlgEdDSA, time.Now())
			_ = os.Rename(filepath.Join(dir, kid+".pem"), filepath.Join(dir, "..pem"))
			return dir
		}, AlgEdDSA, "file name"},
		{"kid ..", func(t *testing.T) string {
			dir := t.TempDir()
			kid, _ := Generate(dir, AlgEdDSA, time.Now())
			_ = os.Rename(filepath.Join(dir, kid+".pem"), filepath.Join(dir, "...pem"))
			return dir
		}, AlgEdDSA, "file name"},
		{"bad alg", func(t *testing.T) string { return t.TempDir() }, "HS256", "unsupported"},
		// A valid key followed by more than the bound of a key file: a
		// file that large is not a key, whatever it holds.
		{"oversized", func(t *testing.T) string {
			dir := t.TempDir()
			kid, _ := Generate(dir, AlgEdDSA, time.Now())
			f, err := os.OpenFile(filepath.Join(dir, kid+".pem"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteString(strings.Repeat("\n", 64<<10)); err != nil {
				t.Fatal(err)
			}
			return dir
		}, AlgEdDSA, "more than 64 KiB: not a key file"},
		{"no key of alg", func(t *testing.T) string {
			dir := t.TempDir()
			_, _ = Generate(dir, AlgEdDSA, time.Now())
			return dir
		}, AlgES256, "no ES256 key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.dir(t), tt.alg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load error = %v, want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := Generate(t.TempDir(), "none", time.Now()); !errors.Is(err, ErrUnsupportedAlg) {
		t.Errorf("Generate(none) = %v, want ErrUnsupportedAlg", err)
	}
}

func TestReloadKeepsKeysOnError(t *testing.T) {
	dir := t.TempDir()
	kid, _ := Generate(dir, AlgEdDSA, time.Now())
	r, err := Load(dir, AlgEdDSA)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "zzz.pem"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err == nil {
		t.Fatal("Reload of a dir with a broken key succeeded")
	}
	if got := r.SigningKeyID(); got != kid {
		t.Errorf("signing kid after failed reload = %q, want %q", got, kid)
	}
}

// TestReloadDropsRemovedKeyWhateverElse: a key whose file is removed stops
// being published (and signing) at the next reload even when the reload
// has other problems: a broken file beside it, or no key of the signing
// algorithm left. Keeping the previous set then kept a leaked key trusted
// by every proxy for as long as the directory stayed so.
func TestReloadDropsRemovedKeyWhateverElse(t *testing.T) {
	t.Run("broken file added", func(t *testing.T) {
		dir := t.TempDir()
		kept, _ := Generate(dir, AlgEdDSA, time.Now().Add(-2*time.Hour))
		removed, _ := Generate(dir, AlgEdDSA, time.Now().Add(-time.Hour))
		r, err := Load(dir, AlgEdDSA)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "zzz.pem"), []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, removed+".pem")); err != nil {
			t.Fatal(err)
		}
		if err := r.Reload(); err == nil || !strings.Contains(err.Error(), "zzz.pem") {
			t.Errorf("Reload = %v, want the broken file reported", err)
		}
		if got := r.KeyIDs(); !slices.Equal(got, []string{kept}) {
			t.Errorf("published %v, want only %s", got, kept)
		}
		if strings.Contains(string(r.JWKS()), removed) || r.SigningKeyID() != kept {
			t.Errorf("removed key %s still published or signing (signing %s)", removed, r.SigningKeyID())
		}
	})
	t.Run("no key of the algorithm left", func(t *testing.T) {
		dir := t.TempDir()
		leaked, _ := Generate(dir, AlgEdDSA, time.Now().Add(-time.Hour))
		other, _ := Generate(dir, AlgES256, time.Now().Add(-time.Hour))
		r, err := Load(dir, AlgEdDSA)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, leaked+".pem")); err != nil {
			t.Fatal(err)
		}
		if err := r.Reload(); !errors.Is(err, ErrNoKeys) {
			t.Errorf("Reload = %v, want ErrNoKeys", err)
		}
		if got := r.KeyIDs(); !slices.Equal(got, []string{other}) || strings.Contains(string(r.JWKS()), leaked) {
			t.Errorf("published %v, want only %s", got, other)
		}
		if _, _, ok := r.PublicKey(leaked); ok {
			t.Error("removed key still verifies (introspection)")
		}
		if tok, err := r.Sign([]byte(`{}`)); !errors.Is(err, ErrNoKeys) {
			t.Errorf("Sign = %s, %v; want ErrNoKeys", tok, err)
		}
		if got := r.SigningKeyID(); got != "" {
			t.Errorf("signing kid = %q, want none", got)
		}
		kid, _ := Generate(dir, AlgEdDSA, time.Now().Add(-time.Hour))
		if err := r.Reload(); err != nil || r.SigningKeyID() != kid {
			t.Errorf("after adding %s: Reload = %v, signing %q", kid, err, r.SigningKeyID())
		}
	})
	t.Run("directory gone keeps the keys", func(t *testing.T) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "keys")
		kid, _ := Generate(dir, AlgEdDSA, time.Now().Add(-time.Hour))
		r, err := Load(dir, AlgEdDSA)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(dir, filepath.Join(parent, "elsewhere")); err != nil {
			t.Fatal(err)
		}
		if err := r.Reload(); err == nil {
			t.Error("Reload of a missing directory reported nothing")
		}
		if r.SigningKeyID() != kid || !slices.Equal(r.KeyIDs(), []string{kid}) {
			t.Errorf("keys after the directory went: %v signing %q, want %s kept", r.KeyIDs(), r.SigningKeyID(), kid)
		}
	})
	t.Run("key file broken in place keeps its key", func(t *testing.T) {
		dir := t.TempDir()
		kid, _ := Generate(dir, AlgEdDSA, time.Now().Add(-time.Hour))
		r, err := Load(dir, AlgEdDSA)
		if err != nil {
			t.Fatal(err)
		}
		before := string(r.JWKS())
		if err := os.WriteFile(filepath.Join(dir, kid+".pem"), []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := r.Reload(); err == nil {
			t.Error("Reload of a broken key file reported nothing")
		}
		if r.SigningKeyID() != kid || string(r.JWKS()) != before {
			t.Errorf("a key whose file broke in place was dropped (signing %q)", r.SigningKeyID())
		}
	})
}

// TestWatchAnnouncesRemovalDespiteProblems: the watch announces a removed
// key even when the reload that dropped it also reported a problem.
func TestWatchAnnouncesRemovalDespiteProblems(t *testing.T) {
	dir := t.TempDir()
	leaked, _ := Generate(dir, AlgEdDSA, time.Now().Add(-time.Hour))
	other, _ := Generate(dir, AlgES256, time.Now().Add(-time.Hour))
	r, err := Load(dir, AlgEdDSA)
	if err != nil {
		t.Fatal(err)
	}
	announced := make(chan []string, 16)
	watch(t, r, WatchOptions{Every: time.Hour, Changed: func(_ context.Context, kids []string) error {
		announced <- kids
		return nil
	}})
	if err := os.Remove(filepath.Join(dir, leaked+".pem")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-announced:
		if !slices.Equal(got, []string{other}) {
			t.Fatalf("announced %v, want [%s]", got, other)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("removal of the last EdDSA key not announced within 2s")
	}
}

// TestWatchAnnouncesAtStart: with AtStart the watch announces the keys it
// starts with, once, and a failed announcement is retried; without it,
// nothing is announced until a change.
func TestWatchAnnouncesAtStart(t *testing.T) {
	dir := t.TempDir()
	kid, _ := Generate(dir, AlgEdDSA, time.Now().Add(-time.Hour))
	r, err := Load(dir, AlgEdDSA)
	if err != nil {
		t.Fatal(err)
	}
	announced := make(chan []string, 16)
	failed := false
	watch(t, r, WatchOptions{Every: time.Hour, AtStart: true, RetryEvery: 10 * time.Millisecond, Changed: func(_ context.Context, kids []string) error {
		if !failed { // the database briefly unreachable
			failed = true
			return errors.New("unreachable")
		}
		announced <- kids
		return nil
	}})
	select {
	case got := <-announced:
		if !slices.Equal(got, []string{kid}) {
			t.Fatalf("announced %v, want [%s]", got, kid)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the keys at start were not announced within 2s")
	}
	select {
	case got := <-announced:
		t.Fatalf("announced again without a change: %v", got)
	case <-time.After(100 * time.Millisecond):
	}

	quiet := make(chan []string, 1)
	watch(t, r, WatchOptions{Every: time.Hour, Changed: func(_ context.Context, kids []string) error {
		quiet <- kids
		return nil
	}})
	select {
	case got := <-quiet:
		t.Fatalf("announced %v at start without AtStart", got)
	case <-time.After(100 * time.Millisecond):
	}
}

func BenchmarkSign(b *testing.B) {
	dir := b.TempDir()
	if _, err := Generate(dir, AlgEdDSA, time.Now()); err != nil {
		b.Fatal(err)
	}
	r, err := Load(dir, AlgEdDSA)
	if err != nil {
		b.Fatal(err)
	}
	payload := []byte(`{"iss":"http://localhost:8080","aud":"tollgate","sub":"0b0c6b8e-5e0a-4a57-9c36-0c0b7d4fb0a1","tid":"0b0c6b8e-5e0a-4a57-9c36-0c0b7d4fb0a2","sid":"0b0c6b8e-5e0a-4a57-9c36-0c0b7d4fb0a3","tv":0,"iat":1,"nbf":1,"exp":901,"jti":"x"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Sign(payload); err != nil {
			b.Fatal(err)
		}
	}
}

// watch runs r.Watch until the test ends, and returns its log once the
// directory watch is in place (Watch logs it), so that a change made after
// it is seen by the watch and not left to the poll.
func watch(t *testing.T, r *Ring, o WatchOptions) *testkit.LogBuffer {
	t.Helper()
	logs := &testkit.LogBuffer{}
	o.Log = slog.New(slog.NewJSONHandler(logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Watch(ctx, o); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually.Within(t, 5*time.Second, func() error {
		if !strings.Contains(logs.String(), "watching signing keys") {
			return fmt.Errorf("watch not started; log: %s", logs.String())
		}
		return nil
	})
	return logs
}

func TestWatchPicksUpNewKey(t *testing.T) {
	dir := t.TempDir()
	if _, err := Generate(dir, AlgEdDSA, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	r, err := Load(dir, AlgEdDSA)
	if err != nil {
		t.Fatal(err)
	}
	watch(t, r, WatchOptions{Every: 5 * time.Millisecond})
	newKid, err := Generate(dir, AlgEdDSA, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	eventually.Within(t, 10*time.Second, func() error {
		if got := r.SigningKeyID(); got != newKid {
			return fmt.Errorf("signing kid = %s, want %s", got, newKid)
		}
		return nil
	})
}

// TestWatchFileEvents: with the poll out of the way (1 h), an added and a
// removed key file are noticed within a second through the directory
// watch, and each change of the published ids is announced once.
func TestWatchFileEvents(t *testing.T) {
	dir := t.TempDir()
	oldKid, err := Generate(dir, AlgEdDSA, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Load(dir, AlgEdDSA)
	if err != nil {
		t.Fatal(err)
	}
	announced := make(chan []string, 16)
	watch(t, r, WatchOptions{Every: time.Hour, Changed: func(_ context.Context, kids []string) error {
		announced <- kids
		return nil
	}})
	newKid, err := Generate(dir, AlgEdDSA, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := func(kids ...string) {
		t.Helper()
		select {
		case got := <-announced:
			if strings.Join(got, ",") != strings.Join(kids, ",") {
				t.Fatalf("announced %v, want %v", got, kids)
			}
		case <-time.After(time.Second):
			t.Fatalf("no announcement of %v within 1s", kids)
		}
	}
	want(oldKid, newKid)
	if err := os.Remove(filepath.Join(dir, oldKid+".pem")); err != nil {
		t.Fatal(err)
	}
	want(newKid)
	if strings.Contains(string(r.JWKS()), oldKid) {
		t.Fatalf("JWKS still publishes %s", oldKid)
	}
	select {
	case got := <-announced:
		t.Fatalf("extra announcement %v", got)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestWatchAnnouncesKeyReplacedUnderSameKid: a key file replaced by
// another key under the same name (the same kid, new key material) changes
// the published set though not its ids: it is announced too, so that the
// proxies stop verifying with the old key and can verify the new one's
// tokens at once.
func TestWatchAnnouncesKeyReplacedUnderSameKid(t *testing.T) {
	dir := t.TempDir()
	kid, err := Generate(dir, AlgEdDSA, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Load(dir, AlgEdDSA)
	if err != nil {
		t.Fatal(err)
	}
	before := string(r.JWKS())
	announced := make(chan []string, 16)
	watch(t, r, WatchOptions{Every: time.Hour, Changed: func(_ context.Context, kids []string) error {
		announced <- kids
		return nil
	}})
	other := t.TempDir()
	otherKid, err := Generate(other, AlgEdDSA, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(other, otherKid+".pem"), filepath.Join(dir, kid+".pem")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-announced:
		if strings.Join(got, ",") != kid {
			t.Fatalf("announced %v, want [%s]", got, kid)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a key replaced under its kid was not announced")
	}
	if string(r.JWKS()) == before {
		t.Fatal("the JWKS still publishes the replaced key")
	}
}

// TestWatchRetriesAnnouncement: a failed announcement (database down) is
// retried until it succeeds; the change is not lost.
func TestWatchRetriesAnnouncement(t *testing.T) {
	dir := t.TempDir()
	if _, err := Generate(dir, AlgEdDSA, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	r, err := Load(dir, AlgEdDSA)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	watch(t, r, WatchOptions{Every: time.Hour, RetryEvery: 10 * time.Millisecond, Changed: func(context.Context, []string) error {
		if calls.Add(1) < 3 {
			return errors.New("database unavailable")
		}
		return nil
	}})
	if _, err := Generate(dir, AlgEdDSA, time.Now()); err != nil {
		t.Fatal(err)
	}
	eventually.Within(t, 5*time.Second, func() error {
		if n := calls.Load(); n < 3 {
			return fmt.Errorf("Changed called %d times, want 3 (two failures, then success)", n)
		}
		return nil
	})
	time.Sleep(50 * time.Millisecond) // several retry intervals: no further call
	if n := calls.Load(); n != 3 {
		t.Fatalf("Changed called %d times after succeeding, want 3", n)
	}
}

// TestWatchReloadSignal: a reload request (SIGHUP in coreapi) re-evaluates
// the keys at once, even when no file changed: here a key's activation
// time passed.
func TestWatchReloadSignal(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Now().UTC().Truncate(time.Second)
	oldKid, err := Generate(dir, AlgEdDSA, t0.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	newKid, err := Generate(dir, AlgEdDSA, t0)
	if err != nil {
		t.Fatal(err)
	}
	var now atomic.Int64
	now.Store(t0.Add(time.Minute).UnixNano())
	r, err := Load(dir, AlgEdDSA, WithActivationDelay(5*time.Minute), WithClock(func() time.Time { return time.Unix(0, now.Load()) }))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.SigningKeyID(); got != oldKid {
		t.Fatalf("signing kid = %s, want %s", got, oldKid)
	}
	reload := make(chan os.Signal, 1)
	watch(t, r, WatchOptions{Every: time.Hour, Reload: reload})
	now.Store(t0.Add(10 * time.Minute).UnixNano())
	reload <- syscall.SIGHUP
	eventually.Within(t, time.Second, func() error {
		if got := r.SigningKeyID(); got != newKid {
			return fmt.Errorf("signing kid = %s, want %s after the reload", got, newKid)
		}
		return nil
	})
}

func TestActivationDelay(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	oldKid, err := Generate(dir, AlgEdDSA, t0.Add(-30*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	newKid, err := Generate(dir, AlgEdDSA, t0)
	if err != nil {
		t.Fatal(err)
	}
	now := t0.Add(time.Minute)
	r, err := Load(dir, AlgEdDSA, WithActivationDelay(5*time.Minute), WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.SigningKeyID(); got != oldKid {
		t.Fatalf("1 min after creation: signing kid = %s, want the old %s", got, oldKid)
	}
	if ids := r.KeyIDs(); len(ids) != 2 {
		t.Fatalf("published kids = %v, want both (the new key is published before it signs)", ids)
	}
	tok, err := r.Sign([]byte(`{"sub":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyWith(t, r.JWKS(), tok); err != nil {
		t.Fatalf("token from the old key: %v", err)
	}

	now = t0.Add(5 * time.Minute)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := r.SigningKeyID(); got != newKid {
		t.Fatalf("5 min after creation: signing kid = %s, want the new %s", got, newKid)
	}
}

func TestActivationDelayFreshInstall(t *testing.T) {
	// The only key is too young to be active: it signs anyway, or a new
	// installation could not issue tokens for the first minutes.
	dir := t.TempDir()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	kid, err := Generate(dir, AlgEdDSA, t0)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Load(dir, AlgEdDSA, WithActivationDelay(time.Hour), WithClock(func() time.Time { return t0 }))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.SigningKeyID(); got != kid {
		t.Fatalf("signing kid = %s, want %s", got, kid)
	}
}

// TestKidWithoutTimeCountsAsOldest: a key named by hand (no time in its
// kid) sorts after every generated kid ("m" > "2"), but it must not sign
// for ever: it counts as older than every generated key, so the first
// generated key to come of age takes over, as the documented rotation
// expects. It is active at once, so it signs while no generated key is
// active, and among keys named by hand the lexically greatest signs.
func TestKidWithoutTimeCountsAsOldest(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	manual := func(name string) {
		t.Helper()
		kid, err := Generate(dir, AlgEdDSA, t0.Add(-48*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, kid+".pem"), filepath.Join(dir, name+".pem")); err != nil {
			t.Fatal(err)
		}
	}
	manual("manual-a")
	manual("manual-b")
	now := t0
	r, err := Load(dir, AlgEdDSA, WithActivationDelay(time.Hour), WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.SigningKeyID(); got != "manual-b" {
		t.Fatalf("keys named by hand only: signing kid = %s, want the greatest, manual-b", got)
	}
	if got := r.Untimed(); !slices.Equal(got, []string{"manual-a", "manual-b"}) {
		t.Fatalf("Untimed = %v, want [manual-a manual-b]", got)
	}

	gen, err := Generate(dir, AlgEdDSA, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := r.SigningKeyID(); got != "manual-b" {
		t.Fatalf("generated key not active yet: signing kid = %s, want manual-b", got)
	}
	now = t0.Add(time.Hour)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := r.SigningKeyID(); got != gen {
		t.Fatalf("generated key active: signing kid = %s, want %s (a key named by hand must not sign for ever)", got, gen)
	}
	// A restart goes by the same order.
	r, err = Load(dir, AlgEdDSA, WithActivationDelay(time.Hour), WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.SigningKeyID(); got != gen {
		t.Fatalf("after a restart: signing kid = %s, want %s", got, gen)
	}
	// Leaked generated key removed: the hand-named keys sign again at once.
	if err := os.Remove(filepath.Join(dir, gen+".pem")); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := r.SigningKeyID(); got != "manual-b" {
		t.Fatalf("generated key removed: signing kid = %s, want manual-b", got)
	}
}

// TestActivationNoFlipFlop: a fresh install rotated twice within the
// activation delay. With a fake clock stepped every 30 s over the whole
// period, the signing kid is decided by one rule (newest active key, else
// the oldest key) and never moves back to a key it already left.
func TestActivationNoFlipFlop(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const delay = 5 * time.Minute
	a, err := Generate(dir, AlgEdDSA, t0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate(dir, AlgEdDSA, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Generate(dir, AlgEdDSA, t0.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	r, err := Load(dir, AlgEdDSA, WithActivationDelay(delay), WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	want := func(at time.Time) string {
		switch {
		case !at.Before(t0.Add(2*time.Minute + delay)):
			return c
		case !at.Before(t0.Add(time.Minute + delay)):
			return b
		default:
			return a // a until b is active: never b, then a, then b again
		}
	}
	var seen []string
	for step := time.Duration(0); step <= 10*time.Minute; step += 30 * time.Second {
		now = t0.Add(step)
		if err := r.Reload(); err != nil {
			t.Fatal(err)
		}
		got := r.SigningKeyID()
		if got != want(now) {
			t.Errorf("t0+%s: signing kid = %s, want %s", step, got, want(now))
		}
		if len(seen) == 0 || seen[len(seen)-1] != got {
			if slices.Contains(seen, got) {
				t.Errorf("t0+%s: signing kid went back to %s (sequence %v)", step, got, seen)
			}
			seen = append(seen, got)
		}
	}
	if !slices.Equal(seen, []string{a, b, c}) {
		t.Errorf("signing kids over time = %v, want %v", seen, []string{a, b, c})
	}
}

// TestGenerateWritesAtomically: a key file appears under its *.pem name
// only once it is complete (a coreapi watching the directory, or starting,
// must never read half a key: it would refuse the whole directory), and
// nothing else is left behind.
func TestGenerateWritesAtomically(t *testing.T) {
	dir := t.TempDir()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Add(dir); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, alg := range []string{AlgEdDSA, AlgES256, AlgRS256} {
		kid, err := Generate(dir, alg, time.Now())
		if err != nil {
			t.Fatalf("Generate %s: %v", alg, err)
		}
		kids = append(kids, kid)
	}
	created := map[string]bool{}
	for deadline := time.After(200 * time.Millisecond); len(created) < len(kids) || deadline != nil; {
		select {
		case ev := <-w.Events:
			name := filepath.Base(ev.Name)
			if !strings.HasSuffix(name, ".pem") {
				continue
			}
			if !ev.Has(fsnotify.Create) || ev.Has(fsnotify.Write) || created[name] {
				t.Fatalf("event %v on a key file: it must appear once, complete, never be written under its name", ev)
			}
			created[name] = true
		case err := <-w.Errors:
			t.Fatal(err)
		case <-deadline:
			deadline = nil
			if len(created) < len(kids) {
				t.Fatalf("saw %d key files created, want %d", len(created), len(kids))
			}
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	var want []string
	for _, k := range kids {
		want = append(want, k+".pem")
	}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("directory holds %v, want only %v", names, want)
	}
	if _, err := Load(dir, AlgEdDSA); err != nil {
		t.Errorf("Load: %v", err)
	}
}

// TestActivationCountsFromAppearance: a key generated long before it
// reaches the directory of a running coreapi waits the activation delay
// from when that coreapi first finds it, not from its kid's time: signing
// with it at once would hand other pods' proxies, whose Secrets may not
// have it yet, tokens they cannot verify. Without sightings
// (WithSightings), a coreapi starting with the key already there goes by
// the kid's time.
func TestActivationCountsFromAppearance(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const delay = 5 * time.Minute
	old, err := Generate(dir, AlgEdDSA, t0.Add(-48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	r, err := Load(dir, AlgEdDSA, WithActivationDelay(delay), WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	// Generated a day ago, published now.
	late, err := Generate(dir, AlgEdDSA, t0.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		at   time.Duration
		want string
	}{{0, old}, {delay / 2, old}, {delay - time.Second, old}, {delay, late}, {2 * delay, late}} {
		now = t0.Add(step.at)
		if err := r.Reload(); err != nil {
			t.Fatal(err)
		}
		if got := r.SigningKeyID(); got != step.want {
			t.Errorf("%s after the key appeared: signing kid = %s, want %s", step.at, got, step.want)
		}
		if !slices.Contains(r.KeyIDs(), late) {
			t.Errorf("%s after the key appeared: %s not published", step.at, late)
		}
	}
	now = t0
	restarted, err := Load(dir, AlgEdDSA, WithActivationDelay(delay), WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	if got := restarted.SigningKeyID(); got != late {
		t.Errorf("a coreapi starting with the key there: signing kid = %s, want %s", got, late)
	}
}

// TestActivationAfterRestartCountsFromFirstSighting: a key generated long
// before it was published waits the activation delay from when the fleet
// first found it (recorded in the database), also on a coreapi that starts
// or restarts with the key already in its directory. Going by the kid's
// time there, a pod started by the rollout that publishes the key signed
// with it at once, while the other pods' proxies could not have it yet.
func TestActivationAfterRestartCountsFromFirstSighting(t *testing.T) {
	db := dbtest.New(t)
	dir := t.TempDir()
	const delay = 5 * time.Minute
	t0 := time.Now()
	old, err := Generate(dir, AlgEdDSA, t0.Add(-48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	clock := WithClock(func() time.Time { return now })
	load := func() *Ring {
		t.Helper()
		r, err := Load(dir, AlgEdDSA, WithActivationDelay(delay), clock, WithSightings(PGSightings(db.Pool)))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.SightingsErr(); err != nil {
			t.Fatal(err)
		}
		return r
	}
	running := load()
	// Generated a day ago, published now: a running replica finds it in
	// a reload, another one starts with it.
	late, err := Generate(dir, AlgEdDSA, t0.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := running.Reload(); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		at   time.Duration
		want string
	}{{0, old}, {delay / 2, old}, {delay - 5*time.Second, old}, {delay + 5*time.Second, late}} {
		now = t0.Add(step.at)
		if err := running.Reload(); err != nil {
			t.Fatal(err)
		}
		if got := running.SigningKeyID(); got != step.want {
			t.Errorf("%s after the key appeared, running replica: signing kid = %s, want %s", step.at, got, step.want)
		}
		if got := load().SigningKeyID(); got != step.want {
			t.Errorf("%s after the key appeared, replica (re)started then: signing kid = %s, want %s", step.at, got, step.want)
		}
	}
}

// switchedPool is a pool on db whose new connections are refused while
// down is set (a database that does not answer), and reach db otherwise.
func switchedPool(t *testing.T, db *dbtest.DB, down *atomic.Bool) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	closed := refused.Addr(t)
	var d net.Dialer
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if down.Load() {
			addr = closed
		}
		return d.DialContext(ctx, network, addr)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// TestUnknownSightingDoesNotSign: a coreapi starts while the database
// does not answer, with a key generated long before it was published (a
// day) that the running replicas found a moment ago. Going by the kid's
// time, it signed with that key at once, while other pods' proxies may not
// have it yet, and switched back to the older key once the database
// answered with the recent sighting. A key whose first sighting is not
// known does not sign: the older key does until the sighting is known, and
// the signing kid only moves forward. Watch asks again every RetryEvery,
// and SightingsErr (readiness) clears once the database answers.
func TestUnknownSightingDoesNotSign(t *testing.T) {
	db := dbtest.New(t)
	dir := t.TempDir()
	const delay = 5 * time.Minute
	t0 := time.Now()
	old, err := Generate(dir, AlgEdDSA, t0.Add(-48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var at atomic.Int64 // the clock, read by Watch's goroutine too
	at.Store(t0.UnixNano())
	clock := WithClock(func() time.Time { return time.Unix(0, at.Load()) })
	running, err := Load(dir, AlgEdDSA, WithActivationDelay(delay), clock, WithSightings(PGSightings(db.Pool)))
	if err != nil {
		t.Fatal(err)
	}
	late, err := Generate(dir, AlgEdDSA, t0.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := running.Reload(); err != nil {
		t.Fatal(err)
	}

	var down atomic.Bool
	down.Store(true)
	started, err := Load(dir, AlgEdDSA, WithActivationDelay(delay), clock, WithSightings(PGSightings(switchedPool(t, db, &down))))
	if err != nil {
		t.Fatal(err)
	}
	if started.SightingsErr() == nil {
		t.Fatal("SightingsErr = nil with the database refusing connections")
	}
	if got := started.SigningKeyID(); got != old {
		t.Fatalf("started without the database: signing kid = %s, want %s (the key found a moment ago by the others must not sign before the delay)", got, old)
	}
	if !slices.Contains(started.KeyIDs(), late) {
		t.Fatalf("%s not published", late)
	}
	// Past the delay by the kid's time, as long as the database is down.
	at.Store(t0.Add(2 * time.Minute).UnixNano())
	if err := started.Reload(); err == nil {
		t.Fatal("Reload = nil with the database refusing connections")
	}
	if got := started.SigningKeyID(); got != old {
		t.Fatalf("database still down: signing kid = %s, want %s", got, old)
	}

	watch(t, started, WatchOptions{Every: time.Hour, RetryEvery: 10 * time.Millisecond})
	down.Store(false)
	eventually.Within(t, 10*time.Second, func() error { return started.SightingsErr() })
	if got := started.SigningKeyID(); got != old {
		t.Fatalf("sightings known, within the delay of the others' find: signing kid = %s, want %s", got, old)
	}
	at.Store(t0.Add(delay + 5*time.Second).UnixNano())
	if err := started.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := started.SigningKeyID(); got != late {
		t.Fatalf("past the delay of the others' find: signing kid = %s, want %s", got, late)
	}
}

// TestWatchReloadAfterEventsOverflow: when the kernel's queue of file
// events overflows, the events dropped may have been a key file's change,
// and no other comes until the next one. The watch reads the directory
// again on the overflow (not at the next poll, an hour away here) and
// announces the change; it logs the overflow. Here the watcher's events
// never reach it (all dropped) and the overflow is injected.
func TestWatchReloadAfterEventsOverflow(t *testing.T) {
	dir := t.TempDir()
	oldKid, err := Generate(dir, AlgEdDSA, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Load(dir, AlgEdDSA)
	if err != nil {
		t.Fatal(err)
	}
	overflow := make(chan error)
	announced := make(chan []string, 16)
	logs := watch(t, r, WatchOptions{Every: time.Hour,
		Changed: func(_ context.Context, kids []string) error {
			announced <- kids
			return nil
		},
		watchEvents: func(<-chan fsnotify.Event, <-chan error) (<-chan fsnotify.Event, <-chan error) {
			return nil, overflow
		},
	})
	newKid, err := Generate(dir, AlgEdDSA, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	overflow <- fsnotify.ErrEventOverflow
	select {
	case got := <-announced:
		if want := oldKid + "," + newKid; strings.Join(got, ",") != want {
			t.Fatalf("announced %v, want %s", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the new key was not loaded after the overflow; log: %s", logs.String())
	}
	if got := r.SigningKeyID(); got != newKid {
		t.Fatalf("signing kid = %s, want %s", got, newKid)
	}
	if !strings.Contains(logs.String(), "watch signing keys: events were lost; reading the directory again") {
		t.Errorf("the overflow is not logged: %s", logs.String())
	}
	// An overflow with the directory unchanged announces nothing.
	overflow <- fsnotify.ErrEventOverflow
	select {
	case got := <-announced:
		t.Fatalf("announced %v after an overflow with the directory unchanged", got)
	case <-time.After(20 * settle):
	}
}
