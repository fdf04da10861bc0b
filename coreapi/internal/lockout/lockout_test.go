package lockout

import (
	"bytes"
	"context"
	"strconv"
	"testing"

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
