package lockout

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/migrations"
)

// lockKey makes Default().AccountThreshold failures for key, one each from
// as many IPv4 clients of 198.51.100.0/24: the key is then locked, and no
// client of 2001:db8::/32 has failed for it.
func lockKey(t *testing.T, s *Store, key []byte) {
	t.Helper()
	for i := range s.Policy().AccountThreshold {
		reserveN(t, s, key, fmt.Sprintf("198.51.100.%d", i+1), 1)
	}
}

// slash64s are n clients, each a /64 of its own, of the /48 2001:db8:<net>::/48.
func slash64s(net string, n int) []string {
	ips := make([]string, n)
	for i := range ips {
		ips[i] = fmt.Sprintf("2001:db8:%s:%x::1", net, i+1)
	}
	return ips
}

// evaluated reserves one guess for key from each of ips and returns how
// many were let through.
func evaluated(t *testing.T, s *Store, key []byte, ips []string) int {
	t.Helper()
	n := 0
	for _, ip := range ips {
		wait, err := s.Reserve(context.Background(), key, ip)
		if err != nil {
			t.Fatal(err)
		}
		if wait == 0 {
			n++
		}
	}
	return n
}

// TestWiderNetworkWaitsWhileTheKeyIsLocked: while the key is locked, a
// client that never failed for it gets a guess (the owner elsewhere must
// not be locked out), but an IPv6 client is its /64, and one /48 holds
// 65,536 of them: each was a client that never failed, so one /48 got a
// guess per /64 while the key was locked. The /64s of one /48 now wait
// once any of them failed for the key within the window; a client of
// another /48 still gets its guess, and IPv4 clients are counted as
// before, each address on its own (a /24 is often many customers behind
// a carrier's NAT).
func TestWiderNetworkWaitsWhileTheKeyIsLocked(t *testing.T) {
	ctx := context.Background()
	s := New(dbtest.New(t).Pool, Default())
	key := EmailKey("many-networks@example.com")
	lockKey(t, s, key)
	if got := evaluated(t, s, key, slash64s("aa", 50)); got > 1 {
		t.Fatalf("50 /64s of one /48 with the key locked: %d guesses evaluated, want at most 1", got)
	}
	if wait, err := s.Reserve(ctx, key, "2001:db8:bb:1::1"); err != nil || wait != 0 {
		t.Fatalf("a client of another /48 that never failed: wait %d, %v; want a guess", wait, err)
	}
	if got := evaluated(t, s, key, []string{"198.51.100.200", "198.51.100.201", "198.51.100.202"}); got != 3 {
		t.Fatalf("3 fresh IPv4 clients of the /24 that failed: %d guesses evaluated, want 3 (IPv4 counts each address)", got)
	}
	// A client that failed is still held by the key's lock, as before.
	if wait, err := s.Reserve(ctx, key, "198.51.100.1"); err != nil || wait == 0 {
		t.Fatalf("an IPv4 client that failed, the key locked: wait %d, %v; want locked", wait, err)
	}
}

