package password

import (
	"context"
	"testing"
)

// TestCheckCostTellsNoParameters: the argon2 work a wrong password costs
// (Work: memory × passes of every run) is the same for an unknown address
// (the dummy hash), an account whose hash has the parameters in use and
// one whose hash was made with older ones, once the Hasher knows which
// parameters the stored hashes have (SetStored). The dummy hash had the
// current parameters only, so a check against an older hash took another
// time than one of an unknown address: timing sign-ins told which
// addresses had an account, and one that had not signed in since the
// parameters changed.
func TestCheckCostTellsNoParameters(t *testing.T) {
	ctx := context.Background()
	older := Params{Memory: 32, Time: 3, Threads: 1, SaltLen: 16, KeyLen: 32}
	oldHash, err := New(older, 1).Hash(ctx, "old password 1")
	if err != nil {
		t.Fatal(err)
	}
	h := New(cheap, 1)
	curHash, err := h.Hash(ctx, "new password 1")
	if err != nil {
		t.Fatal(err)
	}
	if n := h.SetStored([]Params{older, cheap}); n != 2 {
		t.Fatalf("SetStored = %d sets, want 2 (h's own counted once)", n)
	}
	cost := func(pw, enc string) int64 {
		t.Helper()
		before := h.Work()
		if _, err := h.Verify(ctx, pw, enc); err != nil && enc != "garbage" {
			t.Fatal(err)
		}
		return h.Work() - before
	}
	for _, pw := range []string{"wrong password", "cafe\u0301 wrong"} { // NFKC keeps it, changes it
		unknown := cost(pw, "")
		for what, enc := range map[string]string{"older hash": oldHash, "current hash": curHash, "invalid hash": "garbage"} {
			if got := cost(pw, enc); got != unknown {
				t.Errorf("%q against an %s: work %d, against no hash %d", pw, what, got, unknown)
			}
		}
	}
	if m, err := h.Verify(ctx, "old password 1", oldHash); err != nil || !m.OK() || !h.NeedsRehash(oldHash) {
		t.Errorf("older hash, right password: %v, %v; want a match to rehash", m, err)
	}
	if m, err := h.Verify(ctx, "new password 1", curHash); err != nil || !m.OK() {
		t.Errorf("current hash, right password: %v, %v", m, err)
	}
}

// TestParamsOf reads the parameters of a stored hash back, as SetStored
// takes them.
func TestParamsOf(t *testing.T) {
	enc, err := New(cheap, 1).Hash(context.Background(), "pw pw pw pw")
	if err != nil {
		t.Fatal(err)
	}
	if p, err := ParamsOf(enc); err != nil || p != cheap {
		t.Errorf("ParamsOf = %+v, %v; want %+v", p, err, cheap)
	}
	if _, err := ParamsOf("garbage"); err == nil {
		t.Error("ParamsOf(garbage): no error")
	}
}
