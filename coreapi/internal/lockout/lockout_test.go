package lockout

import (
	"bytes"
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
)

// TestEmailKeySpellings: every spelling of one address (letter case,
// surrounding space, precomposed or decomposed letters) counts against one
// key, and another address against another.
func TestEmailKeySpellings(t *testing.T) {
	want := EmailKey("jos\u00e9@example.com")
	for _, s := range []string{"Jos\u00e9@Example.com", " jose\u0301@example.com\t", "JOSE\u0301@EXAMPLE.COM"} {
		if !bytes.Equal(EmailKey(s), want) {
			t.Errorf("EmailKey(%+q) differs from EmailKey(%+q)", s, "jos\u00e9@example.com")
		}
	}
	if bytes.Equal(EmailKey("jose@example.com"), want) {
		t.Error("EmailKey confuses jose@ with jos\u00e9@")
	}
}

// TestReservePerIPv6Prefix: the addresses of one IPv6 /64 are one client:
// a host that is given a /64 cannot take Threshold guesses from each of
// its 2^64 addresses.
func TestReservePerIPv6Prefix(t *testing.T) {
	ctx := context.Background()
	s := New(dbtest.New(t).Pool, Default)
	key := EmailKey("six@example.com")
	for i := range Default.Threshold {
		if wait, err := s.Reserve(ctx, key, "2001:db8:1:2::"+strconv.Itoa(i+1)); err != nil || wait != 0 {
			t.Fatalf("guess %d: wait %d, %v", i+1, wait, err)
		}
	}
	if wait, err := s.Reserve(ctx, key, "2001:db8:1:2:ffff::9"); err != nil || wait == 0 {
		t.Fatalf("another address of the /64 after %d guesses: wait %d, %v; want locked", Default.Threshold, wait, err)
	}
	if wait, err := s.Reserve(ctx, key, "2001:db8:1:3::1"); err != nil || wait != 0 {
		t.Fatalf("another /64: wait %d, %v; want a guess", wait, err)
	}
}

// TestSuccessesDoNotCountForTheKey: the key's own count (every client
// together) holds failures only. A correct guess gives back the attempt it
// reserved there as well as clearing its client's count: an owner who
// signs in often (or gives a code every day, in the codes' day-long
// window) used to reach AccountThreshold with right answers alone, and was
// then locked for up to AccountMax after a single typo.
func TestSuccessesDoNotCountForTheKey(t *testing.T) {
	ctx := context.Background()
	pool := dbtest.New(t).Pool
	codes := Default
	codes.Window = 24 * time.Hour
	for name, p := range map[string]Policy{"passwords": Default, "codes": codes} {
		t.Run(name, func(t *testing.T) {
			s := New(pool, p)
			key := EmailKey(name + "@example.com")
			const ip = "192.0.2.1"
			for i := range 2 * p.AccountThreshold {
				if wait, err := s.Reserve(ctx, key, ip); err != nil || wait != 0 {
					t.Fatalf("correct guess %d: wait %d, %v", i+1, wait, err)
				}
				if err := s.Release(ctx, key, ip); err != nil {
					t.Fatal(err)
				}
			}
			if wait, err := s.Reserve(ctx, key, ip); err != nil || wait != 0 { // a typo
				t.Fatalf("first wrong guess: wait %d, %v", wait, err)
			}
			if wait, err := s.Reserve(ctx, key, ip); err != nil || wait != 0 {
				t.Fatalf("the guess after one failure: locked for %d s (%v), want none", wait, err)
			}
		})
	}
}
