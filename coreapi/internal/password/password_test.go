package password

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
)

// cheap keeps unit tests fast; the format and logic do not depend on cost.
var cheap = Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

func TestHashVerify(t *testing.T) {
	ctx := context.Background()
	h := New(cheap, 2)
	enc, err := h.Hash(ctx, "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Errorf("hash = %q, want PHC argon2id with the parameters", enc)
	}
	enc2, _ := h.Hash(ctx, "correct horse battery")
	if enc == enc2 {
		t.Error("two hashes of one password are equal: salt not random")
	}
	tests := []struct {
		pw   string
		want bool
	}{
		{"correct horse battery", true},
		{"correct horse batter", false},
		{"", false},
		{"Correct horse battery", false},
	}
	for _, tt := range tests {
		m, err := h.Verify(ctx, tt.pw, enc)
		if got := m.OK(); err != nil || got != tt.want {
			t.Errorf("Verify(%q) = %v, %v; want %v", tt.pw, got, err, tt.want)
		}
	}
}

func TestOWASPFormat(t *testing.T) {
	h := New(OWASP(), 1)
	enc, err := h.Hash(context.Background(), "password123")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("hash = %q, want OWASP parameters m=19456,t=2,p=1", enc)
	}
	if h.NeedsRehash(enc) {
		t.Error("NeedsRehash of a fresh hash = true")
	}
	if !New(cheap, 1).NeedsRehash(enc) {
		t.Error("NeedsRehash with other parameters = false")
	}
}

func TestDummyNeverMatches(t *testing.T) {
	h := New(cheap, 1)
	for _, pw := range []string{"", "x", "password"} {
		m, err := h.Verify(context.Background(), pw, "")
		if err != nil || m != NoMatch {
			t.Errorf("Verify(%q, no hash) = %v, %v; want NoMatch, nil", pw, m, err)
		}
	}
}

func TestTooLongRejectedBeforeHashing(t *testing.T) {
	// Huge parameters: if the 1 MB password were hashed the test would
	// allocate 1 GiB and take seconds; the length check must come first.
	h := New(Params{Memory: 1 << 20, Time: 50, Threads: 1, SaltLen: 16, KeyLen: 32}, 1)
	pw := strings.Repeat("a", 1<<20)
	if _, err := h.Hash(context.Background(), pw); !errors.Is(err, ErrTooLong) {
		t.Errorf("Hash(1 MB) error = %v, want ErrTooLong", err)
	}
	if _, err := h.Verify(context.Background(), pw, "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5"); !errors.Is(err, ErrTooLong) {
		t.Errorf("Verify(1 MB) error = %v, want ErrTooLong", err)
	}
	if err := CheckNew(pw); !errors.Is(err, ErrTooLong) {
		t.Errorf("CheckNew(1 MB) = %v, want ErrTooLong", err)
	}
}

func TestCheckNew(t *testing.T) {
	tests := []struct {
		pw   string
		want error
	}{
		{"short", ErrTooShort},
		{"ééééééé", ErrTooShort}, // 7 characters, 14 bytes
		{"eightchr", nil},
		{"        ", ErrBlank},      // eight spaces
		{" \t\n\r\v\f  ", ErrBlank}, // ASCII white space
		{"\u00a0\u2003\u3000\u2028\u0085\u1680\u202f\u205f", ErrBlank}, // no-break, em, ideographic, line separator, NEL, ogham, narrow and math spaces
		{strings.Repeat(" ", MaxBytes), ErrBlank},
		{"   eightchr   ", nil}, // not trimmed: the spaces are part of it
		{"        x", nil},
		{strings.Repeat("a", MaxBytes), nil},
		{strings.Repeat("a", MaxBytes+1), ErrTooLong},
	}
	for _, tt := range tests {
		if got := CheckNew(tt.pw); !errors.Is(got, tt.want) {
			t.Errorf("CheckNew(%d bytes) = %v, want %v", len(tt.pw), got, tt.want)
		}
	}
}

func TestInvalidHash(t *testing.T) {
	h := New(cheap, 1)
	for _, enc := range []string{
		"plain",
		"$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=64,t=1,p=0$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=64,t=1,x=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=64,t=1,p=1$!!$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5",
	} {
		if _, err := h.Verify(context.Background(), "pw", enc); !errors.Is(err, ErrInvalidHash) {
			t.Errorf("Verify(%q) error = %v, want ErrInvalidHash", enc, err)
		}
	}
}

func TestContextCancelledWhileWaiting(t *testing.T) {
	h := New(cheap, 1)
	h.sem <- struct{}{} // occupy the only slot
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Hash(ctx, "password123"); !errors.Is(err, context.Canceled) {
		t.Errorf("Hash with a cancelled context and no free slot = %v, want context.Canceled", err)
	}
}