// TestWiderNetworkClearedBySuccess: the network's row is never locked on
// its own and a correct password from one of its clients clears it, as it
// clears the client's: the owner who mistyped on one device of their home
// /48 and then signed in on another is not held back by that typo when
// someone elsewhere locks the key. A refunded attempt (no guess after all)
// is given back by the network as well.
func TestWiderNetworkClearedBySuccess(t *testing.T) {
	ctx := context.Background()
	pool := dbtest.New(t).Pool
	s := New(pool, Default())
	for name, undo := range map[string]func(key []byte, ip string) error{
		"release": func(key []byte, ip string) error { return s.Release(ctx, key, ip) },
		"refund":  func(key []byte, ip string) error { return s.Refund(ctx, key, ip) },
	} {
		t.Run(name, func(t *testing.T) {
			key := EmailKey(name + "-network@example.com")
			lockKey(t, s, key)
			ips := slash64s("cc", 3)
			reserveN(t, s, key, ips[0], 1)
			if wait, err := s.Reserve(ctx, key, ips[1]); err != nil || wait == 0 {
				t.Fatalf("a /64 of a /48 that failed, the key locked: wait %d, %v; want locked", wait, err)
			}
			if err := undo(key, ips[0]); err != nil {
				t.Fatal(err)
			}
			if wait, err := s.Reserve(ctx, key, ips[2]); err != nil || wait != 0 {
				t.Fatalf("after the %s of the /48's only attempt: wait %d, %v; want a guess", name, wait, err)
			}
			var locked int
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM login_attempts WHERE email_hash = $1 AND client_ip = '2001:db8:cc::/48' AND locked_until IS NOT NULL`, key).Scan(&locked); err != nil {
				t.Fatal(err)
			}
			if locked != 0 {
				t.Fatal("the /48's row has a lock of its own")
			}
		})
	}
}

// TestSweepTakesNetworkRows: an IPv6 attempt keeps three rows (the key's,
// the /64's and the /48's), and the sweep deletes each once its window
// has passed.
func TestSweepTakesNetworkRows(t *testing.T) {
	ctx := context.Background()
	pool := dbtest.New(t).Pool
	s := New(pool, Default())
	key := EmailKey("swept-network@example.com")
	reserveN(t, s, key, "2001:db8:dd:1::1", 1)
	rows := func() (clients []string) {
		t.Helper()
		r, err := pool.Query(ctx, `SELECT client_ip FROM login_attempts WHERE email_hash = $1 ORDER BY client_ip COLLATE "C"`, key)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for r.Next() {
			var c string
			if err := r.Scan(&c); err != nil {
				t.Fatal(err)
			}
			clients = append(clients, c)
		}
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		return clients
	}
	if got := fmt.Sprint(rows()); got != "[ 2001:db8:dd:1::/64 2001:db8:dd::/48]" {
		t.Fatalf("rows after an IPv6 attempt: %s, want the key's, the /64's and the /48's", got)
	}
	if _, err := pool.Exec(ctx, `UPDATE login_attempts SET last_attempt = now() - interval '1 hour' WHERE email_hash = $1`, key); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rows(); len(got) != 0 {
		t.Fatalf("rows left by the sweep: %q, want none", got)
	}
}

// TestMigration00069: up, login_reserve takes the client's wider network
// and still answers the previous release's eight arguments (its pods
// serve during the rollout) as before, without a network; down, the
// function of 00045 alone is left, which lets every /64 of a /48 guess.
func TestMigration00069(t *testing.T) {
	ctx := context.Background()
	db := dbtest.New(t)
	s := New(db.Pool, Default())
	l := Default()
	old := func(key []byte, ip string) int {
		t.Helper()
		var wait int
		if err := db.Pool.QueryRow(ctx, `SELECT login_reserve($1, $2, $3, $4, $5, $6, $7, $8)`, key, clientKey(ip), l.Window.Seconds(),
			l.Threshold, l.Base.Seconds(), l.Max.Seconds(), l.AccountThreshold, l.AccountMax.Seconds()).Scan(&wait); err != nil {
			t.Fatalf("login_reserve with the previous release's arguments: %v", err)
		}
		return wait
	}
	overloads := func() int {
		t.Helper()
		var n int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_proc WHERE proname = 'login_reserve'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Up: the previous release's call counts as it did, with no network row.
	key := EmailKey("rollout@example.com")
	lockKey(t, s, key)
	n := 0
	for _, ip := range slash64s("ee", 5) {
		if old(key, ip) == 0 {
			n++
		}
	}
	if n != 5 || overloads() != 2 {
		t.Fatalf("up, the previous release's call: %d of 5 /64s evaluated, %d functions; want 5 and 2", n, overloads())
	}

	sqlDB := stdlib.OpenDBFromPool(db.Pool)
	defer sqlDB.Close()
	p, err := migrations.NewProvider(sqlDB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(ctx, 68); err != nil {
		t.Fatal(err)
	}
	if overloads() != 1 {
		t.Fatalf("down: %d functions login_reserve, want 00045's alone", overloads())
	}
	key = EmailKey("down@example.com")
	for i := range l.AccountThreshold { // the Store's own call has no function to call
		if wait := old(key, fmt.Sprintf("198.51.100.%d", i+1)); wait != 0 {
			t.Fatalf("down, guess %d to lock the key: wait %d", i+1, wait)
		}
	}
	n = 0
	for _, ip := range slash64s("ef", 5) {
		if old(key, ip) == 0 {
			n++
		}
	}
	if n != 5 {
		t.Fatalf("down: %d of 5 /64s evaluated, want 5 (00045 keys a client by its /64 only)", n)
	}

	if _, err := p.UpTo(ctx, 69); err != nil {
		t.Fatal(err)
	}
	key = EmailKey("up-again@example.com")
	lockKey(t, s, key)
	if got := evaluated(t, s, key, slash64s("f0", 5)); got > 1 {
		t.Fatalf("up again: %d of 5 /64s of one /48 evaluated, want at most 1", got)
	}
}