// TestWaitingBounded: with every slot busy, at most MaxWaitingPerSlot
// checks a slot wait; one more is refused with ErrBusy at once rather
// than held (with its request) until its deadline. The waiters were
// bounded only by the connections open, which grow with every proxy that
// forwards sign-ins to the replica.
func TestWaitingBounded(t *testing.T) {
	h := New(cheap, 2)
	enc, err := h.Hash(context.Background(), "password123")
	if err != nil {
		t.Fatal(err)
	}
	h.sem <- struct{}{} // occupy both slots
	h.sem <- struct{}{}
	waiting, cancel := context.WithCancel(context.Background())
	defer cancel()
	want := 2 * MaxWaitingPerSlot
	done := make(chan error, want)
	for range want {
		go func() { _, err := h.Verify(waiting, "password123", enc); done <- err }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.waiting.Load() < int64(want) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d checks waiting after 10s", h.waiting.Load(), want)
		}
		runtime.Gosched()
	}
	ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	if _, err := h.Verify(ctx, "password123", enc); !errors.Is(err, ErrBusy) {
		t.Fatalf("Verify with every slot busy and %d checks waiting = %v, want ErrBusy at once", want, err)
	}
	if _, err := h.Hash(context.Background(), "password123"); !errors.Is(err, ErrBusy) {
		t.Errorf("Hash with the waiting room full = %v, want ErrBusy", err)
	}
	// The waiters were held, not refused: they check once slots free.
	<-h.sem
	<-h.sem
	for range want {
		if err := <-done; err != nil {
			t.Errorf("a waiting Verify = %v, want its answer once a slot freed", err)
		}
	}
	// And the room is free again.
	if m, err := h.Verify(context.Background(), "password123", enc); err != nil || !m.OK() {
		t.Errorf("Verify after the waiters = %v, %v; want a match", m, err)
	}
}

// TestAdmitBounded: at most the slots and their waiting room of checks
// are admitted at once; one more is refused with ErrBusy, and a place
// given back admits another.
func TestAdmitBounded(t *testing.T) {
	h := New(cheap, 2)
	want := 2 * (1 + MaxWaitingPerSlot)
	var done []func()
	for i := range want {
		d, err := h.Admit()
		if err != nil {
			t.Fatalf("Admit %d of %d = %v, want a place", i+1, want, err)
		}
		done = append(done, d)
	}
	if _, err := h.Admit(); !errors.Is(err, ErrBusy) {
		t.Fatalf("Admit with %d admitted = %v, want ErrBusy", want, err)
	}
	done[0]()
	d, err := h.Admit()
	if err != nil {
		t.Fatalf("Admit after a place was given back = %v, want a place", err)
	}
	d()
	for _, d := range done[1:] {
		d()
	}
}

// BenchmarkVerifyOWASP is the cost of one password login's hash check.
func BenchmarkVerifyOWASP(b *testing.B) {
	ctx := context.Background()
	h := New(OWASP(), 1)
	enc, err := h.Hash(ctx, "correct horse battery staple")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if m, err := h.Verify(ctx, "correct horse battery staple", enc); !m.OK() || err != nil {
			b.Fatal(m, err)
		}
	}
}

// FuzzDecode: stored hashes of any shape never panic, and accepted ones
// have parameters within bounds.
func FuzzDecode(f *testing.F) {
	enc, _ := New(cheap, 1).Hash(context.Background(), "password123")
	for _, s := range []string{enc, "", "$", "$argon2id$v=19$m=1,t=1,p=1$$", "$argon2id$v=19$m=4294967295,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, salt, key, err := decode(s)
		if err != nil {
			return
		}
		if p.Memory == 0 || p.Memory > maxMemory || p.Time == 0 || p.Time > maxTime || p.Threads == 0 || len(salt) < 8 || len(key) < 16 {
			t.Errorf("decode(%q) accepted out-of-range parameters %+v", s, p)
		}
	})
}

func TestCheckNewRefusesCommonPasswords(t *testing.T) {
	for _, pw := range []string{"password123", "PASSWORD123", "Qwertyuiop", "iloveyou1", "12345678", "P@ssw0rd"} {
		if err := CheckNew(pw); !errors.Is(err, ErrCommon) {
			t.Errorf("CheckNew(%q) = %v, want ErrCommon", pw, err)
		}
	}
	for _, pw := range []string{"correct horse battery", "a long password", strings.Repeat("é", 8), strings.Repeat("x", 64), strings.Repeat("y", MaxBytes)} {
		if err := CheckNew(pw); err != nil {
			t.Errorf("CheckNew(%.20q) = %v, want accepted", pw, err)
		}
	}
	if !strings.Contains(ErrCommon.Error(), "common") {
		t.Errorf("the error does not say why: %v", ErrCommon)
	}
	if len(common) < 100 {
		t.Errorf("only %d common passwords loaded", len(common))
	}
	for pw := range common {
		if strings.HasPrefix(pw, "#") || pw != strings.ToLower(pw) {
			t.Errorf("bad entry %q", pw)
		}
	}
}

// One password typed as precomposed or decomposed letters, or in the
// full-width forms of an input method, is one password (NFKC, NIST SP
// 800-63B); a hash stored from the password as typed before keeps
// verifying it as typed.
func TestUnicodeForms(t *testing.T) {
	ctx := context.Background()
	h := New(cheap, 2)
	for _, tt := range []struct{ set, typed string }{
		{"caf\u00e9 au lait 42", "cafe\u0301 au lait 42"},
		{"cafe\u0301 au lait 42", "caf\u00e9 au lait 42"},
		{"Ｐａｓｓ　ｗｏｒｄ　４２", "Pass word 42"},
		{"\u212bngstr\u00f6m sign", "\u00c5ngstro\u0308m sign"},
	} {
		enc, err := h.Hash(ctx, tt.set)
		if err != nil {
			t.Fatal(err)
		}
		if m, err := h.Verify(ctx, tt.typed, enc); m != MatchNFKC || err != nil {
			t.Errorf("set %q, typed %q: Verify = %v, %v, want MatchNFKC", tt.set, tt.typed, m, err)
		}
		if m, _ := h.Verify(ctx, tt.typed+"x", enc); m.OK() {
			t.Errorf("set %q, typed %q: another password verifies", tt.set, tt.typed+"x")
		}
	}
	// A hash of the password as typed, from before passwords were
	// normalized.
	typed := "cafe\u0301 au lait 42"
	salt := []byte("0123456789abcdef")
	old := encode(cheap, salt, argon2.IDKey([]byte(typed), salt, cheap.Time, cheap.Memory, cheap.Threads, cheap.KeyLen))
	if m, err := h.Verify(ctx, typed, old); m != MatchAsTyped || err != nil {
		t.Errorf("hash stored before normalization: Verify = %v, %v, want MatchAsTyped", m, err)
	}
	// Only as typed: the NFKC form of it, or another form, is another
	// password until the hash is replaced.
	if m, _ := h.Verify(ctx, "caf\u00e9 au lait 42", old); m.OK() {
		t.Errorf("hash stored before normalization: the NFKC form verifies (%v)", m)
	}
	// A password NFKC leaves as it is is tried once, and matches as NFKC.
	plain, _ := h.Hash(ctx, "plain ascii 42")
	if m, err := h.Verify(ctx, "plain ascii 42", plain); m != MatchNFKC || err != nil {
		t.Errorf("ASCII password: Verify = %v, %v, want MatchNFKC", m, err)
	}
	// Derivations counts the argon2 runs: two for every check of a
	// password NFKC changes, whatever the hash's form and whether there is
	// a hash at all (a hash known to be of the NFKC form then does not
	// match the form as typed), so the cost tells nothing of the account;
	// one for a password NFKC leaves as it is.
	nfkcSame, _ := h.Hash(ctx, "caf\u00e9 au lait 42")
	for _, tc := range []struct {
		name    string
		pw      string
		enc     string
		form    Form
		want    Match
		derived int64
	}{
		{"unknown form, as typed", typed, old, FormUnknown, MatchAsTyped, 2},
		{"NFKC form, as typed", typed, old, FormNFKC, NoMatch, 2},
		{"NFKC form, NFKC hash, as typed", typed, nfkcSame, FormNFKC, MatchNFKC, 2},
		{"dummy, NFKC form", typed, "", FormNFKC, NoMatch, 2},
		{"dummy, unknown form", typed, "", FormUnknown, NoMatch, 2},
		{"unknown form, NFKC password", "caf\u00e9 au lait 42", old, FormUnknown, NoMatch, 1},
		{"NFKC form, NFKC password", "caf\u00e9 au lait 42", nfkcSame, FormNFKC, MatchNFKC, 1},
		{"dummy, NFKC password", "caf\u00e9 au lait 42", "", FormNFKC, NoMatch, 1},
	} {
		before := h.Derivations()
		if m, err := h.VerifyForm(ctx, tc.pw, tc.enc, tc.form); m != tc.want || err != nil {
			t.Errorf("%s: VerifyForm = %v, %v, want %v", tc.name, m, err, tc.want)
		}
		if n := h.Derivations() - before; n != tc.derived {
			t.Errorf("%s: %d argon2 runs, want %d", tc.name, n, tc.derived)
		}
	}
	// Full-width forms of a common password are that password.
	if err := CheckNew("ｐａｓｓｗｏｒｄ"); !errors.Is(err, ErrCommon) {
		t.Errorf("CheckNew(full-width password) = %v, want ErrCommon", err)
	}
}
